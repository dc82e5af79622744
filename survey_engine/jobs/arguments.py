"""Arguments and runs of the job commands: ``run`` and ``submit`` (a job spec) and ``demo`` (the
shipped job spec); declared once, see ``survey_engine.arguments``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from survey_engine.arguments import AT_LEAST_1, StageResult, param, positive_int

WORKERS = "local Dask workers, one process and thread each (default: one per core, at most 8)"


@dataclass
class JobRunArguments:
    """What ``run`` and ``submit`` share: the spec, where its outputs go, how long to wait for workers."""

    job: str = param(help="job spec, e.g. jobs/photoz.yaml", role="positional")
    workdir: str | None = param(None, "override the spec's workdir", kw_only=True)
    security: str | None = param(
        None,
        "cluster config whose security: section holds TLS credentials (for tls:// schedulers)",
        kw_only=True,
    )
    min_workers: int | None = param(
        None,
        "running scheduler: wait (up to 60 s) until this many workers have joined (default 1)",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
        kw_only=True,
    )
    check: bool = param(False, "validate the spec and stop", type=bool, kw_only=True)


@dataclass
class RunArguments(JobRunArguments):
    """Run a job spec (YAML) on a local Dask cluster, a running scheduler or an HPC batch system."""

    cluster: str | None = param(
        None,
        "local (default), tcp://HOST:PORT of a running scheduler, slurm / pbs "
        "(cluster/slurm.yaml, cluster/pbs.yaml) or a cluster config FILE.yaml",
    )


@dataclass
class SubmitArguments(JobRunArguments):
    """Run a job spec on a running Dask scheduler (same as run --cluster tcp://...)."""

    scheduler: str = param(help="tcp://HOST:PORT", required=True)


def run_run(args: RunArguments | SubmitArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.jobs.run import run_job
    from survey_engine.jobs.spec import load_spec

    spec = load_spec(args.job)
    if args.workdir:
        spec.workdir = Path(args.workdir).resolve()
    outputs = {s.id: spec.workdir / s.id for s in spec.stages}
    if args.check:
        line = f"{args.job}: valid ({len(spec.stages)} stages: {', '.join(s.id for s in spec.stages)}); outputs in {spec.workdir}"
        return StageResult(line, {"status": "valid"}, spec.workdir, (spec, outputs, {}))
    cluster = getattr(args, "cluster", None) or getattr(args, "scheduler", None)
    if client is None and cluster is None:
        from distributed import get_client

        try:  # the current client (in a notebook), else the spec's cluster
            client = get_client()
        except ValueError:
            pass
    summary = run_job(
        spec,
        cluster=cluster,
        client=client,
        progress=progress,
        security_config=args.security,
        min_workers=args.min_workers,
    )
    line = f"job {spec.name}: done; summary in {spec.workdir / 'run_summary.json'}"
    return StageResult(
        line,
        {"status": summary.get("status", "ok")},
        spec.workdir,
        (spec, outputs, summary),
        exit_code=0 if summary else 1,
    )


@dataclass
class DemoArguments:
    """The main job end to end on two mock surveys of one sky."""

    rows: int = param(
        600_000,
        "rows of the mock sky both surveys are cut from (default 600,000)",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
    )
    out: str = param(
        "survey-engine-demo",
        "work directory (default survey-engine-demo): every stage's output, "
        "run_summary.json, report.html; a re-run reuses finished stages",
        role="output",
    )
    seed: int = param(42, "seed of the mock sky (default 42)", type=int)
    workers: int | None = param(None, WORKERS, type=int, check=AT_LEAST_1, parse=positive_int)


def run_demo_command(args: DemoArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.jobs.demo import run_demo

    summary = run_demo(
        rows=args.rows, out=args.out, seed=args.seed, workers=args.workers, client=client, progress=progress
    )
    return StageResult("", {"status": summary.get("status", "ok")}, Path(args.out), summary)
