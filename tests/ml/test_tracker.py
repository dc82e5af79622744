"""XGBoost's tracker runs in a child process of the scheduler (ml/tracker.py): its abort (C++ throws
when a peer vanishes while the collective forms) is a lost peer that costs one retry, never the
death of the command, whose process is the scheduler's for a LocalCluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from survey_engine.ml import tracker


def local_cluster():
    import logging

    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
    )


def frame(n: int = 8_000):
    import dask.dataframe as dd

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["_y"] = 2 * df.a - df.b + rng.normal(0, 0.05, n)
    return dd.from_pandas(df, npartitions=4)


PARAMS = {"objective": "reg:squarederror", "tree_method": "hist", "nthread": 1, "max_depth": 3}


def test_the_tracker_listens_from_a_child_of_the_scheduler_and_is_stopped_after_training():
    from distributed import Client

    from survey_engine.ml.dask_xgboost import dask_train

    with local_cluster() as cluster, Client(cluster) as client:
        tracker.install()
        since = tracker.started_trackers(client)
        env = client.sync(tracker.get_rabit_args, client, 2)
        tokens = [t for t in tracker.started_trackers(client) if t not in since]
        assert len(tokens) == 1
        proc = tracker._RUNNING[tokens[0]]  # the scheduler of a LocalCluster lives in this process
        listening = {c.laddr.port for c in psutil.Process(proc.pid).net_connections() if c.status == "LISTEN"}
        assert proc.pid != os.getpid() and int(env["dmlc_tracker_port"]) in listening
        assert psutil.Process(proc.pid).ppid() == os.getpid()
        # a training whose workers never came: its tracker is killed, not left behind
        assert tracker.stop_trackers(client, since, grace_seconds=0.1) == []
        assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
        # a real training: the booster is trained through a child tracker, which is gone afterwards
        before = set(tracker._RUNNING)  # (module state: other tests' clusters ran in this process)
        booster = dask_train(client, frame(), ["a", "b"], PARAMS, 20)
        assert booster.num_boosted_rounds() == 20
        assert set(tracker._RUNNING) <= before and tracker.started_trackers(client) == since


def test_a_tracker_nobody_stopped_ends_with_its_scheduler():
    """A training's driver thread can outlive its cluster (a worker lost before the tracker
    started): the tracker it started then has nobody to stop it. The scheduler's close kills it."""
    from distributed import Client

    with local_cluster() as cluster, Client(cluster) as client:
        tracker.install()
        since = tracker.started_trackers(client)
        client.sync(tracker.get_rabit_args, client, 2)
        (token,) = [t for t in tracker.started_trackers(client) if t not in since]
        proc = tracker._RUNNING[token]
        assert psutil.Process(proc.pid).is_running()
    assert token not in tracker._RUNNING
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE


def test_a_tracker_that_aborts_costs_one_retry_not_the_command(tmp_path, monkeypatch):
    """The first tracker aborts (SIGABRT, as the C++ runtime does) right after handing out its
    address, while the workers form the ring; the training is retried once and succeeds."""
    from distributed import Client

    from survey_engine.ml.dask_xgboost import WorkerLostError, dask_train

    flag = tmp_path / "aborted-once"
    abort_first = tracker.TRACKER_PROGRAM.replace(
        "print(json.dumps(tracker.worker_args()), flush=True)",
        "print(json.dumps(tracker.worker_args()), flush=True)\n"
        f"if not os.path.exists({str(flag)!r}):\n"
        f"    open({str(flag)!r}, 'w').close(); time.sleep(0.5); os.abort()",
    )
    monkeypatch.setattr(tracker, "TRACKER_PROGRAM", abort_first)
    with local_cluster() as cluster, Client(cluster) as client:
        t0 = time.monotonic()
        with pytest.raises(WorkerLostError, match=r"tracker process ended \(exit -6\)"):
            dask_train(client, frame(), ["a", "b"], PARAMS, 20)
        assert flag.exists() and time.monotonic() - t0 < 120  # a clear error, not a hang
        booster = dask_train(client, frame(), ["a", "b"], PARAMS, 20)  # what train()'s retry does
        assert booster.num_boosted_rounds() == 20


@pytest.mark.slow
def test_a_worker_killed_as_training_starts_never_aborts_the_command(tmp_path):
    """The case that used to end the command with exit 134: a worker SIGKILLed the moment XGBoost's
    training tasks appear (the tracker bootstrapping its ring). Run as its own process, so an abort
    would be seen as an exit code, not as the death of this test run."""
    script = tmp_path / "kill_at_start.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys, threading, time
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from survey_engine import runtime
            from survey_engine.ml.supervised import TrainOptions, WorkerLostError, train
            from test_lost_worker import local_cluster, photoz_rows
            from pathlib import Path
            if __name__ == "__main__":
                runtime.COLLECTIVE_TIMEOUT_SECONDS = 15
                d = Path({str(tmp_path)!r})
                photoz_rows(d / "t")
                from distributed import Client
                with local_cluster() as cluster, Client(cluster) as client:
                    def killer():
                        while True:
                            tasks = {{str(k): w for w, ks in client.processing().items() for k in ks
                                      if str(k).startswith("fn-")}}
                            if tasks:
                                victim = sorted(tasks.values())[-1]
                                os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
                                print("killed", victim, flush=True)
                                return
                            time.sleep(0.01)
                    threading.Thread(target=killer, daemon=True).start()
                    opts = TrainOptions("photoz", ["u-g", "g"], target="z", members=1, params={{"rounds": 300}})
                    try:
                        r = train(str(d / "t"), opts, str(d / "m"), client=client, progress=False)
                        print("TRAINED", r["test"]["sigma_nmad"], r.get("warnings"), flush=True)
                    except WorkerLostError as e:
                        print("LOST", e, flush=True)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=420, cwd=tmp_path
    )
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert done.returncode != -signal.SIGABRT
    assert "killed tcp://" in done.stdout
    outcome = [line for line in done.stdout.splitlines() if line.startswith(("TRAINED", "LOST"))]
    # one retry on the worker left, as good a model: not exit 134 (the tracker aborting the command),
    # nor "the workers left stayed blocked" (survivors waiting on a tracker that never formed the ring)
    assert len(outcome) == 1 and outcome[0].startswith("TRAINED"), done.stdout[-2000:]
    assert "retried once on the workers present" in outcome[0]
    assert float(outcome[0].split()[1]) < 0.025
