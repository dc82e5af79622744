"""Streaming readers for catalog files: CSV, Parquet, FITS binary tables and VOTable.

Each input is cut into chunks (Parquet row groups, FITS row ranges, whole CSV / VOTable files)
that are read in bounded batches, so memory does not grow with the input. Every error names
the file it came from.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from survey_engine.errors import SurveyEngineError

BATCH_ROWS = 262_144
CHUNK_ROWS = 1_000_000

FORMATS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".fits": "fits",
    ".fit": "fits",
    ".fits.gz": "fits",
    ".vot": "votable",
    ".xml": "votable",
    ".votable": "votable",
}


class InputError(SurveyEngineError, ValueError):
    """Bad input: the message names the file (and column or row) at fault."""


class EmptyInputError(InputError):
    """A file without a single row (zero bytes, a header only, a zero-row table)."""


class CsvTypeError(InputError):
    """A CSV value that does not fit the type inferred from the file's first block: the
    import widens ``column`` past ``failed_type`` and reads the file again."""

    def __init__(self, message: str, column: str, failed_type: str):
        super().__init__(message)
        self.column, self.failed_type = column, failed_type


# Wider types to try, in order, for a CSV column whose inferred type meets a value it cannot hold.
CSV_WIDENING = {"null": "int64", "bool": "string", "int64": "double", "double": "string"}


@dataclass(frozen=True)
class InputChunk:
    """A piece of one input file that one task reads: rows [start, stop) or the whole file."""

    path: str
    fmt: str
    start: int | None = None
    stop: int | None = None

    def describe(self) -> str:
        return self.path if self.start is None else f"{self.path} [rows {self.start}:{self.stop}]"


def detect_format(path: str) -> str:
    name = path.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise InputError(
        f"{path}: cannot tell the file format from its name (known: {', '.join(sorted(set(FORMATS.values())))})"
    )


def expand_inputs(inputs: list[str]) -> list[str]:
    """Expand globs and directories into a sorted list of files; error on what matches nothing."""
    files: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))
            found = [f for f in found if _known(f)]
        elif any(ch in item for ch in "*?["):
            found = sorted(f for f in glob.glob(item, recursive=True) if Path(f).is_file())
        else:
            if not p.exists():
                raise InputError(f"{item}: no such file")
            found = [str(p)]
        if not found:
            raise InputError(f"{item}: matches no input files")
        files.extend(found)
    return list(dict.fromkeys(files))


def _known(path: str) -> bool:
    try:
        detect_format(path)
        return True
    except InputError:
        return False


def plan_chunks(files: list[str], chunk_rows: int = CHUNK_ROWS) -> list[InputChunk]:
    """Cut files into chunks of about ``chunk_rows`` rows where the format allows random access."""
    chunks: list[InputChunk] = []
    for path in files:
        fmt = detect_format(path)
        try:
            if fmt == "parquet":
                md = pq.ParquetFile(path).metadata
                start, rows = 0, 0
                for i in range(md.num_row_groups):
                    rows += md.row_group(i).num_rows
                    if rows >= chunk_rows or i == md.num_row_groups - 1:
                        chunks.append(InputChunk(path, fmt, start, i + 1))
                        start, rows = i + 1, 0
                if md.num_row_groups == 0:
                    chunks.append(InputChunk(path, fmt, 0, 0))
            elif fmt == "fits":
                nrows = _fits_nrows(path)
                for start in range(0, max(nrows, 1), chunk_rows):
                    chunks.append(InputChunk(path, fmt, start, min(start + chunk_rows, nrows)))
            else:
                chunks.append(InputChunk(path, fmt))
        except InputError:
            raise
        except Exception as exc:  # unreadable or truncated files
            raise InputError(f"{path}: cannot read {fmt} file: {exc}") from exc
    return chunks


def _fits_nrows(path: str) -> int:
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        hdu = fits_table_hdu(hdul, path)
        return int(hdu.header["NAXIS2"])


def fits_table_hdu(hdul, path: str):
    from astropy.io import fits

    for hdu in hdul:
        if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
            return hdu
    raise InputError(f"{path}: no binary table HDU in this FITS file")


def read_batches(
    chunk: InputChunk,
    columns: list[str] | None = None,
    batch_rows: int = BATCH_ROWS,
    column_types: dict[str, pa.DataType] | None = None,
) -> Iterator[pa.Table]:
    """Yield Arrow tables of at most ``batch_rows`` rows from one chunk (``columns`` to project).

    ``column_types`` fixes the types of CSV columns (other formats declare their own): the
    types an earlier pass found for the whole file, where Arrow infers from the first block."""
    checked = False
    for table in _read_batches(chunk, columns, batch_rows, column_types):
        if not checked:
            repeated = sorted({n for n in table.column_names if table.column_names.count(n) > 1})
            if repeated:
                raise InputError(
                    f"{chunk.path}: column name(s) {repeated} appear more than once; a column must be unique to be read"
                )
            checked = True
        yield table


def _read_batches(chunk: InputChunk, columns, batch_rows, column_types) -> Iterator[pa.Table]:
    try:
        if chunk.fmt == "parquet":
            yield from _parquet_batches(chunk, columns, batch_rows)
        elif chunk.fmt == "csv":
            yield from _csv_batches(chunk, columns, batch_rows, column_types)
        elif chunk.fmt == "fits":
            yield from _fits_batches(chunk, columns, batch_rows)
        elif chunk.fmt == "votable":
            yield from _votable_batches(chunk, columns, batch_rows)
        else:
            raise InputError(f"{chunk.path}: unknown format {chunk.fmt!r}")
    except InputError:
        raise
    except KeyError as exc:
        raise InputError(f"{chunk.path}: column {exc} not found") from exc
    except Exception as exc:
        raise InputError(
            f"{chunk.describe()}: cannot read {chunk.fmt} data ({type(exc).__name__}: {exc})"
        ) from exc


def _check_columns(path: str, available: list[str], wanted: list[str] | None) -> None:
    if wanted is None:
        return
    missing = [c for c in wanted if c not in available]
    if missing:
        raise InputError(
            f"{path}: column(s) {', '.join(missing)} not found; the file has: {', '.join(available)}"
        )


def _parquet_batches(chunk, columns, batch_rows):
    pf = pq.ParquetFile(chunk.path)
    _check_columns(chunk.path, pf.schema_arrow.names, columns)
    groups = list(
        range(chunk.start or 0, chunk.stop if chunk.stop is not None else pf.metadata.num_row_groups)
    )
    if not groups:
        return
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns):
        yield pa.Table.from_batches([batch])


def _csv_batches(chunk, columns, batch_rows, column_types=None):
    header, skip = csv_header(chunk.path)
    read_opts = pacsv.ReadOptions(block_size=1 << 24, column_names=header, skip_rows=skip)
    types = {k: v for k, v in (column_types or {}).items() if k in header}
    convert = pacsv.ConvertOptions(include_columns=columns, column_types=types) if columns or types else None
    _check_columns(chunk.path, header, columns)
    reader = pacsv.open_csv(chunk.path, read_options=read_opts, convert_options=convert)
    rows = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            failed = _CONVERSION_ERROR.search(str(exc))
            if failed:
                index, failed_type = int(failed.group(1)), failed.group(2)
                name = (
                    header[index]
                    if columns is None
                    else list(columns)[index]
                    if index < len(columns)
                    else header[index]
                )
                raise CsvTypeError(
                    f"{chunk.path}: column {name!r} after {rows} data rows: {exc}", name, failed_type
                ) from exc
            raise InputError(f"{chunk.path}: CSV parse error after {rows} data rows: {exc}") from exc
        for start in range(0, batch.num_rows, batch_rows):
            piece = batch.slice(start, batch_rows)
            yield pa.Table.from_batches([piece])
            rows += piece.num_rows


_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+):(?: Row #\d+:)? CSV conversion error to (\w+)")


def csv_header(path: str) -> tuple[list[str], int]:
    """Column names and the number of lines before the data.

    Besides a plain header line, accepts leading ``#`` lines: comments before a header line
    (Gaia archive and ECSV style: the first line after them is all names, no numbers), or else
    the commented headers of ANNZ-style catalogs: ``#name,name,...`` or
    ``#F:name;F:name;D:name`` (type-prefixed), followed by any number of ``#`` lines (e.g. a
    line of type codes). A UTF-8 byte-order mark is dropped."""
    import csv
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        line = fh.readline()
        skip = 1
        comments = []
        after = ""
        if line.startswith("#"):
            comments.append(line)
            while True:
                nxt = fh.readline()
                if not nxt.startswith("#"):
                    after = nxt
                    break
                comments.append(nxt)
                skip += 1
    if line.startswith("#") and _looks_like_header(after):
        line, skip = after, len(comments) + 1  # comment lines, then the real header line
    if not line.strip().lstrip("#").strip():
        raise EmptyInputError(f"{path}: empty CSV file (no header line)")
    if line.startswith("#"):
        body = line.strip().lstrip("#").strip()
        if ";" in body and ":" in body:
            names = [item.split(":", 1)[-1].strip() for item in body.split(";")]
        else:
            names = [n.strip() for n in next(csv.reader([body]))]
    else:
        names = [n.strip() for n in next(csv.reader([line]))]
    if len(set(names)) != len(names) or not all(names):
        raise InputError(f"{path}: the header line has empty or repeated column names: {names}")
    return names, skip


def _looks_like_header(line: str) -> bool:
    """A line of column names: every field non-empty and none of them a number."""
    import csv

    if not line.strip():
        return False
    fields = [f.strip() for f in next(csv.reader([line.strip()]))]
    for field in fields:
        if not field:
            return False
        try:
            float(field)
            return False
        except ValueError:
            continue
    return True


def _fits_batches(chunk, columns, batch_rows):
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(chunk.path, memmap=True) as hdul:
        hdu = fits_table_hdu(hdul, chunk.path)
        names = list(hdu.columns.names)
        _check_columns(chunk.path, names, columns)
        units = {c.name: c.unit for c in hdu.columns if c.unit}
        start = chunk.start or 0
        stop = chunk.stop if chunk.stop is not None else int(hdu.header["NAXIS2"])
        for lo in range(start, stop, batch_rows):
            data = hdu.data[lo : min(lo + batch_rows, stop)]
            table = Table(data, copy=False)
            if columns is not None:
                table = table[columns]
            yield astropy_to_arrow(table, chunk.path, units)


def _votable_batches(chunk, columns, batch_rows):
    from astropy.io.votable import parse_single_table

    # astropy parses a VOTable whole; VOTables from services are page-sized, so this is bounded
    # by the page, not by the catalog.
    vot = parse_single_table(chunk.path)
    table = vot.to_table(use_names_over_ids=True)
    _check_columns(chunk.path, list(table.colnames), columns)
    if columns is not None:
        table = table[columns]
    for lo in range(0, len(table), batch_rows):
        yield astropy_to_arrow(table[lo : lo + batch_rows], chunk.path, {})


def astropy_to_arrow(table, path: str, units: dict) -> pa.Table:
    """Convert an astropy Table to Arrow, keeping types, masks (as nulls), units, UCDs, descriptions."""
    import numpy as np

    arrays, fields = [], []
    for name in table.colnames:
        col = table[name]
        if col.ndim > 1:
            raise InputError(
                f"{path}: column {name} is multidimensional ({col.shape[1:]}); only scalar columns can be imported"
            )
        values = np.asarray(col)
        mask = np.ma.getmaskarray(col) if hasattr(col, "mask") else None
        if values.dtype.kind == "S":
            values = np.char.decode(values, "utf-8")
        if values.dtype.byteorder == ">":
            values = values.astype(values.dtype.newbyteorder("="))
        if values.dtype.kind == "O":
            arr = pa.array(values.tolist(), mask=mask if mask is not None and mask.any() else None)
        else:
            arr = pa.array(values, mask=mask if mask is not None and mask.any() else None)
        meta = {}
        unit = getattr(col, "unit", None) or units.get(name)
        if unit:
            meta[b"unit"] = str(unit).encode()
        info_meta = getattr(col, "meta", {}) or {}
        if info_meta.get("ucd"):
            meta[b"ucd"] = str(info_meta["ucd"]).encode()
        if getattr(col, "description", None):
            meta[b"description"] = str(col.description).encode()
        arrays.append(arr)
        fields.append(pa.field(name, arr.type, metadata=meta or None))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
