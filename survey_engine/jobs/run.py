"""Running a job spec: stages in order on one Dask cluster, each written to a temporary place and
published atomically, skipped on re-runs when its inputs and parameters are unchanged.

``WORKDIR/<id>`` holds each stage's output; ``WORKDIR/.state/<id>.json`` its fingerprint;
``WORKDIR/run.log`` and ``WORKDIR/run_summary.json`` tell what happened. A stage that fails
leaves the earlier outputs (and its own previous output) untouched; the next run redoes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from survey_engine.catalog.layout import atomic_write_text, check_inside, remove_tree, safe_child
from survey_engine.catalog.lock import output_lock
from survey_engine.errors import SurveyEngineError
from survey_engine.jobs.spec import JobSpec, JobSpecError, Stage

log = logging.getLogger("survey_engine.jobs")


def _fp(*parts) -> str:
    from survey_engine import __version__

    blob = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextlib.contextmanager
def job_client(spec: JobSpec, cluster: str | None = None, timeout: float = 60.0, connect_timeout: float = 15.0,
               security_config: str | None = None, min_workers: int | None = None):
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
            raise JobSpecError(f"{target}: a TLS scheduler needs credentials: --security CONFIG.yaml with a security: section")
        try:
            client = Client(target, timeout=connect_timeout, security=security) if security else Client(target, timeout=connect_timeout)
        except OSError as exc:
            raise JobSpecError(f"cannot reach the Dask scheduler at {target}: {exc}") from None
        want = int(min_workers or spec.cluster.get("min_workers") or 1)
        try:
            client.wait_for_workers(want, timeout=timeout)
        except TimeoutError:
            got = len(client.scheduler_info().get("workers", {}))
            client.close()
            raise JobSpecError(f"the scheduler at {target} has {got} workers after {timeout:g} s; the job wants at least {want}") from None
        try:
            yield client
        finally:
            client.close()
        return
    if target != "local":
        from survey_engine.jobs.clusters import hpc_client

        with hpc_client(target) as client:
            yield client
        return
    with dask_client(n_workers=spec.cluster.get("workers")) as client:
        yield client


def run_job(spec: JobSpec, cluster: str | None = None, client=None, progress: bool = True, echo=print,
            security_config: str | None = None, min_workers: int | None = None, report: bool = True) -> dict:
    """Run ``spec``'s stages in order in its workdir, holding ``WORKDIR.lock`` (a second run of a job
    into the same workdir stops at once with an error naming the first). The summary (also
    ``WORKDIR/run_summary.json``) gives each stage's seconds, peak memory and outputs; with ``report``,
    ``WORKDIR/report.html`` shows them."""
    with output_lock(spec.workdir, f"run {spec.path}"):
        return _run_job(spec, cluster, client, progress, echo, security_config, min_workers, report)


def _run_job(spec: JobSpec, cluster: str | None, client, progress: bool, echo, security_config: str | None,
             min_workers: int | None, report: bool) -> dict:
    work = spec.workdir
    work.mkdir(parents=True, exist_ok=True)
    (work / ".state").mkdir(exist_ok=True)
    handler = logging.FileHandler(work / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # the console gets ``echo``; the log file gets everything
    summary = {"job": spec.name, "spec": str(spec.path), "workdir": str(work), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": {}}
    status = "failed"
    try:
        ctx = contextlib.nullcontext(client) if client is not None else job_client(spec, cluster, security_config=security_config,
                                                                                            min_workers=min_workers)
        with ctx as client:
            nworkers = len(client.scheduler_info()["workers"])
            _say(echo, f"job {spec.name}: {len(spec.stages)} stages on {nworkers} workers ({client.scheduler.address})")
            if client.dashboard_link:
                _say(echo, f"  dashboard: {client.dashboard_link}")
            summary["cluster"] = {"scheduler": client.scheduler.address, "workers": nworkers, "dashboard": client.dashboard_link}
            cluster_obj = getattr(client, "cluster", None)
            if cluster_obj is not None and hasattr(cluster_obj, "job_script"):
                from survey_engine.jobs.clusters import job_ids

                summary["cluster"]["batch_jobs"] = job_ids(cluster_obj)
            outputs = {name: _source(name, kind, params, work, client, progress, echo) for name, (kind, params) in spec.sources.items()}
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
    if kind == "mock":
        from survey_engine.mock.sky import write_mock_sky
        from survey_engine.mock.surveys import write_survey

        survey, seed = src.get("survey", "sky"), src.get("seed", 42)
        what = "mock sky" if survey == "sky" else f"mock {survey} survey"

        def write(tmp: Path) -> dict:
            if survey == "sky":
                write_mock_sky(src["rows"], tmp, seed=seed, client=client, progress=progress)
                return {"rows": src["rows"], "mock": True}
            return {"rows": write_survey(survey, src["rows"], tmp, seed=seed, client=client, progress=progress), "mock": True}

        fp = _fp("mock", src.get("rows"), seed, *([survey] if survey != "sky" else []))
        return _generated_source(work, name, fp, write, echo, f"{what} (of a {src['rows']:,}-row sky)",
                                 lambda info: f"{what}, {info['rows']:,} rows (of a {src['rows']:,}-row sky)")
    if kind == "mock_lightcurves":
        from survey_engine.mock.lightcurves import write_mock_lightcurves

        seed, cadence = src.get("seed", 42), src.get("cadence", "dense")

        def write(tmp: Path) -> dict:
            counts = write_mock_lightcurves(src["objects"], tmp, seed=seed, cadence=cadence, client=client, progress=progress)
            return {**counts, "mock_lightcurves": True}

        fp = _fp("mock_lightcurves", src["objects"], seed, cadence)
        return _generated_source(work, name, fp, write, echo, f"mock light curves ({src['objects']:,} objects)",
                                 lambda info: f"{info['objects']:,} mock objects, {info['detections']:,} detections ({cadence})")
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
    atomic_write_text(work / ".state" / f"{sid}.json", json.dumps({"fingerprint": fp, **info}, indent=1, default=str))


def _publish(tmp: Path, out: Path, work: Path) -> None:
    """Swap ``tmp`` in as ``out``; the old output is removed only after the new one is in place.
    Both sit in the workdir ``work``, checked: nothing outside it is ever replaced or removed."""
    check_inside(tmp, work, "stage staging")
    check_inside(out, work, "stage output")
    if out.exists():
        old = out.with_name(f".old-{out.name}")
        remove_tree(old, work)
        os.replace(out, old)
        os.replace(tmp, out)
        remove_tree(old, work)
    else:
        os.replace(tmp, out)


def _run_stage(spec, stage: Stage, outputs: dict, work: Path, client, progress, echo, summary) -> tuple:
    p = stage.params
    refs = {k: outputs[v][1] for k, v in p.items() if isinstance(v, str) and v in outputs and k in ("catalog", "model", "left", "right", "objects", "detections")}
    # a stage that reads an earlier stage's output is redone when that output changed
    source_name = p.get("source") or (next(iter(spec.sources)) if stage.kind in ("import", "ingest") else None)
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
    if stage.kind not in ("import", "ingest"):  # those resume from their own staging; the rest start clean
        remove_tree(staging, work)
    staging.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _say(echo, f"  {stage.id} ({stage.kind}) ...")
    if stage.kind in ("import", "ingest"):
        p = {**p, "_source_name": source_name, "_source_kind": spec.sources[source_name][0]}
    try:
        from survey_engine.bench.measure import PeakMemory

        cpu0 = _cpu_seconds()
        with PeakMemory(interval=0.2) as memory:
            info = STAGE_RUNNERS[stage.kind](stage, p, outputs, tmp, client, progress)
        cpu = _cpu_seconds() - cpu0
    except Exception as exc:
        # keep a staging folder only where an import can resume from it; nothing half-made stays behind
        if stage.kind not in ("import", "ingest") or not any(f.is_file() for f in staging.rglob("*")):
            remove_tree(staging, work)
        if _scheduler_lost(client, exc):
            raise SchedulerLost(
                f"stage {stage.id!r} ({stage.kind}): lost the Dask scheduler ({type(exc).__name__}: {exc}); "
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
    _say(echo, f"  {stage.id} ({stage.kind}) -> {out} ({seconds:.1f} s) {json.dumps(info, default=str)[:200]}")
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

    from distributed.comm.core import CommClosedError

    if isinstance(exc, (CommClosedError, CancelledError, ConnectionError)):
        return True
    return getattr(client, "status", "running") not in ("running", "connecting")


def _path(outputs, name) -> str:
    return str(outputs[name][0])


def _stage_import(stage, p, outputs, tmp, client, progress):
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    src = outputs[p["_source_name"]][0]
    if p["_source_kind"] == "mock_lightcurves":  # the objects; their detections go to a lightcurves stage
        src = Path(src) / "objects"
    inputs = [str(src)] if not isinstance(src, list) else src
    id_col = p.get("id") or {"mock": "source_id", "mock_lightcurves": "object_id"}.get(p["_source_kind"])
    args = ImportArguments(inputs, str(tmp), ra_column=p.get("ra", "auto"), dec_column=p.get("dec", "auto"), id_column=id_col,
                           max_rows=p.get("max_rows", 1_000_000), highest_order=p.get("highest_order", 10),
                           margin_arcsec=p.get("margin", 5.0), name=stage.id)
    r = run_import(args, client=client, progress=progress)
    return {"rows": r.rows, "partitions": r.partitions, "margin_rows": r.margin_rows}


def _stage_ingest(stage, p, outputs, tmp, client, progress):
    from survey_engine.ingest.tap.arguments import TapIngestArguments
    from survey_engine.ingest.tap.run import run_ingest

    s = outputs[p["_source_name"]][0]
    args = TapIngestArguments(s["url"], s["table"], str(tmp), columns=s.get("columns"), where=s.get("where"),
                              ra_column=s.get("ra", "ra"), dec_column=s.get("dec", "dec"), id_column=s.get("id"),
                              order=s.get("order", 3), page_rows=s.get("page_rows", 100_000), pages_in_flight=s.get("pages_in_flight", 4),
                              paging=s.get("paging", "auto"), max_rows=p.get("max_rows", 1_000_000),
                              margin_arcsec=p.get("margin", 5.0), name=stage.id, token=os.environ.get("SURVEY_ENGINE_TAP_TOKEN"))
    r = run_ingest(args, client=client, progress=progress)
    return {"rows": r.rows, "pages": r.pages, "verified": r.verification.get("ok")}


def _stage_margin(stage, p, outputs, tmp, client, progress):
    from survey_engine.catalog.margin_build import build_margin

    shutil.copytree(_path(outputs, p["catalog"]), tmp, copy_function=os.link)
    build_margin(str(tmp), float(p["radius"]), client=client, progress=progress)
    return {"radius_arcsec": p["radius"]}


def _stage_crossmatch(stage, p, outputs, tmp, client, progress):
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.crossmatch import crossmatch
    from survey_engine.crossmatch.algorithms import DEFAULT_ALGORITHM
    from survey_engine.crossmatch.epochs import EpochSpec

    pm = p.get("pm_columns", ["pmra", "pmdec"])
    if len(pm) != 2:
        raise JobSpecError(f"stage {stage.id!r}: pm_columns takes two names (pmra, pmdec), got {pm}")
    side = {k: EpochSpec(p[k], pm[0], pm[1]) for k in ("left_epoch", "right_epoch") if k in p}
    left = open_catalog(_path(outputs, p["left"]))
    result = crossmatch(left, open_catalog(_path(outputs, p["right"])), float(p["radius"]),
                        how=p.get("how", "nearest"), k=p.get("k", 1), join=p.get("join", "inner"), exclude_self=p.get("self", False),
                        min_radius_arcsec=p.get("min_radius", 0.0), suffixes=tuple(p.get("suffixes", ["_1", "_2"])),
                        build_margin=p.get("build_margin", False), algorithm="gpu" if p.get("gpu") else p.get("algorithm", DEFAULT_ALGORITHM),
                        epoch=p.get("epoch"), left_epoch=side.get("left_epoch"), right_epoch=side.get("right_epoch"), client=client)
    out = result.write(tmp, client=client, progress=progress)
    matched = open_catalog(out)
    info = {"rows": matched.row_count()}
    if p.get("how", "nearest") in ("nearest", "one-to-one"):
        # one row per matched left row: the share of the left catalog that found a counterpart
        pairs = int(matched.select_columns(["sep_arcsec"]).to_dask()["sep_arcsec"].count().compute())
        info.update({"matched": pairs, "left_rows": left.row_count(), "match_rate": round(pairs / max(left.row_count(), 1), 5)})
    if "epoch" in p:
        info["epoch"] = p["epoch"]
    return info


def _stage_train(stage, p, outputs, tmp, client, progress):
    catalog = _path(outputs, p["catalog"])
    task = p["task"]
    if task in ("photoz", "classify"):
        from survey_engine.ml.supervised import MEMBERS, TrainOptions, train

        opts = TrainOptions(task, p["features"], target=p.get("target"), label=p.get("label"), seed=p.get("seed", 42),
                            test_fraction=p.get("test_fraction", 0.2), cv=p.get("cv", 0), search=p.get("search", False),
                            baselines=p.get("baselines", False), gpu=p.get("gpu", False), ebv_column=p.get("ebv"),
                            missing=p.get("missing", "nan"), where=p.get("where"), members=p.get("members", MEMBERS),
                            text_as_missing="missing" in p, magnitude=p.get("mag_column"), refit=not p.get("no_refit", False),
                            params={k: p[k] for k in ("rounds", "eta") if k in p})  # boosting rounds / learning rate
        r = train(catalog, opts, str(tmp), client=client, progress=progress)
        keys = ("n", "sigma_nmad", "bias", "outlier_rate_015") if task == "photoz" else ("n", "accuracy", "macro_f1")
        return {"held_out": {k: r["test"][k] for k in keys}}
    from survey_engine.ml.unsupervised import train_anomaly, train_pca

    if task == "anomaly":
        return train_anomaly(catalog, p["features"], str(tmp), seed=p.get("seed", 42), ebv=p.get("ebv"), client=client)
    return train_pca(catalog, p["features"], str(tmp), n_components=p.get("components", 3), ebv=p.get("ebv"), client=client)


def _stage_features(stage, p, outputs, tmp, client, progress):
    """A catalog with the named features as columns (plus the columns in ``keep``, default all)."""
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.features.spec import FeatureError, FeatureSpec

    cat = open_catalog(_path(outputs, p["catalog"]))
    spec = FeatureSpec(p["features"], ebv_column=p.get("ebv"), missing=p.get("missing", "nan"),
                       ra_column=cat.ra_column, dec_column=cat.dec_column)
    try:
        spec.plan(cat.column_names())
    except FeatureError as exc:
        raise FeatureError(f"stage {stage.id!r}: {exc}") from None
    keep = p.get("keep")
    out = cat.map_partitions(_AddFeatures(spec, keep, cat.ra_column, cat.dec_column)).write(tmp, client=client, progress=progress)
    return {"features": list(spec.features), "rows": open_catalog(out).row_count()}


class _AddFeatures:
    def __init__(self, spec, keep, ra, dec):
        self.spec, self.keep, self.ra, self.dec = spec, keep, ra, dec

    def __call__(self, df):
        import pandas as pd

        base = df if self.keep is None else df[[c for c in dict.fromkeys([self.ra, self.dec, *self.keep]) if c in df.columns]]
        feats = self.spec.compute(df)
        return pd.concat([base.drop(columns=[c for c in feats.columns if c in base.columns]), feats], axis=1)


def _stage_predict(stage, p, outputs, tmp, client, progress):
    from survey_engine.ml.apply import predict

    predict(_path(outputs, p["model"]), _path(outputs, p["catalog"]), str(tmp), client=client, progress=progress,
            missing=p.get("missing"))
    return {}


def _stage_evaluate(stage, p, outputs, tmp, client, progress):
    from survey_engine.ml.supervised import evaluate

    m = evaluate(_path(outputs, p["model"]), _path(outputs, p["catalog"]), client=client, truth=p.get("truth"), where=p.get("where"))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "metrics.json").write_text(json.dumps(m, indent=1, default=float))
    keys = ("n", "sigma_nmad", "accuracy", "macro_f1")
    return {k: m[k] for k in keys if k in m}


def _stage_cluster(stage, p, outputs, tmp, client, progress):
    from survey_engine.ml.cluster import cluster_catalog

    params = {k: p[k] for k in ("min_cluster_size", "min_samples", "eps", "max_cluster_fraction", "n_clusters") if k in p}
    s = cluster_catalog(_path(outputs, p["catalog"]), p["features"], p.get("method", "hdbscan"), str(tmp), id_column=p.get("id"),
                        params=params, client=client, progress=progress, where=p.get("where"))
    return {"n_clusters": s["n_clusters"], "noise": s["noise"], "largest": [c["members"] for c in s["clusters"][:5]]}


def _stage_lightcurves(stage, p, outputs, tmp, client, progress):
    from survey_engine.ingest.lightcurves import LightcurveArguments, attach_lightcurves

    src = outputs[p["detections"]][0]
    detections = [str(Path(src) / "detections")] if isinstance(src, Path) else [str(s) for s in src]
    keys = ("id", "object_id", "time", "mag", "err", "band", "keep", "lc_column", "require_objects")
    args = LightcurveArguments(_path(outputs, p["objects"]), detections, str(tmp), **{k: p[k] for k in keys if k in p})
    r = attach_lightcurves(args, client=client, progress=progress)
    return {"objects": r.objects, "detections": r.detections, "unmatched_detections": r.unmatched_detections}


def _stage_variability(stage, p, outputs, tmp, client, progress):
    from survey_engine.features.variability import VariabilitySpec, variability_catalog

    spec = VariabilitySpec(**{k: p[k] for k in ("bands", "min_epochs", "min_period", "max_period") if k in p})
    r = variability_catalog(_path(outputs, p["catalog"]), str(tmp), spec, lc_column=p.get("lc_column", "lc"),
                            client=client, progress=progress)
    return {"rows": r.rows, "features": len(r.columns)}


STAGE_RUNNERS = {"import": _stage_import, "ingest": _stage_ingest, "margin": _stage_margin, "crossmatch": _stage_crossmatch,
                 "train": _stage_train, "features": _stage_features, "predict": _stage_predict, "evaluate": _stage_evaluate, "cluster": _stage_cluster,
                 "lightcurves": _stage_lightcurves, "variability": _stage_variability}
