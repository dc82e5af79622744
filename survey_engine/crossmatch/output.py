"""Writing a cross-match result as a HATS collection partitioned like the left catalog."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from survey_engine.catalog import build, layout
from survey_engine.crossmatch.match import match_task
from survey_engine.runtime import dask_client, run_tasks


def _match_and_write(task, params, lcoords, rcoords, meta, out_dir: str):
    frame = match_task(task, params, lcoords, rcoords, meta)
    if len(frame) == 0:
        return None
    table = pa.Table.from_pandas(frame.reset_index(), preserve_index=False)
    build.write_partition_file(table, out_dir, task.left_order, task.left_pix)
    return table.schema


def _write_frame_by_partition(frame, tasks, catalog_dir: Path) -> list:
    """Write an in-memory result into the left catalog's partitions (one-to-one matching)."""
    from survey_engine.catalog.healpix import pixel_range29

    index = frame.index.to_numpy()
    schemas = []
    for t in tasks:
        start, stop = pixel_range29(t.left_order, t.left_pix)
        part = frame[(index >= start) & (index < stop)]
        if len(part) == 0:
            schemas.append(None)
            continue
        table = pa.Table.from_pandas(part.reset_index(), preserve_index=False)
        build.write_partition_file(build.sort_by_healpix(table), catalog_dir, t.left_order, t.left_pix)
        schemas.append(table.schema)
    return schemas


def write_result(result, out: Path, name: str | None = None, client=None, progress: bool = False) -> Path:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: already exists and is not empty; choose another output or remove it")
    name = name or out.name
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    catalog_dir = staging / name
    catalog_dir.mkdir(parents=True)
    meta = result.meta()
    lcoords = (result.left.ra_column, result.left.dec_column)
    rcoords = (result.right.ra_column, result.right.dec_column)
    with dask_client(client) as client:
        if result.params.how == "one-to-one":
            schemas = _write_frame_by_partition(result.compute(), result.tasks, catalog_dir)
        else:
            calls = [(t, result.params, lcoords, rcoords, meta, str(catalog_dir)) for t in result.tasks]
            schemas = run_tasks(client, _match_and_write, calls, "crossmatch", progress)
    written = [(t.left_order, t.left_pix) for t, s in zip(result.tasks, schemas) if s is not None]
    schema = next((s for s in schemas if s is not None), None) or pa.Schema.from_pandas(meta.reset_index(), preserve_index=False)
    (catalog_dir / layout.DATASET_DIR).mkdir(parents=True, exist_ok=True)
    props = build.finish_catalog(
        catalog_dir, name=name, product="object",
        orders=np.array([o for o, _ in written], dtype=np.int64), pixels=np.array([p for _, p in written], dtype=np.int64),
        schema=schema.remove_metadata(), ra_column=result.ra_column, dec_column=result.dec_column,
        extra_properties={"se_crossmatch_radius_arcsec": result.params.radius_arcsec, "se_crossmatch_how": result.params.how},
    )
    layout.write_collection_properties(staging, name, name, [])
    layout.atomic_write_text(staging / "survey_engine.json", json.dumps({"rows": int(props["hats_nrows"]), "left": str(result.left.path), "right": str(result.right.path)}))
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return out
