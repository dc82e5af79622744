"""Early stopping that keeps the fewest rounds within a tolerance of the best loss
(``dask_xgboost.fewest_rounds``), alone and through ``dask_train`` on a real cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost

from survey_engine.ml.dask_xgboost import dask_train, fewest_rounds, xgb_params


def _booster(rounds: int) -> xgboost.Booster:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3)).astype(np.float32)
    return xgboost.train(
        {"max_depth": 2, "nthread": 1}, xgboost.DMatrix(X, label=X[:, 0]), num_boost_round=rounds
    )


def test_fewest_rounds_within_the_tolerance_of_the_best():
    booster = _booster(10)
    losses = [1.0, 0.5, 0.3, 0.2015, 0.2009, 0.2, 0.2003, 0.2001, 0.2002, 0.2004]
    # within 0.5% of the best 0.2 (<= 0.201): the fifth round; within 1% (<= 0.202): the fourth
    assert fewest_rounds(booster, losses, 0.005).num_boosted_rounds() == 5
    assert fewest_rounds(booster, losses, 0.01).num_boosted_rounds() == 4
    assert fewest_rounds(booster, losses, 0.0).num_boosted_rounds() == 6  # the best round itself
    cut = fewest_rounds(booster, losses, 0.005)
    X = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    # the cut booster predicts exactly as the first rounds of the whole one
    assert np.array_equal(cut.inplace_predict(X), booster.inplace_predict(X, iteration_range=(0, 5)))
    # a booster already cut back to its best round (save_best) is not cut further when the best is last
    assert fewest_rounds(_booster(6), losses[:6], 0.0).num_boosted_rounds() == 6
    assert fewest_rounds(booster, [], 0.01) is booster
    assert fewest_rounds(booster, [np.nan] * 10, 0.01) is booster


@pytest.mark.slow
def test_dask_train_with_a_tolerance_keeps_fewer_rounds_and_nearly_the_best_loss(client):
    import dask.dataframe as dd

    rng = np.random.default_rng(3)
    n = 6000
    X = rng.normal(size=(n, 4))
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1] + rng.normal(0, 0.3, n)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(_y=y)
    train, stop = dd.from_pandas(frame[:4000], npartitions=4), dd.from_pandas(frame[4000:], npartitions=2)
    params, _ = xgb_params({"max_depth": 4, "eta": 0.1, "rounds": 1}, {"eval_metric": "mae"}, "cpu", 0)
    feats = ["a", "b", "c", "d"]
    best = dask_train(client, train, feats, params, 400, stop_on=stop, stopping_rounds=30)
    fewer = dask_train(
        client, train, feats, params, 400, stop_on=stop, stopping_rounds=30, stop_tolerance=0.01
    )
    held = frame[4000:]

    def mae(b) -> float:
        return float(np.mean(np.abs(b.inplace_predict(held[feats].to_numpy(np.float32)) - held["_y"])))

    assert fewer.num_boosted_rounds() < best.num_boosted_rounds()
    assert mae(best) <= mae(fewer) <= 1.01 * mae(best) + 1e-12


def test_the_placement_waits_for_a_worker_coming_back_and_names_a_cluster_without_any():
    """Between two steps of a training the cluster may have no worker for a moment (a nanny
    bringing back a lost one): the placement of the partitions (``placed``, ``pinned``) waits for
    one; a cluster with none stops with an error that says so (it was a ZeroDivisionError)."""
    import threading

    from distributed import Client, LocalCluster

    from survey_engine.ml.dask_xgboost import workers_by_name
    from survey_engine.ml.options import TrainingError
    from survey_engine.runtime import environment_kept

    with (
        environment_kept(),
        LocalCluster(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        with pytest.raises(TrainingError, match="no workers \\(none joined within 1 s\\)"):
            workers_by_name(client, timeout=1)
        threading.Timer(1.0, cluster.scale, args=(1,)).start()
        workers = workers_by_name(client)
        assert len(workers) == 1 and workers[0].startswith("tcp://127.0.0.1:")
