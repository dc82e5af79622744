"""Training survives a lost worker: a worker killed mid-XGBoost training stops the stage within
seconds with a clear error naming it (never a hang), and the same call then trains again."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from survey_engine.ml.supervised import TrainOptions, WorkerLostError, train


@pytest.mark.slow
def test_worker_killed_mid_training_is_a_clear_error_not_a_hang(tmp_path):
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(1)
    n = 20_000
    df = pd.DataFrame({"u": rng.normal(20, 1, n), "g": rng.normal(19, 1, n)})
    df["z"] = np.abs(0.1 * (df.u - df.g) + rng.normal(0, 0.02, n))
    (tmp_path / "t").mkdir()
    for i in range(4):  # four partitions: both workers train
        df.iloc[i * n // 4 : (i + 1) * n // 4].to_parquet(tmp_path / "t" / f"part{i}.parquet")
    opts = TrainOptions("photoz", ["u-g", "g"], target="z", members=1)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        killed: list[str] = []
        killed_at: list[float] = []

        def kill_when_training():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                # xgboost.dask submits its training tasks as fn-<uuid> (a wrapped partial of do_train)
                busy = [
                    w
                    for w, keys in client.processing().items()
                    if any(str(k).startswith("fn-") for k in keys)
                ]
                if busy:
                    victim = sorted(pids)[-1]
                    killed.append(victim)
                    killed_at.append(time.monotonic())
                    os.kill(pids[victim], signal.SIGKILL)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_training, daemon=True)
        killer.start()
        with pytest.raises(WorkerLostError) as info:
            train(str(tmp_path / "t"), opts, str(tmp_path / "m"), client=client)
        assert killed and killed[0] in str(info.value) and "run the same command again" in str(info.value)
        assert time.monotonic() - killed_at[0] < 30 and not (tmp_path / "m").exists()  # seconds, not a hang
