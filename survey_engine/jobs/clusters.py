"""HPC clusters through dask-jobqueue: one module-level function per scheduler kind over a
shared config reader (``cluster/slurm.yaml``, ``cluster/pbs.yaml`` or any file of that shape).

A config holds a ``jobqueue: {slurm|pbs: {...}}`` section (dask-jobqueue's keys) and a ``scale``
section (jobs, wait_timeout). Every value can be overridden by SURVEY_ENGINE_CLUSTER_<KEY>. The
cluster is scaled to a fixed number of jobs (no adaptive scaling: XGBoost training must not lose
workers), and the workers are *waited for*: sbatch/qsub refusals are otherwise only logged by
dask-jobqueue, so on a timeout the job script is test-submitted to get the scheduler's reason.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from survey_engine.errors import SurveyEngineError

KINDS = ("slurm", "pbs")
REPO_CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"
PACKAGED_CLUSTER_DIR = Path(__file__).resolve().parent / "cluster_configs"  # the same files, in a wheel


class ClusterConfigError(SurveyEngineError, ValueError):
    pass


def config_path(target: str) -> Path:
    """``slurm`` / ``pbs`` -> the shipped config; anything else is a path to a config file."""
    if target in KINDS:
        for base in (Path.cwd() / "cluster", REPO_CLUSTER_DIR, PACKAGED_CLUSTER_DIR):
            if (base / f"{target}.yaml").exists():
                return base / f"{target}.yaml"
        raise ClusterConfigError(
            f"--cluster {target}: no cluster/{target}.yaml here, in the survey_engine checkout or in the installed package"
        )
    path = Path(target)
    if not path.exists():
        raise ClusterConfigError(f"--cluster {target}: no such cluster config file")
    return path


def load_config(path: Path) -> tuple[str, dict, dict]:
    """(kind, dask-jobqueue keyword arguments, scale settings) from a config file plus environment."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ClusterConfigError(f"{path}: not valid YAML: {exc}") from None
    jq = data.get("jobqueue")
    if not isinstance(jq, dict) or len(jq) != 1 or next(iter(jq)) not in KINDS:
        raise ClusterConfigError(f"{path}: needs a 'jobqueue' section with exactly one of {', '.join(KINDS)}")
    kind, section = next(iter(jq.items()))
    unknown = set(data) - {"jobqueue", "scale", "security"}
    if unknown:
        raise ClusterConfigError(
            f"{path}: unknown top-level key(s) {sorted(unknown)} (known: jobqueue, scale, security)"
        )
    kwargs = {k.replace("-", "_"): v for k, v in (section or {}).items()}
    for key, value in os.environ.items():
        if key.startswith("SURVEY_ENGINE_CLUSTER_"):
            name = key[len("SURVEY_ENGINE_CLUSTER_") :].lower()
            if name in ("jobs", "wait_timeout"):
                continue
            kwargs[name] = yaml.safe_load(value)
    scale = {"jobs": 1, "wait_timeout": 120, **(data.get("scale") or {})}
    for name in ("jobs", "wait_timeout"):
        env = os.environ.get(f"SURVEY_ENGINE_CLUSTER_{name.upper()}")
        if env:
            scale[name] = int(env)
    return kind, kwargs, scale


SECURITY_KEYS = (
    "tls_ca_file",
    "tls_client_cert",
    "tls_client_key",
    "tls_scheduler_cert",
    "tls_scheduler_key",
    "tls_worker_cert",
    "tls_worker_key",
    "require_encryption",
    "tls_min_version",
)


