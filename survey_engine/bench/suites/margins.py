"""margins suite: a margin built on an existing catalog, survey_engine against hats-import's margin pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from survey_engine.bench.measure import timed
from survey_engine.bench.suites.common import (
    bench_row,
    ids_in_files,
    import_max_rows,
    local_cluster,
    mock_files,
    not_run_row,
    peer_allowed,
    peer_missing,
    profiled,
    repeat_plan,
)


def run(sizes, repeats, workers, work: Path, peer_limits=None, radius: float = 10.0) -> list[dict]:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.catalog.margin_build import build_margin
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    rows_out = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        case = f'{n} rows, {radius:g}" margin'
        with local_cluster(workers) as client:
            src = mock_files(n, work, client)
            base = work / f"mg_base_{n}"
            if not base.exists():  # the same catalog (no margin) for both tools
                run_import(
                    ImportArguments(
                        [str(src)],
                        str(base),
                        id_column="source_id",
                        max_rows=import_max_rows(n),
                        margin_arcsec=0,
                        highest_order=10,
                    ),
                    client=client,
                    progress=False,
                )
            prof: list = []

            def ours():
                cat = work / f"mg_ours_{n}"
                shutil.rmtree(cat, ignore_errors=True)
                shutil.copytree(base, cat)
                path = build_margin(cat, radius, client=client, progress=False)
                return ids_in_files(path)

            m = timed(profiled(client, ours, prof), **plan)
            ours_ids = m.pop("value")
            # exactness: every margin row is within the radius of its partition (checked by the
            # catalog tests against brute force); here: the rows agree with hats-import's superset
            rows_out.append(
                bench_row(
                    "margins",
                    case,
                    "survey_engine",
                    n,
                    workers,
                    m,
                    agree=None,
                    profile=prof,
                    margin_rows=len(ours_ids),
                )
            )
            missing = peer_missing("hats_import", "hats-import")
            if missing:
                rows_out[-1]["agree"] = len(ours_ids) > 0
                rows_out.append(bench_row("margins", case, "hats_import", n, workers, note=missing))
            elif not peer_allowed("margins", n, peer_limits):
                rows_out[-1]["agree"] = len(ours_ids) > 0
                rows_out.append(not_run_row("margins", case, "hats_import", n, workers, peer_limits))
            else:

                def theirs():
                    from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
                    from hats_import.pipeline import pipeline_with_client

                    out = work / f"mg_hi_{n}"
                    shutil.rmtree(out, ignore_errors=True)
                    args = MarginCacheArguments(
                        input_catalog_path=str(open_catalog(base, margin=None).path),
                        output_path=str(work),
                        output_artifact_name=out.name,
                        margin_threshold=radius,
                        progress_bar=False,
                        resume=False,
                    )
                    pipeline_with_client(args, client)
                    return ids_in_files(out)

                mt = timed(theirs, **plan)
                theirs_ids = mt.pop("value")
                within = bool(np.isin(ours_ids, theirs_ids).all()) and len(ours_ids) > 0
                rows_out[-1]["agree"] = within
                rows_out.append(
                    bench_row(
                        "margins",
                        case,
                        "hats_import",
                        n,
                        workers,
                        mt,
                        agree=within,
                        margin_rows=len(theirs_ids),
                        note="hats-import keeps whole border pixels (a superset); agree = every one of our margin rows is in theirs",
                    )
                )
            for d in (f"mg_ours_{n}", f"mg_hi_{n}"):
                shutil.rmtree(work / d, ignore_errors=True)
    return rows_out
