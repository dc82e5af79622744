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
    """A margin built for an imported catalog: ours against hats-import's margin cache on the same
    catalog; agree = every one of our margin rows is in hats-import's (a superset)."""
    rows_out = []
    for n in sizes:
        with local_cluster(workers) as client:
            rows_out += _size_rows(n, repeat_plan(n, repeats), client, workers, work, peer_limits, radius)
        for d in (f"mg_ours_{n}", f"mg_hi_{n}"):
            shutil.rmtree(work / d, ignore_errors=True)
    return rows_out


def _base_catalog(n: int, work: Path, client) -> Path:
    """The same catalog (no margin) for both tools, imported once per size."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    src = mock_files(n, work, client)
    base = work / f"mg_base_{n}"
    if not base.exists():
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
    return base


def _size_rows(
    n: int, plan: dict, client, workers: int, work: Path, peer_limits, radius: float
) -> list[dict]:
    from survey_engine.catalog.margin_build import build_margin

    case = f'{n} rows, {radius:g}" margin'
    base = _base_catalog(n, work, client)
    prof: list = []

    def ours():
        cat = work / f"mg_ours_{n}"
        shutil.rmtree(cat, ignore_errors=True)
        shutil.copytree(base, cat)
        path = build_margin(cat, radius, client=client, progress=False)
        return ids_in_files(path)

    m = timed(profiled(client, ours, prof), **plan)
    ours_ids = m.pop("value")
    # exactness: every margin row is within the radius of its partition (checked by the catalog tests
    # against brute force); here: the rows agree with hats-import's superset
    ours_row = bench_row(
        "margins",
        case,
        "survey_engine",
        n,
        workers,
        m,
        agree=len(ours_ids) > 0,
        profile=prof,
        margin_rows=len(ours_ids),
    )
    missing = peer_missing("hats_import", "hats-import")
    if missing:
        return [ours_row, bench_row("margins", case, "hats_import", n, workers, note=missing)]
    if not peer_allowed("margins", n, peer_limits):
        return [ours_row, not_run_row("margins", case, "hats_import", n, workers, peer_limits)]
    mt = timed(lambda: _hats_import_margin(base, work, n, radius, client), **plan)
    theirs_ids = mt.pop("value")
    ours_row["agree"] = within = bool(np.isin(ours_ids, theirs_ids).all()) and len(ours_ids) > 0
    return [
        ours_row,
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
        ),
    ]


def _hats_import_margin(base: Path, work: Path, n: int, radius: float, client) -> np.ndarray:
    """The peer: hats-import's margin cache pipeline on the same catalog; the ids of its margin rows."""
    from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
    from hats_import.pipeline import pipeline_with_client

    from survey_engine.catalog.catalog import open_catalog

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