def load_security(path: Path | None):
    """``distributed.security.Security`` from a config's ``security:`` section (None if absent).

    Keys: tls_ca_file, tls_client_cert / tls_client_key (this process), tls_scheduler_cert / _key,
    tls_worker_cert / _key (the cluster's; default to the client's), require_encryption.
    Paths are relative to the config file. Only file names are ever logged, never contents."""
    if path is None:
        return None
    data = yaml.safe_load(Path(path).read_text()) or {}
    sec = data.get("security")
    if not sec:
        return None
    unknown = set(sec) - set(SECURITY_KEYS)
    if unknown:
        raise ClusterConfigError(
            f"{path}: unknown security key(s) {sorted(unknown)} (known: {', '.join(SECURITY_KEYS)})"
        )
    kw = {}
    for key, value in sec.items():
        if key.startswith("tls_") and key != "tls_min_version":
            f = (Path(value) if Path(value).is_absolute() else Path(path).parent / value).resolve()
            if not f.exists():
                raise ClusterConfigError(f"{path}: security.{key}: no such file {f}")
            kw[key] = str(f)
        else:
            kw[key] = value
    for role in ("scheduler", "worker"):
        kw.setdefault(f"tls_{role}_cert", kw.get("tls_client_cert"))
        kw.setdefault(f"tls_{role}_key", kw.get("tls_client_key"))
    from distributed.security import Security

    return Security(
        require_encryption=kw.pop("require_encryption", True), **{k: v for k, v in kw.items() if v}
    )


def make_cluster(kind: str, kwargs: dict, security=None):
    """The dask-jobqueue cluster object (nothing submitted yet)."""
    try:
        from dask_jobqueue import PBSCluster, SLURMCluster
    except ImportError:
        raise ClusterConfigError(
            "HPC clusters need dask-jobqueue: pip install 'survey_engine[hpc]'"
        ) from None
    import logging

    for name in ("distributed.scheduler", "distributed.core", "distributed.deploy", "dask_jobqueue"):
        logging.getLogger(name).setLevel(logging.WARNING)
    kw = dict(kwargs)
    interface = kw.get("interface")
    kw.setdefault(
        "scheduler_options",
        {"interface": interface, "dashboard_address": ":0"} if interface else {"dashboard_address": ":0"},
    )
    if security is not None:
        kw["security"] = security
        kw["protocol"] = "tls://"
    return (SLURMCluster if kind == "slurm" else PBSCluster)(**kw)


@contextlib.contextmanager
def hpc_client(target: str, echo=print):
    """A Client on a dask-jobqueue cluster described by ``target``; the jobs are released at the end."""
    from distributed import Client

    from survey_engine.runtime import close_client

    path = config_path(target)
    kind, kwargs, scale = load_config(path)
    cluster = make_cluster(kind, kwargs, load_security(path))
    try:
        cluster.scale(jobs=int(scale["jobs"]))
        client = (
            Client(cluster, security=cluster.security)
            if getattr(cluster, "security", None)
            else Client(cluster)
        )
        try:
            want = int(scale["jobs"]) * int(kwargs.get("processes", 1))
            try:
                client.wait_for_workers(want, timeout=float(scale["wait_timeout"]))
            except TimeoutError:
                got = len(client.scheduler_info()["workers"])
                raise ClusterConfigError(
                    f"{kind}: {got} of {want} workers arrived within {scale['wait_timeout']} s. "
                    + _submission_diagnosis(kind, cluster)
                ) from None
            if echo:
                echo(f"  {kind}: {want} workers in batch jobs {', '.join(job_ids(cluster))}")
            yield client
        finally:
            close_client(client)
    finally:
        with contextlib.suppress(Exception):
            cluster.close()


def job_ids(cluster) -> list[str]:
    return [str(getattr(job, "job_id", "?")) for job in cluster.workers.values()]


def _submission_diagnosis(kind: str, cluster) -> str:
    """Why jobs do not start: test-submit the job script and report what the scheduler says."""
    script = cluster.job_script()
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as fh:
        fh.write(script)
    try:
        cmd = ["sbatch", "--test-only", fh.name] if kind == "slurm" else ["qsub", "-z", fh.name]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            return f"{cmd[0]} is not on PATH: is this a {kind} submit host?"
        text = (done.stderr or done.stdout).strip()
        if done.returncode != 0:
            return f"The batch system refuses the job: {text}"
        return f"The batch system accepts the job script ({text}); the jobs may be queued behind others (check squeue / qstat)."
    finally:
        os.unlink(fh.name)
