"""import suite: survey_engine's catalog + margin import against hats-import on the same mock files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from survey_engine.bench.measure import timed
from survey_engine.bench.suites.common import (
    BIG,
    bench_row,
    catalog_ids,
    hats_import_catalog,
    import_max_rows,
    local_cluster,
    mock_files,
    not_run_row,
    peer_allowed,
    peer_missing,
    profiled,
    repeat_plan,
)


def run(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    rows_out = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        with local_cluster(workers) as client:
            src = mock_files(n, work, client)
            max_rows = import_max_rows(n)
            prof: list = []

            def ours():
                out = work / f"se_import_{n}"
                shutil.rmtree(out, ignore_errors=True)
                run_import(
                    ImportArguments(
                        [str(src)], str(out), id_column="source_id", max_rows=max_rows, margin_arcsec=5.0
                    ),
                    client=client,
                    progress=False,
                )
                return catalog_ids(out)

            m_ours = timed(profiled(client, ours, prof), **plan)
            ours_ids = m_ours.pop("value")
            partitions = _partitions(work / f"se_import_{n}")
            rows_out.append(
                bench_row(
                    "import",
                    f"{n} rows",
                    "survey_engine",
                    n,
                    workers,
                    m_ours,
                    agree=len(ours_ids) == n,
                    profile=prof,
                    partitions=partitions,
                )
            )
            missing = peer_missing("hats_import", "hats-import")
            if missing:
                rows_out.append(bench_row("import", f"{n} rows", "hats_import", n, workers, note=missing))
            elif not peer_allowed("import", n, peer_limits):
                rows_out.append(not_run_row("import", f"{n} rows", "hats_import", n, workers, peer_limits))
            else:

                def theirs():
                    out = work / f"hi_import_{n}"
                    shutil.rmtree(out, ignore_errors=True)
                    hats_import_catalog(src, out, client, max_rows)
                    return catalog_ids(out)

                m_theirs = timed(theirs, **plan)
                same = np.array_equal(np.sort(ours_ids), np.sort(m_theirs.pop("value")))
                rows_out.append(
                    bench_row("import", f"{n} rows", "hats_import", n, workers, m_theirs, agree=bool(same))
                )
                shutil.rmtree(work / f"hi_import_{n}", ignore_errors=True)
            del ours_ids
            if n >= BIG:  # the biggest inputs are not needed again: keep the disk free
                shutil.rmtree(work / f"se_import_{n}", ignore_errors=True)
    return rows_out


def _partitions(path: Path) -> int | None:
    from survey_engine.catalog.catalog import open_catalog

    try:
        return int(open_catalog(path, margin=None).npartitions)
    except Exception:
        return None
