"""Running a job spec: stages in order on one Dask cluster, each written to a temporary place and
published atomically, skipped on re-runs when its inputs and parameters are unchanged.

``WORKDIR/<id>`` holds each stage's output; ``WORKDIR/.state/<id>.json`` its fingerprint;
``WORKDIR/run.log`` and ``WORKDIR/run_summary.json`` tell what happened. A stage that fails
leaves the earlier outputs (and its own previous output) untouched; the next run redoes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path

from survey_engine.catalog.layout import atomic_write_text, publish_folder, remove_tree, safe_child
from survey_engine.catalog.lock import output_lock
from survey_engine.errors import SurveyEngineError
from survey_engine.jobs.spec import JobSpec, JobSpecError, Stage

log = logging.getLogger("survey_engine.jobs")


def _fp(*parts) -> str:
    from survey_engine.version import __version__

    blob = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextlib.contextmanager
def job_client(
    spec: JobSpec,
    cluster: str | None = None,
    timeout: float = 60.0,
    connect_timeout: float = 15.0,
    security_config: str | None = None,
    min_workers: int | None = None,
):
    """The Dask client a job runs on: ``local`` (default), ``tcp://`` / ``tls://host:port`` of a
    running scheduler (TLS credentials from the ``security:`` section of ``security_config``),
    or a dask-jobqueue cluster (``slurm``, ``pbs``, a config file).

    On a running scheduler the job waits up to ``timeout`` s for ``min_workers`` workers (default 1,
    or the spec's ``cluster.min_workers``): workers started beside the scheduler join a moment later,
    and a job that starts with fewer places its partitions on fewer machines."""
    from distributed import Client

    from survey_engine.runtime import dask_client

    target = cluster or spec.cluster.get("address") or spec.cluster.get("kind") or "local"
    security_config = security_config or spec.cluster.get("config")
    if target.startswith(("tcp://", "tls://")):
        from survey_engine.jobs.clusters import load_security

        security = load_security(Path(security_config)) if security_config else None
        if target.startswith("tls://") and security is None:
            raise JobSpecError(
                f"{target}: a TLS scheduler needs credentials: --security CONFIG.yaml with a security: section"
            )
        try:
            client = (
                Client(target, timeout=connect_timeout, security=security)
                if security
                else Client(target, timeout=connect_timeout)
            )
        except OSError as exc:
            raise JobSpecError(f"cannot reach the Dask scheduler at {target}: {exc}") from None
        want = int(min_workers or spec.cluster.get("min_workers") or 1)
        try:
            client.wait_for_workers(want, timeout=timeout)
        except TimeoutError:
            got = len(client.scheduler_info().get("workers", {}))
            client.close()
            raise JobSpecError(
                f"the scheduler at {target} has {got} workers after {timeout:g} s; the job wants at least {want}"
            ) from None
        from survey_engine.runtime import close_client, quiet_distributed_logs

        quiet_distributed_logs()  # as on a LocalCluster: no INFO lines (e.g. "Batched Comm Closed" + traceback)
        quiet = _CancelledReconnect()
        logs = [logging.getLogger("distributed.client"), logging.getLogger("tornado.application")]
        for log_ in logs:
            log_.addFilter(quiet)
        try:
            yield client
        finally:
            close_client(client)
            for log_ in logs:
                log_.removeFilter(quiet)
        return
    if target != "local":
        from survey_engine.jobs.clusters import hpc_client

        with hpc_client(target) as client:
            yield client
        return
    with dask_client(n_workers=spec.cluster.get("workers")) as client:
        yield client


class _CancelledReconnect(logging.Filter):
    """Drops distributed's ERRORs when the scheduler went away (a reconnect cancelled as the client
    closes, or tornado's for a send on the closed comm, with tracebacks; "Failed to reconnect to
    scheduler after 15.00 seconds, closing client"): the job says so itself, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from distributed.comm.core import CommClosedError

        from survey_engine.runtime import is_verbose

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError | CommClosedError):  # tornado: a send on the closed comm
            return is_verbose()
        return is_verbose() or not str(record.msg).startswith("Failed to reconnect to scheduler")


