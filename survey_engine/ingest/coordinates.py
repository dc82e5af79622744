"""Which columns of an input file hold RA and Dec, when the user did not say (``--ra/--dec auto``).

In order: the numeric column whose UCD is the main position (``pos.eq.ra;meta.main``, as VOTables
from TAP services, VizieR and the Gaia archive declare it), else the only numeric column whose
UCD starts with ``pos.eq.ra``, else the column named ``ra`` / ``dec`` in any case. UCDs come from
VOTable FIELDs, FITS ``TUCDn`` keywords and Parquet field metadata (``ucd``, as our imports write
it). A UCD on a text column (SIMBAD's sexagesimal ``RA``) is passed over. Nothing found is an
error that lists the candidates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from survey_engine.ingest.readers import InputError, detect_format

AUTO = "auto"
_SUFFIX = r"(_?(j2000|icrs|deg|2000|d|ep[\w.]*))?$"
_LIKELY = {
    "ra": re.compile(r"^_?(ra|alpha)" + _SUFFIX, re.I),
    "dec": re.compile(r"^_?(dec?|delta)" + _SUFFIX, re.I),
}


@dataclass(frozen=True)
class ColumnDescription:
    name: str
    ucd: str
    numeric: bool


def describe_columns(path: str) -> list[ColumnDescription]:
    """Every column of a file with its UCD ('' if none) and whether it holds numbers; header only
    where the format allows (VOTables are parsed whole: they are page-sized)."""
    fmt = detect_format(path)
    try:
        if fmt == "parquet":
            return _parquet_columns(path)
        if fmt == "fits":
            return _fits_columns(path)
        if fmt == "votable":
            return _votable_columns(path)
        from survey_engine.ingest.readers import csv_header

        names, _ = csv_header(path)
        return [ColumnDescription(n, "", True) for n in names]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read the {fmt} header ({type(exc).__name__}: {exc})") from exc


def _parquet_columns(path: str) -> list[ColumnDescription]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    for field in pq.read_schema(path):
        ucd = (field.metadata or {}).get(b"ucd", b"").decode(errors="replace")
        numeric = (
            pa.types.is_floating(field.type)
            or pa.types.is_integer(field.type)
            or pa.types.is_decimal(field.type)
        )
        out.append(ColumnDescription(field.name, ucd, numeric))
    return out


def _fits_columns(path: str) -> list[ColumnDescription]:
    from astropy.io import fits

    from survey_engine.ingest.readers import fits_table_hdu

    with fits.open(path, memmap=True) as hdul:
        hdu = fits_table_hdu(hdul, path)
        out = []
        for i, col in enumerate(hdu.columns, start=1):
            ucd = str(hdu.header.get(f"TUCD{i}", "") or "")
            out.append(ColumnDescription(col.name, ucd, col.dtype.kind in "iuf"))
        return out


_NUMERIC_VOTABLE = {"short", "int", "long", "float", "double", "unsignedByte"}


def _votable_columns(path: str) -> list[ColumnDescription]:
    from astropy.io.votable import parse_single_table

    table = parse_single_table(path)
    return [
        ColumnDescription(f.name, f.ucd or "", f.datatype in _NUMERIC_VOTABLE and f.arraysize in (None, "1"))
        for f in table.fields
    ]


def _words(ucd: str) -> list[str]:
    return [w.strip().lower() for w in ucd.split(";") if w.strip()]


def pick_coordinate(columns: list[ColumnDescription], axis: str) -> str | None:
    """The column holding ``axis`` ('ra' or 'dec'), or None when the rules find none (or several)."""
    atom = f"pos.eq.{axis}"
    numeric = [c for c in columns if c.numeric]
    main = [c for c in numeric if _words(c.ucd)[:1] == [atom] and "meta.main" in _words(c.ucd)]
    if len(main) == 1:
        return main[0].name
    plain = [c for c in numeric if _words(c.ucd)[:1] == [atom]]
    if len(plain) == 1:
        return plain[0].name
    named = [c for c in columns if c.name.lower() == axis]
    if len(named) == 1:
        return named[0].name
    return None


def find_coordinates(path: str, ra: str = AUTO, dec: str = AUTO) -> tuple[str, str]:
    """``(ra, dec)`` with each ``auto`` replaced by the column the rules pick in ``path``."""
    columns = describe_columns(path)
    names = [c.name for c in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # the same message reading the file would give: which column is meant cannot be told
        raise InputError(
            f"{path}: column name(s) {repeated} appear more than once; a column must be unique to be read"
        )
    chosen = {}
    for axis, given, flag in (("ra", ra, "--ra"), ("dec", dec, "--dec")):
        if given != AUTO:
            chosen[axis] = given
            continue
        name = pick_coordinate(columns, axis)
        if name is None:
            raise InputError(_not_found(path, columns, axis, flag))
        chosen[axis] = name
    return chosen["ra"], chosen["dec"]


def _not_found(path: str, columns: list[ColumnDescription], axis: str, flag: str) -> str:
    atom = f"pos.eq.{axis}"
    by_ucd = [c for c in columns if atom in _words(c.ucd)[:1]]
    likely = [c for c in columns if _LIKELY[axis].search(c.name) and c not in by_ucd]
    listed = [f"{c.name} (UCD {c.ucd}{'' if c.numeric else ', not numeric'})" for c in by_ucd] + [
        c.name for c in likely
    ]
    why = (
        f"several columns have UCD {atom}"
        if len([c for c in by_ucd if c.numeric]) > 1
        else f"no numeric column has UCD {atom};meta.main"
    )
    hint = (
        f"candidates: {', '.join(listed)}"
        if listed
        else f"columns: {', '.join(c.name for c in columns[:40])}"
    )
    return f"{path}: cannot tell which column holds {axis.upper()}: {why} and column {axis!r} not found; {hint}; pass {flag} COLUMN"
