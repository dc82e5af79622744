"""Writing a (derived) lazy catalog back to disk as a HATS collection, partition by partition."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from survey_engine.catalog import build, layout
from survey_engine.catalog.catalog import Catalog, read_partition
from survey_engine.catalog.healpix import SPATIAL_INDEX_COLUMN
from survey_engine.runtime import dask_client, run_tasks


def _write_one(src: str, read_columns, keep_columns, transforms, out_dir: str, order: int, pix: int, ra: str, dec: str):
    frame = read_partition(src, read_columns, keep_columns, transforms)
    if len(frame) == 0:
        return None
    for col in (ra, dec):
        if col not in frame.columns:
            raise ValueError(f"cannot write a catalog without its coordinate column {col!r} (columns: {list(frame.columns)})")
    table = pa.Table.from_pandas(frame.reset_index(), preserve_index=False)
    if SPATIAL_INDEX_COLUMN not in table.column_names:
        raise ValueError(f"a transform dropped the {SPATIAL_INDEX_COLUMN} index; keep it as the frame index")
    table = build.sort_by_healpix(table.select([SPATIAL_INDEX_COLUMN] + [c for c in table.column_names if c != SPATIAL_INDEX_COLUMN]))
    build.write_partition_file(table, out_dir, order, pix)
    return table.schema


def _write_single(catalog: Catalog, out_dir: Path, name: str, product: str, client, progress: bool, extra: dict) -> int:
    calls = [
        (str(f), catalog._read_columns(), catalog.columns, catalog.transforms, str(out_dir), int(o), int(p), catalog.ra_column, catalog.dec_column)
        for f, o, p in zip(catalog.partition_files(), catalog.partitions.Norder, catalog.partitions.Npix)
    ]
    schemas = run_tasks(client, _write_one, calls, f"write {name}", progress)
    written = [(c[5], c[6]) for c, s in zip(calls, schemas) if s is not None]
    if not written and product == "object":
        raise ValueError(f"nothing to write to {out_dir}: the catalog selection is empty")
    schema = next((s for s in schemas if s is not None), None)
    if schema is None:
        schema = catalog.schema
    schema = schema.remove_metadata()
    orders = np.array([o for o, _ in written], dtype=np.int64)
    pixels = np.array([p for _, p in written], dtype=np.int64)
    (out_dir / layout.DATASET_DIR).mkdir(parents=True, exist_ok=True)
    props = build.finish_catalog(
        out_dir, name=name, product=product, orders=orders, pixels=pixels, schema=schema,
        ra_column=catalog.ra_column, dec_column=catalog.dec_column, extra_properties=extra,
    )
    return int(props["hats_nrows"])


def write_catalog(catalog: Catalog, out: Path, name: str | None = None, client=None, progress: bool = False) -> Path:
    """Write ``catalog`` (and its margin) as a collection at ``out``; atomic: built beside, then renamed."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: already exists and is not empty; choose another output or remove it")
    name = name or out.name
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with dask_client(client) as client:
        rows = _write_single(catalog, staging / name, name, "object", client, progress, {})
        margins = []
        if catalog.margin is not None:
            mname = f"{name}_{catalog.margin_radius_arcsec:g}arcsec".replace(".", "p")
            _write_single(
                catalog.margin, staging / mname, mname, "margin", client, progress,
                {"hats_primary_table_url": name, "hats_margin_threshold": catalog.margin_radius_arcsec},
            )
            margins.append(mname)
    layout.write_collection_properties(staging, name, name, margins)
    layout.atomic_write_text(staging / "survey_engine.json", json.dumps({"rows": rows, "derived_from": str(catalog.path)}))
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return out