def run_job(
    spec: JobSpec,
    cluster: str | None = None,
    client=None,
    progress: bool = True,
    echo=print,
    security_config: str | None = None,
    min_workers: int | None = None,
    report: bool = True,
) -> dict:
    """Run ``spec``'s stages in order in its workdir, holding ``WORKDIR.lock`` (a second run of a job
    into the same workdir stops at once with an error naming the first). The summary (also
    ``WORKDIR/run_summary.json``) gives each stage's seconds, peak memory and outputs; with ``report``,
    ``WORKDIR/report.html`` shows them."""
    from survey_engine.catalog.storage import storage_options_given

    with output_lock(spec.workdir, f"run {spec.path}"), storage_options_given(spec.storage_options or None):
        return _run_job(spec, cluster, client, progress, echo, security_config, min_workers, report)


def _run_job(
    spec: JobSpec,
    cluster: str | None,
    client,
    progress: bool,
    echo,
    security_config: str | None,
    min_workers: int | None,
    report: bool,
) -> dict:
    work = spec.workdir
    work.mkdir(parents=True, exist_ok=True)
    (work / ".state").mkdir(exist_ok=True)
    handler = logging.FileHandler(work / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # the console gets ``echo``; the log file gets everything
    summary = {
        "job": spec.name,
        "spec": str(spec.path),
        "workdir": str(work),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "stages": {},
    }
    status = "failed"
    try:
        ctx = (
            contextlib.nullcontext(client)
            if client is not None
            else job_client(spec, cluster, security_config=security_config, min_workers=min_workers)
        )
        with ctx as client:
            nworkers = len(client.scheduler_info()["workers"])
            _say(
                echo,
                f"job {spec.name}: {len(spec.stages)} stages on {nworkers} workers ({client.scheduler.address})",
            )
            if client.dashboard_link:
                _say(echo, f"  dashboard: {client.dashboard_link}")
            summary["cluster"] = {
                "scheduler": client.scheduler.address,
                "workers": nworkers,
                "dashboard": client.dashboard_link,
            }
            cluster_obj = getattr(client, "cluster", None)
            if cluster_obj is not None and hasattr(cluster_obj, "job_script"):
                from survey_engine.jobs.clusters import job_ids

                summary["cluster"]["batch_jobs"] = job_ids(cluster_obj)
            outputs = {
                name: _source(name, kind, params, work, client, progress, echo)
                for name, (kind, params) in spec.sources.items()
            }
            for stage in spec.stages:
                outputs[stage.id] = _run_stage(spec, stage, outputs, work, client, progress, echo, summary)
            if report:
                from survey_engine.jobs.report import write_report

                summary["report"] = str(write_report(spec, summary, client=client))
                _say(echo, f"  report: {summary['report']}")
        status = "ok"
        return summary
    except Exception as exc:
        summary["error"] = str(exc)
        log.error("job failed: %s", exc)
        raise
    finally:
        summary["status"] = status
        summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_text(work / "run_summary.json", json.dumps(summary, indent=1, default=str))
        log.removeHandler(handler)
        handler.close()


def _say(echo, text: str) -> None:
    log.info(text)
    if echo:
        echo(text)


def _source(name: str, kind: str, src: dict, work: Path, client, progress, echo):
    if kind in ("mock", "mock_lightcurves"):  # generated by the declared command of the same name
        from survey_engine.arguments import build
        from survey_engine.registry import stages

        entry = next(s for s in stages().values() if s.source == kind)
        seed = src.get("seed", 42)
        if kind == "mock":
            survey = src.get("survey", "sky")
            what = (
                "mock sky" if survey == "sky" else f"mock {survey} survey"
            ) + f" (of a {src['rows']:,}-row sky)"
            fp = _fp("mock", src.get("rows"), seed, *([survey] if survey != "sky" else []))

            def made(info: dict) -> str:
                return what.replace(" (of", f", {info['rows']:,} rows (of", 1)
        else:
            cadence = src.get("cadence", "dense")
            what = f"mock light curves ({src['objects']:,} objects)"
            fp = _fp("mock_lightcurves", src["objects"], seed, cadence)

            def made(info: dict) -> str:
                return f"{info['objects']:,} mock objects, {info['detections']:,} detections ({cadence})"

        def write(tmp: Path) -> dict:
            return entry.run(
                build(entry.arguments, {**src, "out": str(tmp)}), client=client, progress=progress
            ).info

        return _generated_source(work, name, fp, write, echo, what, made)
    if kind == "files":
        stats = [[p, os.path.getsize(p) if os.path.isfile(p) else None] for p in src["paths"]]
        return src["paths"], _fp("files", stats)
    if kind == "catalog":
        from survey_engine.ml.data import open_table

        return src["path"], open_table(src["path"]).fingerprint
    # how many pages run at once does not change the rows; "workers" was its old name
    return src, _fp("tap", {k: v for k, v in src.items() if k not in ("pages_in_flight", "workers")})


def _generated_source(work: Path, name: str, fp: str, write, echo, unchanged: str, made) -> tuple[Path, str]:
    """A source the job generates (a mock sky or survey, mock light curves): reused while its
    fingerprint holds, else written to ``.tmp-<name>`` by ``write(tmp) -> info`` and published."""
    out = safe_child(work, name, "source name")
    if _state(work, name).get("fingerprint") == fp and out.exists():
        _say(echo, f"  {name}: {unchanged} unchanged, reused")
        return out, fp
    t0 = time.perf_counter()
    tmp = work / f".tmp-{name}"
    remove_tree(tmp, work)
    info = write(tmp)
    _publish(tmp, out, work)
    _save_state(work, name, fp, info)
    _say(echo, f"  {name}: {made(info)} -> {out} ({time.perf_counter() - t0:.1f} s)")
    return out, fp


def _state(work: Path, sid: str) -> dict:
    f = work / ".state" / f"{sid}.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _save_state(work: Path, sid: str, fp: str, info: dict) -> None:
    atomic_write_text(
        work / ".state" / f"{sid}.json", json.dumps({"fingerprint": fp, **info}, indent=1, default=str)
    )


# stages whose staging folder holds done-markers a re-run resumes from (an import's or ingest's resume
# plan, a cross-match's finished partitions): kept when the stage fails
RESUMABLE_KINDS = ("import", "ingest", "crossmatch")


def _publish(tmp: Path, out: Path, work: Path) -> None:
    """Swap ``tmp`` in as ``out``, both inside the workdir ``work`` (see ``layout.publish_folder``)."""
    publish_folder(tmp, out, work)


def _run_stage(spec, stage: Stage, outputs: dict, work: Path, client, progress, echo, summary) -> tuple:
    p = stage.params
    refs = {
        k: outputs[v][1]
        for k, v in p.items()
        if isinstance(v, str)
        and v in outputs
        and k in ("catalog", "model", "left", "right", "objects", "detections")
    }
    # a stage that reads an earlier stage's output is redone when that output changed
    source_name = p.get("source") or (
        next(iter(spec.sources)) if stage.kind in ("import", "ingest") else None
    )
    source_fp = outputs[source_name][1] if source_name else None
    fp = _fp(stage.kind, p, refs, source_fp)
    out = safe_child(work, stage.id, f"stage {stage.id!r}: id")
    state = _state(work, stage.id)
    if state.get("fingerprint") == fp and out.exists():
        _say(echo, f"  {stage.id} ({stage.kind}): unchanged, skipped")
        # what the run that made it measured, for the report
        previous = {k: v for k, v in state.items() if k not in ("fingerprint", "kind")}
        summary["stages"][stage.id] = {**previous, "kind": stage.kind, "skipped": True, "path": str(out)}
        return out, fp
    # a deterministic temporary place, so an interrupted import resumes from its own done-markers;
    # the output itself is already called <id> there (catalog names inside it are the stage id)
    staging = work / f".tmp-{stage.id}-{fp[:8]}"
    tmp = staging / stage.id
    if stage.kind not in RESUMABLE_KINDS:  # those resume from their own staging; the rest start clean
        remove_tree(staging, work)
    staging.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _say(echo, f"  {stage.id} ({stage.kind}) ...")
    if stage.kind in ("import", "ingest"):
        p = {**p, "_source_name": source_name, "_source_kind": spec.sources[source_name][0]}
    try:
        from survey_engine.runtime import PeakMemory

        cpu0 = _cpu_seconds()
        with PeakMemory(interval=0.2) as memory:
            info = _run_declared(stage, p, outputs, tmp, client, progress)
        cpu = _cpu_seconds() - cpu0
    except Exception as exc:
        # keep a staging folder only where the stage can resume from it; nothing half-made stays behind
        if stage.kind not in RESUMABLE_KINDS or not any(f.is_file() for f in staging.rglob("*")):
            remove_tree(staging, work)
        if _scheduler_lost(client, exc):
            raise SchedulerLost(
                f"stage {stage.id!r} ({stage.kind}): lost the Dask scheduler ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                "earlier outputs are kept: run the same command again (on a working cluster) to resume"
            ) from exc
        raise
    _publish(tmp, out, work)
    remove_tree(staging, work)
    seconds = round(time.perf_counter() - t0, 2)
    # summed resident memory of this process and its children (local Dask workers), sampled every 0.2 s
    # and the CPU time they spent (less sensitive than wall time to a machine shared with others)
    info = {"peak_memory_mib": round(memory.peak / 2**20, 1), "cpu_seconds": round(cpu, 1), **info}
    _save_state(work, stage.id, fp, {"kind": stage.kind, "seconds": seconds, **info})
    summary["stages"][stage.id] = {"kind": stage.kind, "seconds": seconds, "path": str(out), **info}
    _say(
        echo, f"  {stage.id} ({stage.kind}) -> {out} ({seconds:.1f} s) {json.dumps(info, default=str)[:200]}"
    )
    return out, fp


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its children (local Dask workers) so far."""
    import psutil

    me, total = psutil.Process(), 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class SchedulerLost(SurveyEngineError, RuntimeError):
    """The cluster went away under a running stage."""


def _scheduler_lost(client, exc: Exception) -> bool:
    from asyncio import CancelledError
    from concurrent.futures import CancelledError as FutureCancelled

    from distributed.comm.core import CommClosedError

    # a future the client cancelled because its scheduler went away is a concurrent.futures one
    if isinstance(exc, (CommClosedError, CancelledError, FutureCancelled, ConnectionError)):
        return True
    return getattr(client, "status", "running") not in ("running", "connecting")


def stage_values(stage: Stage, p: dict, outputs: dict, tmp: Path) -> dict:
    """The public values of a job stage's declared arguments: its YAML keys, with what the job supplies
    itself (earlier outputs for references, the staging path for the output, the stage id as the
    catalog name, an import's / ingest's inputs from its source). The CLI builds the same dict from
    its flags (``cli.command_values``); ``arguments.build`` turns either into the stage's Arguments."""
    from survey_engine.arguments import faces
    from survey_engine.registry import stages

    entry = stages()[stage.kind]
    values = {}
    source_name = p.get("_source_name")
    for face in faces(entry.arguments):
        key, job = face.yaml_key, face.param.job
        if job == "output":
            values[face.name] = str(tmp)
        elif job and job.startswith("output_file:"):
            values[face.name] = str(tmp / job.split(":", 1)[1])
        elif job == "stage_id":
            values[face.name] = stage.id
        elif job == "source" and source_name is not None:
            src = outputs[source_name][0]
            if key is None:  # the files the source made or names
                if (
                    p["_source_kind"] == "mock_lightcurves"
                ):  # the objects; their detections go to a lightcurves stage
                    src = Path(src) / "objects"
                values[face.name] = [str(s) for s in src] if isinstance(src, list) else [str(src)]
            elif isinstance(src, dict) and key in src:  # a TAP source's keys
                values[face.name] = src[key]
        elif key is not None and key in p:
            value = p[key]
            if face.param.ref in ("catalog", "model"):
                value = str(outputs[value][0])
            elif face.param.ref == "source":  # detections: the files of a files or mock_lightcurves source
                src = outputs[value][0]
                value = [str(Path(src) / "detections")] if isinstance(src, Path) else [str(s) for s in src]
            values[face.name] = value
    if stage.kind == "import" and "id" not in p:  # the mock sources' id columns
        values["id"] = {"mock": "source_id", "mock_lightcurves": "object_id"}.get(p["_source_kind"])
    return values


def _run_declared(stage: Stage, p: dict, outputs: dict, tmp: Path, client, progress: bool) -> dict:
    """Run a stage through the same declared Arguments and ``run`` as its command; the summary's dict."""
    from survey_engine.arguments import build
    from survey_engine.registry import stages

    entry = stages()[stage.kind]
    args = build(entry.arguments, stage_values(stage, p, outputs, tmp))
    return entry.run(args, client=client, progress=progress).info
