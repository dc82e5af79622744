"""e2e suite: one job spec end to end (import, photo-z training, prediction) on the mock sky."""

from __future__ import annotations

import shutil
from pathlib import Path

from survey_engine.bench.measure import timed
from survey_engine.bench.suites.common import bench_row, local_cluster


def run(sizes, repeats, workers, work: Path, peer_limits=None, model_rounds: int | None = None) -> list[dict]:
    """The job per size; ``model_rounds`` caps the photo-z model's boosting rounds (``bench --quick``)."""
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.jobs.run import run_job
    from survey_engine.jobs.spec import load_spec

    out_rows = []
    for n in sizes:
        spec_file = work / f"e2e_{n}.yaml"
        spec_file.write_text(
            f"source:\n  mock: {{rows: {n}, seed: 5}}\nstages:\n  - id: sky\n    import: {{max_rows: {max(10_000, n // 10)}, margin: 5}}\n"
            "  - id: model\n    train: {task: photoz, catalog: sky, features: [u-g, g-r, r-i, i-z, r], target: redshift, "
            f"where: \"obj_class == 'GALAXY'\"{f', rounds: {model_rounds}' if model_rounds else ''}}}\n"
            "  - id: zphot\n    predict: {model: model, catalog: sky}\n"
        )
        with local_cluster(workers) as client:

            def job():
                spec = load_spec(spec_file, base=work)
                shutil.rmtree(spec.workdir, ignore_errors=True)
                run_job(
                    spec, client=client, progress=False, echo=None, report=False
                )  # the stages, not the report
                return open_catalog(spec.workdir / "zphot").row_count()

            m = timed(job, repeats, warmup=0)
            out_rows.append(
                bench_row(
                    "e2e",
                    f"mock {n} rows: import + photo-z train + predict"
                    + (f" (rounds capped at {model_rounds})" if model_rounds else ""),
                    "survey_engine",
                    n,
                    workers,
                    m,
                    agree=m["value"] == n,
                )
            )
    return out_rows
