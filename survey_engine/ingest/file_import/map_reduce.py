"""Worker functions of a file import: histogram (map), split, reduce. Each runs on a Dask worker
and records its own done-marker, so a re-run skips it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from survey_engine.catalog import build
from survey_engine.catalog.healpix import radec_to_healpix
from survey_engine.catalog.owner import Owner, write_file
from survey_engine.ingest.readers import (
    CSV_WIDENING,
    CsvTypeError,
    EmptyInputError,
    InputChunk,
    InputError,
    read_batches,
)


def chunk_row_offset(chunk: InputChunk) -> int:
    """Row number (0-based, over the whole file) of the chunk's first row."""
    if chunk.fmt == "parquet" and chunk.start:
        md = pq.ParquetFile(chunk.path).metadata
        return sum(md.row_group(i).num_rows for i in range(chunk.start))
    return chunk.start or 0


class CoordinateCleaner:
    """Checks RA/Dec of each batch: drops (or rejects) invalid rows, wraps RA into [0, 360)."""

    def __init__(
        self, chunk: InputChunk, ra: str, dec: str, drop_invalid: bool, id_column: str | None = None
    ):
        self.chunk, self.ra, self.dec, self.drop_invalid, self.id_column = (
            chunk,
            ra,
            dec,
            drop_invalid,
            id_column,
        )
        self.row = chunk_row_offset(chunk)
        self.dropped = 0
        self.wrapped = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        for col in (self.ra, self.dec):
            if col not in batch.column_names:
                raise InputError(
                    f"{self.chunk.path}: coordinate column {col!r} not found; columns: {', '.join(batch.column_names)}"
                )
            typ = batch.schema.field(col).type
            if not (pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_decimal(typ)):
                raise InputError(f"{self.chunk.path}: coordinate column {col!r} is not numeric (type {typ})")
        ra = batch.column(self.ra).to_numpy(zero_copy_only=False).astype(np.float64)
        dec = batch.column(self.dec).to_numpy(zero_copy_only=False).astype(np.float64)
        # wrapping is for small excursions (Gaia fields in [-2, 4]); 1e20 is a damaged value
        bad_ra = ~np.isfinite(ra) | (ra < RA_LIMITS[0]) | (ra > RA_LIMITS[1])
        bad_dec = ~np.isfinite(dec) | (dec < -90) | (dec > 90)
        bad = bad_ra | bad_dec
        if self.id_column is not None:
            if self.id_column not in batch.column_names:
                raise InputError(
                    f"{self.chunk.path}: id column {self.id_column!r} not found; columns: {', '.join(batch.column_names)}"
                )
            bad_id = np.asarray(batch.column(self.id_column).is_null())
            if bad_id.any():
                first = int(np.flatnonzero(bad_id)[0])
                raise InputError(
                    f"{self.chunk.path}: id column {self.id_column!r} is empty at row {self.row + first}"
                )
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            if not self.drop_invalid:
                col, val = (self.dec, dec[first]) if bad_dec[first] else (self.ra, ra[first])
                limits = (
                    "[-90, 90]"
                    if bad_dec[first]
                    else f"[{RA_LIMITS[0]:g}, {RA_LIMITS[1]:g}] (RA is wrapped into [0, 360) only from there)"
                )
                what = f"outside {limits}" if np.isfinite(val) else "missing or NaN"
                raise InputError(
                    f"{self.chunk.path}: row {self.row + first}: column {col!r} is {what} ({val}); "
                    f"{int(bad.sum())} such rows in this batch (use --drop-invalid to drop them and count them)"
                )
            self.dropped += int(bad.sum())
            keep = ~bad
            batch = batch.filter(pa.array(keep))
            ra = ra[keep]
        self.row += len(bad)
        wrap = (ra < 0) | (ra >= 360)
        if wrap.any():
            self.wrapped += int(wrap.sum())
            fixed = np.mod(ra, 360.0)
            fixed[fixed >= 360.0] = 0.0
            field = batch.schema.field(self.ra)
            if pa.types.is_floating(field.type):
                # in float64: a float32 RA of -1e-6 wraps to 359.999999, which float32 rounds to 360.0
                field = field.with_type(pa.float64())
            idx = batch.column_names.index(self.ra)
            batch = batch.set_column(idx, field, pc.cast(pa.array(fixed), field.type))
        return batch


RA_LIMITS = (-360.0, 720.0)
# Columns HATS reserves (the spatial index and the hive partition keys) and what an input
# column of that name becomes, so that it is kept, not dropped.
RENAMED_SUFFIX = "_input"


