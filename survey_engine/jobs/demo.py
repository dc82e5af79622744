"""The main job on its embedded default: mock sky -> HATS catalog with margins -> cone query ->
self cross-match.

Needs nothing but the package. Re-running it reuses what is already there (same rows and seed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from survey_engine.catalog.catalog import open_catalog
from survey_engine.catalog.layout import remove_tree
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from survey_engine.mock.sky import CLUSTERS, galactic_to_icrs, write_mock_sky
from survey_engine.runtime import dask_client

DEFAULT_OUT = "survey-engine-demo"
DEFAULT_ROWS = 500_000


def run_demo(rows: int = DEFAULT_ROWS, out: str | Path = DEFAULT_OUT, seed: int = 42, workers: int | None = None,
             client=None, progress: bool = True, echo=print) -> dict:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"rows": rows, "seed": seed, "out": str(out), "steps": {}}
    with dask_client(client, n_workers=workers) as client:
        echo(f"survey_engine demo: {rows:,} mock rows, seed {seed}, {len(client.scheduler_info()['workers'])} workers")
        if client.dashboard_link:
            echo(f"  dashboard: {client.dashboard_link}")
        t0 = time.perf_counter()
        write_mock_sky(rows, out / "mock", seed=seed, client=client, progress=progress)
        summary["steps"]["mock"] = {"seconds": round(time.perf_counter() - t0, 2), "path": str(out / "mock")}
        echo(f"  1. mock sky      {out / 'mock'}  ({time.perf_counter() - t0:.1f} s)")

        t0 = time.perf_counter()
        max_rows = max(10_000, rows // 16)
        result = run_import(
            ImportArguments([str(out / "mock")], str(out / "catalog"), id_column="source_id", max_rows=max_rows, margin_arcsec=5.0, name="mock_sky"),
            client=client, progress=progress,
        )
        summary["steps"]["import"] = {"seconds": round(time.perf_counter() - t0, 2), "path": str(out / "catalog"),
                                      "partitions": result.partitions, "margin_rows": result.margin_rows, "rows": result.rows}
        echo(f"  2. catalog       {out / 'catalog'}  ({result.summary()}; {time.perf_counter() - t0:.1f} s)")

        t0 = time.perf_counter()
        cluster = CLUSTERS[0]
        ra, dec = (float(v[0]) for v in galactic_to_icrs([cluster.l], [cluster.b]))
        catalog = open_catalog(out / "catalog")
        cone = catalog.cone_search(ra, dec, 3600.0)
        frame = cone.compute()
        cone_path = out / "cone.parquet"
        tmp = cone_path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp)
        tmp.replace(cone_path)
        members = int((frame["cluster_id"] == 0).sum())
        summary["steps"]["cone"] = {"seconds": round(time.perf_counter() - t0, 2), "ra": ra, "dec": dec, "radius_arcsec": 3600.0,
                                    "rows": len(frame), "partitions_read": cone.npartitions, "of_partitions": catalog.npartitions,
                                    "cluster_members": members, "path": str(cone_path)}
        echo(f"  3. cone query    1 deg around open cluster 0 (ra={ra:.3f}, dec={dec:.3f}): {len(frame):,} rows "
             f"({members} cluster members) from {cone.npartitions} of {catalog.npartitions} partitions -> {cone_path}")

        t0 = time.perf_counter()
        pairs_path = out / "close_pairs"
        if not (pairs_path / "collection.properties").exists():
            remove_tree(pairs_path, out)
            pairs = catalog.crossmatch(catalog, 2.0, exclude_self=True, left_columns=["source_id", "obj_class"], right_columns=["source_id", "obj_class"])
            pairs.write(pairs_path, client=client, progress=progress)
        n_pairs = open_catalog(pairs_path).row_count()
        summary["steps"]["crossmatch"] = {"seconds": round(time.perf_counter() - t0, 2), "radius_arcsec": 2.0, "rows": n_pairs, "path": str(pairs_path)}
        echo(f"  4. self-match    nearest other source within 2\" (exact across partition edges via the margin): "
             f"{n_pairs:,} close pairs -> {pairs_path}  ({time.perf_counter() - t0:.1f} s)")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    echo(f"  summary: {out / 'summary.json'}")
    return summary
