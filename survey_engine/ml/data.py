"""Where training and application data come from: a HATS catalog/collection or plain files.

Either way the result is a Dask dataframe; a HATS catalog also gives positions for spatial folds
and is the shape predictions are written back in.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.catalog import layout, storage


@dataclass
class Table:
    path: str
    frame: object  # dask DataFrame
    catalog: object | None  # survey_engine Catalog when the source is HATS
    fingerprint: str

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)


def is_hats(path: str | Path, storage_options: dict | None = None) -> bool:
    if storage.is_remote(path):  # a remote location is read as a catalog (a web server lists no folders)
        p = storage.as_path(path, storage_options)
        return any(storage.exists(p / f) for f in (layout.COLLECTION_FILE, layout.PROPERTIES_FILE))
    p = Path(path)
    return p.is_dir() and any(
        (p / f).exists() for f in (layout.COLLECTION_FILE, layout.PROPERTIES_FILE, "properties")
    )


def open_table(path: str | Path, storage_options: dict | None = None) -> Table:
    """Open ``path`` (HATS catalog or collection, a file, a folder or a glob of files; a remote
    ``https://`` / ``s3://`` location must be a HATS catalog or collection)."""
    import dask.dataframe as dd

    from survey_engine.ingest.readers import expand_inputs, plan_chunks

    path = str(path)
    if storage.is_remote(path) or is_hats(path):
        from survey_engine.catalog.catalog import open_catalog

        cat = open_catalog(path, margin=None, storage_options=storage_options)
        return Table(path, cat.to_dask(), cat, _hats_fingerprint(cat))
    files = expand_inputs([path])
    chunks = plan_chunks(files)
    meta = _read_chunk(chunks[0]).iloc[:0]
    frame = dd.from_map(_read_chunk, chunks, meta=meta, label="read-table", enforce_metadata=False)
    return Table(path, frame, None, _files_fingerprint(files))


def _read_chunk(chunk) -> pd.DataFrame:
    import pyarrow as pa

    from survey_engine.ingest.readers import read_batches

    tables = list(read_batches(chunk))
    frame = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()
    return frame


def _hats_fingerprint(cat) -> str:
    blob = json.dumps(
        {
            "properties": {k: v for k, v in cat.properties.items() if "date" not in k},
            "partitions": cat.partitions[["Norder", "Npix"]].to_numpy().tolist(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _files_fingerprint(files: list[str]) -> str:
    stats = []
    for f in files:
        st = os.stat(f)
        stats.append([os.path.basename(f), st.st_size])
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:20]


def _splitmix(x: np.ndarray) -> np.ndarray:
    """A fast integer hash (splitmix64) for reproducible fold assignment."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def placed_rows(frame: pd.DataFrame, ra: str, dec: str) -> np.ndarray:
    """Rows with a finite position (cdshealpix panics on a NaN Dec)."""
    ra_v = pd.to_numeric(frame[ra], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    dec_v = pd.to_numeric(frame[dec], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.isfinite(ra_v) & np.isfinite(dec_v)


def healpix_of(frame: pd.DataFrame, ra: str, dec: str, order: int) -> np.ndarray:
    """Nested HEALPix pixel of every row (RA wrapped, Dec clipped); the rows must have positions
    (``placed_rows``)."""
    import cdshealpix
    from astropy import units as u

    ra_v = pd.to_numeric(frame[ra], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan) % 360.0
    dec_v = np.clip(
        pd.to_numeric(frame[dec], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan), -90, 90
    )
    return cdshealpix.nested.lonlat_to_healpix(ra_v * u.deg, dec_v * u.deg, order).astype(np.uint64)


def assign_folds(
    frame: pd.DataFrame, k: int, seed: int, ra: str | None, dec: str | None, partition: int, order: int = 7
) -> np.ndarray:
    """Fold number (0..k-1) per row. With positions: by HEALPix pixel at ``order`` (~0.46 deg at
    7), so neighbours share a fold and do not leak between folds; otherwise (and for a row without
    a finite position) by row position."""
    with np.errstate(over="ignore"):
        key = (np.uint64(partition) << np.uint64(32)) + np.arange(len(frame), dtype=np.uint64)
        if ra and dec and ra in frame.columns and dec in frame.columns:
            placed = placed_rows(frame, ra, dec)
            key[placed] = healpix_of(frame[placed], ra, dec, order)
        key = key ^ (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))
        return (_splitmix(key) % np.uint64(k)).astype(np.int16)
