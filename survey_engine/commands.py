"""Every command of ``survey-engine``: the registry's stages (``registry.stages()``) plus the
commands that run job specs (``run``, ``submit``, the ``demo``) and benchmarks (``bench``). Those
sit above the job runner, which itself reads the registry; the CLI and the Python API read this."""

from __future__ import annotations

from functools import cache

from survey_engine.registry import Stage, stages

ORDER = (
    "import",
    "ingest",
    "margin",
    "mock",
    "demo",
    "crossmatch",
    "features",
    "train",
    "predict",
    "evaluate",
    "cluster",
    "run",
    "submit",
    "bench",
    "lightcurves",
    "variability",
    "mock-lightcurves",
    "info",
    "verify",
)


@cache
def commands() -> dict[str, Stage]:
    """Every command by name, in the order ``survey-engine --help`` lists them."""
    from survey_engine.bench.arguments import BenchArguments, run_bench_command
    from survey_engine.jobs.arguments import (
        DemoArguments,
        RunArguments,
        SubmitArguments,
        run_demo_command,
        run_run,
    )

    above = [
        Stage(
            "demo",
            "the main job end to end on two mock surveys of one sky: catalogs, cross-match with proper "
            "motions, photo-z, classification, open clusters, anomalies, report.html",
            DemoArguments,
            run_demo_command,
            cluster=False,
            storage=False,
        ),
        Stage(
            "run",
            "run a job spec (YAML) on a local cluster or a running scheduler",
            RunArguments,
            run_run,
            cluster=False,
        ),
        Stage(
            "submit",
            "run a job spec on a running Dask scheduler (same as run --cluster tcp://...)",
            SubmitArguments,
            run_run,
            cluster=False,
        ),
        Stage(
            "bench",
            "benchmark suites with peers side by side: report.json, report.html, summary.md; or `bench "
            "compare OLD NEW`",
            BenchArguments,
            run_bench_command,
            cluster=False,
            progress=False,
            storage=False,
        ),
    ]
    every = {**stages(), **{s.kind: s for s in above}}
    return {
        kind: every[kind]
        for kind in sorted(every, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))
    }
