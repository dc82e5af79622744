"""Build a margin catalog later, for an existing catalog or collection (``survey-engine margin``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from survey_engine.catalog import build, layout
from survey_engine.catalog.catalog import open_catalog
from survey_engine.catalog.lock import output_lock
from survey_engine.catalog.margins import MarginPlan, margin_catalog_name
from survey_engine.catalog.owner import Owner, claim, release
from survey_engine.catalog.partitioning import PartitionPlan
from survey_engine.runtime import dask_client, run_tasks, task_value


def _split_partition_file(path: str, spec: build.SplitSpec, shard: str, owner: Owner) -> dict:
    batches = (b for b in _iter_tables(path))
    return build.split_batches(batches, spec, None, shard, owner=owner)


def _iter_tables(path: str):
    import pyarrow as pa

    for batch in pq.ParquetFile(path, page_checksum_verification=True).iter_batches(batch_size=262_144):
        yield pa.Table.from_batches([batch])


def build_margin(path: str | Path, radius_arcsec: float, client=None, progress: bool = True) -> Path:
    """Add a margin of ``radius_arcsec`` to the catalog at ``path``; returns the margin's folder.

    In a collection the margin lands inside it and is listed in ``collection.properties``
    (becoming the default margin if there was none); beside a lone catalog it is written as a
    sibling folder. Written under a temporary name and renamed when complete.
    """
    path = Path(path)
    catalog = open_catalog(path, margin=None)
    is_collection = (path / layout.COLLECTION_FILE).exists()
    parent = path if is_collection else path.parent
    # the name comes from hats.properties (obs_collection): data, checked like any other name
    mname = layout.check_name(
        margin_catalog_name(catalog.name, radius_arcsec), f"{path}: margin catalog name"
    )
    final = layout.safe_child(parent, mname, "margin catalog name")
    with output_lock(final, f"margin {path} --radius {radius_arcsec:g}"):
        return _build_margin(
            path, catalog, is_collection, parent, mname, final, radius_arcsec, client, progress
        )


def _build_margin(
    path: Path,
    catalog,
    is_collection: bool,
    parent: Path,
    mname: str,
    final: Path,
    radius_arcsec: float,
    client,
    progress: bool,
) -> Path:
    if final.exists():
        raise FileExistsError(f"{final}: a margin of {radius_arcsec:g} arcsec already exists")
    staging = parent / f".{mname}.partial"
    layout.remove_tree(staging, parent)
    (staging / "shards").mkdir(parents=True)
    owner = claim(staging)  # a task of an earlier, failed build still running writes nothing here
    orders = catalog.partitions.Norder.to_numpy()
    pixels = catalog.partitions.Npix.to_numpy()
    plan = PartitionPlan.from_arrays(orders, pixels, np.zeros(len(orders)))
    margin = MarginPlan.build(plan, radius_arcsec)
    schema = catalog.schema
    spec = build.SplitSpec(plan, catalog.ra_column, catalog.dec_column, schema, margin, write_main=False)
    files = [
        str(layout.partition_path(catalog.path, int(o), int(p))) for o, p in zip(plan.orders, plan.pixels)
    ]
    shards = [str(staging / "shards" / f"margin_{i:06d}.arrow") for i in range(len(files))]
    with dask_client(client) as client:
        # made by a task, not scattered: a killed worker loses no input (see ``task_value``)
        spec_f = task_value(client, spec)
        run_tasks(
            client,
            _split_partition_file,
            [(f, spec_f, s, owner) for f, s in zip(files, shards)],
            "margin split",
            progress,
        )
        indexes = [build.ShardIndex.load(s) for s in shards]
        out_dir = staging / "catalog"
        m_orders, m_pixels, _ = build.reduce_all(
            client,
            indexes,
            margin.part_orders,
            margin.part_pixels,
            schema,
            out_dir,
            None,
            "margin reduce",
            progress,
            only_with_rows=True,
            owner=owner,
        )
    build.finish_catalog(
        out_dir,
        name=mname,
        product="margin",
        orders=m_orders,
        pixels=m_pixels,
        schema=schema,
        ra_column=catalog.ra_column,
        dec_column=catalog.dec_column,
        extra_properties={
            "hats_primary_table_url": catalog.name,
            "hats_margin_threshold": float(radius_arcsec),
        },
    )
    release(staging)
    out_dir.rename(final)
    layout.remove_tree(staging, parent)
    if is_collection:
        props = layout.read_properties(path / layout.COLLECTION_FILE)
        margins = props.get("all_margins", "").split() + [mname]
        default = props.get("default_margin") or mname
        layout.write_collection_properties(
            path,
            props.get("obs_collection", catalog.name),
            props["hats_primary_table_url"],
            [default] + [m for m in margins if m != default],
        )
    return final
