"""Worker functions of a file import: histogram (map), split, reduce. Each runs on a Dask worker
and records its own done-marker, so a re-run skips it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from survey_engine.catalog import build
from survey_engine.catalog.healpix import radec_to_healpix
from survey_engine.ingest.readers import InputChunk, InputError, read_batches


def chunk_row_offset(chunk: InputChunk) -> int:
    """Row number (0-based, over the whole file) of the chunk's first row."""
    if chunk.fmt == "parquet" and chunk.start:
        md = pq.ParquetFile(chunk.path).metadata
        return sum(md.row_group(i).num_rows for i in range(chunk.start))
    return chunk.start or 0


class CoordinateCleaner:
    """Checks RA/Dec of each batch: drops (or rejects) invalid rows, wraps RA into [0, 360)."""

    def __init__(self, chunk: InputChunk, ra: str, dec: str, drop_invalid: bool, id_column: str | None = None):
        self.chunk, self.ra, self.dec, self.drop_invalid, self.id_column = chunk, ra, dec, drop_invalid, id_column
        self.row = chunk_row_offset(chunk)
        self.dropped = 0
        self.wrapped = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        for col in (self.ra, self.dec):
            if col not in batch.column_names:
                raise InputError(f"{self.chunk.path}: coordinate column {col!r} not found; columns: {', '.join(batch.column_names)}")
            typ = batch.schema.field(col).type
            if not (pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_decimal(typ)):
                raise InputError(f"{self.chunk.path}: coordinate column {col!r} is not numeric (type {typ})")
        ra = batch.column(self.ra).to_numpy(zero_copy_only=False).astype(np.float64)
        dec = batch.column(self.dec).to_numpy(zero_copy_only=False).astype(np.float64)
        bad_ra = ~np.isfinite(ra)
        bad_dec = ~np.isfinite(dec) | (dec < -90) | (dec > 90)
        bad = bad_ra | bad_dec
        if self.id_column is not None:
            if self.id_column not in batch.column_names:
                raise InputError(f"{self.chunk.path}: id column {self.id_column!r} not found; columns: {', '.join(batch.column_names)}")
            bad_id = np.asarray(batch.column(self.id_column).is_null())
            if bad_id.any():
                first = int(np.flatnonzero(bad_id)[0])
                raise InputError(f"{self.chunk.path}: id column {self.id_column!r} is empty at row {self.row + first}")
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            if not self.drop_invalid:
                col, val = (self.dec, dec[first]) if bad_dec[first] else (self.ra, ra[first])
                what = "outside [-90, 90]" if np.isfinite(val) else "missing or NaN"
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
            typ = batch.schema.field(self.ra).type
            idx = batch.column_names.index(self.ra)
            batch = batch.set_column(idx, batch.schema.field(self.ra), pc.cast(pa.array(fixed), typ))
        return batch


def histogram_chunk(chunk: InputChunk, ra: str, dec: str, order: int, drop_invalid: bool, id_column: str | None, out_path: str) -> dict:
    """Map: count rows per HEALPix pixel at ``order`` and record the chunk's schema."""
    import os

    cleaner = CoordinateCleaner(chunk, ra, dec, drop_invalid, id_column)
    schema = None
    pixels = []
    rows = 0
    for batch in read_batches(chunk):
        if schema is None:
            schema = batch.schema
        batch = cleaner(batch)
        rows += batch.num_rows
        if batch.num_rows:
            r = batch.column(ra).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            d = batch.column(dec).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            pix, counts = np.unique(radec_to_healpix(r, d, order), return_counts=True)
            pixels.append((pix, counts))
    if schema is None:
        schema = _empty_schema(chunk)
    if pixels:
        allpix = np.concatenate([p for p, _ in pixels])
        allcnt = np.concatenate([c for _, c in pixels])
        uniq, inv = np.unique(allpix, return_inverse=True)
        counts = np.bincount(inv, weights=allcnt).astype(np.int64)
    else:
        uniq, counts = np.empty(0, np.int64), np.empty(0, np.int64)
    result = {
        "pixels": uniq.astype(np.int64),
        "counts": counts,
        "stats": np.array([rows, cleaner.dropped, cleaner.wrapped], dtype=np.int64),
        "schema": np.frombuffer(schema.serialize().to_pybytes(), dtype=np.uint8),
    }
    tmp = out_path + ".tmp.npz"
    np.savez(tmp, **result)
    os.replace(tmp, out_path)
    return result


def _empty_schema(chunk: InputChunk) -> pa.Schema:
    if chunk.fmt == "parquet":
        return pq.read_schema(chunk.path)
    raise InputError(f"{chunk.path}: file holds no rows")


def split_chunk(chunk: InputChunk, spec: build.SplitSpec, drop_invalid: bool, main_shard: str, margin_shard: str) -> dict:
    """Split: route one chunk's rows into per-partition slices of its shard files."""
    cleaner = CoordinateCleaner(chunk, spec.ra_column, spec.dec_column, drop_invalid, spec.id_column)
    return build.split_batches(read_batches(chunk), spec, main_shard, margin_shard, clean=cleaner)
