"""scaling suite: strong (fixed data, 1 -> N workers) and weak (data grows with workers) scaling of import."""

from __future__ import annotations

import shutil
from pathlib import Path

from survey_engine.bench.measure import timed
from survey_engine.bench.suites.common import bench_row, local_cluster, mock_files


def run(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out_rows = []
    n = sizes[0]
    for kind in ("strong", "weak"):
        base = None
        for w in range(1, workers + 1):
            rows = n if kind == "strong" else n * w // workers
            with local_cluster(w) as client:
                src = mock_files(rows, work, client)

                def job():
                    out = work / f"scale_{kind}_{w}"
                    shutil.rmtree(out, ignore_errors=True)
                    return run_import(
                        ImportArguments(
                            [str(src)],
                            str(out),
                            id_column="source_id",
                            max_rows=max(10_000, rows // 20),
                            margin_arcsec=5.0,
                        ),
                        client=client,
                        progress=False,
                    ).rows

                m = timed(job, repeats)
            base = base or m["seconds"]
            eff = base / m["seconds"] / w if kind == "strong" else base / m["seconds"]
            out_rows.append(
                bench_row(
                    "scaling",
                    f"{kind} import",
                    "survey_engine",
                    rows,
                    w,
                    m,
                    agree=m["value"] == rows,
                    efficiency=eff,
                    partitions=None,
                )
            )
    return out_rows
