"""Jobs on HPC: a real single-node SLURM through dask-jobqueue; PBS job scripts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.jobs.clusters import ClusterConfigError, config_path, load_config, make_cluster
from tests.conftest import REPO

JOB = """\
source:
  mock: {rows: 20000, seed: 3}
stages:
  - id: sky
    import: {max_rows: 5000, margin: 5}
  - id: pairs
    crossmatch: {left: sky, right: sky, radius: 5, how: nearest, self: true}
"""


def test_job_on_slurm_workers_are_batch_jobs(slurm, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(JOB)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "run",
            str(spec),
            "--cluster",
            "slurm",
            "--workdir",
            str(tmp_path / "work"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "work" / "run_summary.json").read_text())
    assert summary["status"] == "ok" and summary["cluster"]["workers"] == 2
    jobs = summary["cluster"]["batch_jobs"]
    assert len(jobs) == 2 and all(j.isdigit() for j in jobs)
    for job in jobs:  # the workers really were SLURM jobs, in partition debug, running dask workers
        info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        assert f"JobId={job}" in info and "Partition=debug" in info and "dask-worker" in info
    assert open_catalog(tmp_path / "work" / "sky").row_count() == 20_000
    pairs = open_catalog(tmp_path / "work" / "pairs").compute()
    assert (pairs.sep_arcsec <= 5).all() and len(pairs) == summary["stages"]["pairs"]["rows"]
    # released at the end: none of our jobs is still queued or running
    queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert not set(jobs) & set(queued)


def test_refused_jobs_give_the_schedulers_reason(slurm, tmp_path, monkeypatch):
    spec = tmp_path / "job.yaml"
    spec.write_text(JOB)
    env = {"SURVEY_ENGINE_CLUSTER_MEMORY": "900GB", "SURVEY_ENGINE_CLUSTER_WAIT_TIMEOUT": "15"}
    import os

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "run",
            str(spec),
            "--cluster",
            "slurm",
            "--workdir",
            str(tmp_path / "work"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, **env},
    )
    assert done.returncode == 2
    assert "0 of 2 workers arrived" in done.stderr and "refuses the job" in done.stderr
    queued = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout
    assert "dask-worker" not in queued


def test_pbs_job_script(monkeypatch):
    monkeypatch.setenv("SURVEY_ENGINE_CLUSTER_INTERFACE", "lo")  # ib0 does not exist here
    kind, kwargs, scale = load_config(config_path("pbs"))
    assert kind == "pbs" and scale == {"jobs": 4, "wait_timeout": 600}
    cluster = make_cluster(kind, kwargs)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#PBS -q workq" in script and "#PBS -A myproject" in script
    assert "#PBS -l select=1:ncpus=4:mem=8GB" in script and "#PBS -l walltime=01:00:00" in script
    assert "--nthreads 4" in script and "--memory-limit 7.45GiB" in script


def test_cluster_config_errors(tmp_path, monkeypatch):
    bad = tmp_path / "c.yaml"
    bad.write_text("jobqueue: {lsf: {cores: 1}}\n")
    with pytest.raises(ClusterConfigError, match="exactly one of slurm, pbs"):
        load_config(bad)
    bad.write_text("jobqueue: {slurm: {cores: 1}}\nscael: {jobs: 2}\n")
    with pytest.raises(ClusterConfigError, match="scael"):
        load_config(bad)
    with pytest.raises(ClusterConfigError, match="no such cluster config"):
        config_path(str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("SURVEY_ENGINE_CLUSTER_QUEUE", "normal")
    monkeypatch.setenv("SURVEY_ENGINE_CLUSTER_JOBS", "5")
    _, kwargs, scale = load_config(config_path("slurm"))
    assert kwargs["queue"] == "normal" and scale["jobs"] == 5 and kwargs["memory"] == "2GB"


def test_shipped_configs_are_found_from_an_installed_package(tmp_path, monkeypatch):
    """`--cluster slurm|pbs` outside a checkout (a wheel install): the package carries the same
    files as cluster/ (linked, followed when the wheel is built)."""
    from pathlib import Path

    import survey_engine.jobs.clusters as clusters

    repo = Path(__file__).resolve().parents[2] / "cluster"
    monkeypatch.chdir(tmp_path)  # no cluster/ here
    monkeypatch.setattr(clusters, "REPO_CLUSTER_DIR", tmp_path / "no-checkout")
    for kind in ("slurm", "pbs"):
        found = config_path(kind)
        assert found.parent == clusters.PACKAGED_CLUSTER_DIR
        assert found.read_bytes() == (repo / f"{kind}.yaml").read_bytes()
        assert load_config(found)[0] == kind
    monkeypatch.setattr(clusters, "PACKAGED_CLUSTER_DIR", tmp_path / "not-installed")
    with pytest.raises(ClusterConfigError, match="no cluster/slurm.yaml here"):
        config_path("slurm")


def test_slurm_cluster_over_tls(slurm, tmp_path):
    """The cluster config's security section: scheduler and SLURM-job workers talk TLS."""
    from tests.jobs.test_tls import make_certs

    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    config = tmp_path / "slurm_tls.yaml"
    config.write_text(
        (REPO / "cluster" / "slurm.yaml").read_text() + "security:\n  tls_ca_file: certs/ca.pem\n"
        "  tls_client_cert: certs/node.pem\n  tls_client_key: certs/node.key\n"
    )
    kind, kwargs, _ = load_config(config)
    from survey_engine.jobs.clusters import load_security

    cluster = make_cluster(kind, kwargs, load_security(config))
    try:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tls://")
    finally:
        cluster.close()
    assert "--protocol tls://" in script and f"--tls-key {certs / 'node.key'}" in script
    assert "PRIVATE KEY" not in script  # paths only, never the key itself
    spec = tmp_path / "job.yaml"
    spec.write_text(JOB)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "run",
            str(spec),
            "--cluster",
            str(config),
            "--workdir",
            str(tmp_path / "work"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "work" / "run_summary.json").read_text())
    assert summary["cluster"]["scheduler"].startswith("tls://") and len(summary["cluster"]["batch_jobs"]) == 2