def rename_reserved(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """Rename input columns named ``_healpix_29``, ``Norder``, ``Dir`` or ``Npix`` to
    ``<name>_input``; returns the table and the names it renamed."""
    hit = [n for n in table.column_names if n in build.RESERVED_COLUMNS]
    if not hit:
        return table, []
    names = [n + RENAMED_SUFFIX if n in build.RESERVED_COLUMNS else n for n in table.column_names]
    clash = sorted(set(n for n in names if names.count(n) > 1))
    if clash:
        raise InputError(f"cannot rename the reserved column(s) {hit}: {clash} already exist(s) in the input")
    return table.rename_columns(names), hit


def _read_renamed(chunk: InputChunk, column_types=None):
    for batch in read_batches(chunk, column_types=column_types):
        yield rename_reserved(batch)[0]


def csv_types_for(schema: pa.Schema) -> dict[str, pa.DataType]:
    """CSV column types from the import's schema, under the names the file uses (reserved names
    included), so the split pass parses every file of the import the same way."""
    types = {f.name: f.type for f in schema if f.name != build.SPATIAL_INDEX_COLUMN}
    for name in build.RESERVED_COLUMNS:
        if name + RENAMED_SUFFIX in types:
            types[name] = types[name + RENAMED_SUFFIX]
    return types


def histogram_chunk(
    chunk: InputChunk,
    ra: str,
    dec: str,
    order: int,
    drop_invalid: bool,
    id_column: str | None,
    out_path: str,
    owner: Owner | None = None,
) -> dict:
    """Map: count rows per HEALPix pixel at ``order`` and record the chunk's schema.

    A CSV value that does not fit the type Arrow inferred from the first block (an integer
    column holding 0.5 later, a column empty at first) widens that column's type and the chunk
    is counted again, so a valid CSV of any size imports. A file without rows is recorded as
    empty (``empty``, ``note``): the import skips it and says so."""
    column_types: dict[str, pa.DataType] = {}
    while True:
        try:
            result = _histogram_pass(chunk, ra, dec, order, drop_invalid, id_column, column_types)
            break
        except CsvTypeError as exc:
            wider = CSV_WIDENING.get(exc.failed_type)
            if wider is None or exc.column in column_types and str(column_types[exc.column]) == "string":
                raise
            column_types[exc.column] = pa.type_for_alias(wider)
    # only while the import that asked still owns its staging folder
    write_file(out_path, lambda tmp: build.save_npz(tmp, **result), owner)
    return result


def _histogram_pass(chunk, ra, dec, order, drop_invalid, id_column, column_types) -> dict:
    cleaner = CoordinateCleaner(chunk, ra, dec, drop_invalid, id_column)
    schema = None
    pixels = []
    rows = 0
    renamed: list[str] = []
    note = ""
    try:
        for batch in read_batches(chunk, column_types=column_types):
            batch, renamed = rename_reserved(batch)
            if schema is None:
                schema = batch.schema
            batch = cleaner(batch)
            rows += batch.num_rows
            if batch.num_rows:
                r = batch.column(ra).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                d = batch.column(dec).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                pix, counts = np.unique(radec_to_healpix(r, d, order), return_counts=True)
                pixels.append((pix, counts))
    except EmptyInputError as exc:
        note = str(exc)
    if schema is None:
        schema = pa.schema([])
        note = note or f"{chunk.path}: file holds no rows"
    if pixels:
        allpix = np.concatenate([p for p, _ in pixels])
        allcnt = np.concatenate([c for _, c in pixels])
        uniq, inv = np.unique(allpix, return_inverse=True)
        counts = np.bincount(inv, weights=allcnt).astype(np.int64)
    else:
        uniq, counts = np.empty(0, np.int64), np.empty(0, np.int64)
    return {
        "pixels": uniq.astype(np.int64),
        "counts": counts,
        "stats": np.array([rows, cleaner.dropped, cleaner.wrapped], dtype=np.int64),
        "schema": np.frombuffer(schema.serialize().to_pybytes(), dtype=np.uint8),
        "empty": np.array([bool(note)]),
        "note": np.frombuffer(note.encode(), dtype=np.uint8),
        "renamed": np.frombuffer(",".join(renamed).encode(), dtype=np.uint8),
    }


def split_chunk(
    chunk: InputChunk,
    spec: build.SplitSpec,
    drop_invalid: bool,
    main_shard: str,
    margin_shard: str,
    owner: Owner | None = None,
) -> dict:
    """Split: route one chunk's rows into per-partition slices of its shard files."""
    cleaner = CoordinateCleaner(chunk, spec.ra_column, spec.dec_column, drop_invalid, spec.id_column)
    types = csv_types_for(spec.schema) if chunk.fmt == "csv" else None
    return build.split_batches(
        _read_renamed(chunk, types), spec, main_shard, margin_shard, clean=cleaner, owner=owner
    )
