"""Failures while a job runs: a worker killed mid-stage, a scheduler that goes away."""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.jobs.run import run_job
from survey_engine.jobs.spec import load_spec

JOB = """\
source:
  mock: {rows: 600000, seed: 5}
stages:
  - id: sky
    import: {max_rows: 40000, margin: 10}
"""


def _frame(path):
    return open_catalog(path).compute().sort_values("source_id").reset_index(drop=True)


def _start(spec, client) -> tuple[threading.Thread, dict]:
    """Run the job in a thread; ``outcome`` gets its summary or the exception it raised."""
    outcome = {}

    def work():
        try:
            outcome["summary"] = run_job(spec, client=client, progress=False, echo=None)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    return thread, outcome


def _wait_for_import(spec, timeout: float = 120) -> None:
    """Until the import stage is under way (its staging folder appears)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not list(spec.workdir.glob(".tmp-sky-*/sky.partial")):
        time.sleep(0.05)


@pytest.mark.slow
def test_worker_killed_mid_stage_gives_identical_outputs(tmp_path, client):
    from distributed import Client, LocalCluster

    (tmp_path / "job.yaml").write_text(JOB)
    ref = load_spec(tmp_path / "job.yaml", base=tmp_path / "ref")
    run_job(ref, client=client, progress=False, echo=None)

    spec = load_spec(tmp_path / "job.yaml", base=tmp_path / "killed")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        pids = c.run(os.getpid)
        thread, outcome = _start(spec, c)
        _wait_for_import(spec)  # then kill -9 a worker
        time.sleep(0.5)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=600)
        assert "error" not in outcome, outcome.get("error")
        assert victim not in c.run(os.getpid).values()  # the worker really died (the nanny started a new one)
    pd.testing.assert_frame_equal(_frame(spec.workdir / "sky"), _frame(ref.workdir / "sky"))
    a, b = open_catalog(spec.workdir / "sky"), open_catalog(ref.workdir / "sky")
    assert a.margin.row_count() == b.margin.row_count()


def test_scheduler_gone_is_a_clear_error_and_rerun_resumes(tmp_path, client):
    from distributed import Client, LocalCluster

    (tmp_path / "job.yaml").write_text(JOB.replace("600000", "300000"))
    spec = load_spec(tmp_path / "job.yaml", base=tmp_path)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = Client(cluster)
    thread, outcome = _start(spec, c)
    _wait_for_import(spec)
    cluster.close()  # the scheduler goes away mid-stage
    thread.join(timeout=300)
    c.close()
    from survey_engine.jobs.run import SchedulerLost

    assert isinstance(outcome.get("error"), SchedulerLost), repr(outcome.get("error"))
    assert "lost the Dask scheduler" in str(outcome["error"]) and "run the same command again" in str(
        outcome["error"]
    )
    assert not (spec.workdir / "sky").exists()
    # the same command again, on a working cluster, finishes the job
    summary = run_job(
        load_spec(tmp_path / "job.yaml", base=tmp_path), client=client, progress=False, echo=None
    )
    assert summary["status"] == "ok"
    assert open_catalog(spec.workdir / "sky").row_count() == 300_000
