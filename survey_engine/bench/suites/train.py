"""train suite: xgboost.dask on 1..N workers against single-process XGBoost with the same threads
(``bench/xgb_peer.py``, a fresh process), training and prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.bench.measure import run_summary, timed
from survey_engine.bench.suites.common import (
    bench_row,
    local_cluster,
    mock_files,
    peer_environment,
    peer_process,
    profiled,
    repeat_plan,
)

TRAIN_FEATURES = ["u-g", "g-r", "r-i", "i-z", "r"]
TRAIN_PARAMS = {
    "objective": "reg:squarederror",
    "max_depth": 7,
    "eta": 0.3,
    "tree_method": "hist",
    "verbosity": 0,
    "seed": 1,
    "max_bin": 256,
}
TRAIN_ROUNDS = 50


def _training_rows(n: int, work: Path, client) -> tuple[pd.DataFrame, pd.Series]:
    """Features (float32) and log(1 + z) of every row of the n-row mock sky: stars, galaxies, QSOs."""
    import pyarrow.dataset as ds

    from survey_engine.features.spec import FeatureSpec

    src = mock_files(n, work, client)
    table = ds.dataset(sorted(str(f) for f in src.glob("*.parquet")), format="parquet").to_table(
        columns=["u", "g", "r", "i", "z", "redshift"]
    )
    frame = table.to_pandas()
    X = FeatureSpec(TRAIN_FEATURES).compute(frame).astype(np.float32)
    y = np.log1p(frame["redshift"].clip(lower=0)).astype(np.float32)
    return X, y


def _galaxy_nmad(booster, X: pd.DataFrame, y: pd.Series, sample: int = 200_000) -> float:
    from survey_engine.ml import metrics as M

    ok = (y > np.log1p(0.01)).to_numpy()
    Xs, ys = X[ok].iloc[:sample], y[ok].iloc[:sample]
    return M.photoz_metrics(
        np.expm1(booster.inplace_predict(Xs.to_numpy())), np.expm1(ys.to_numpy().astype(float))
    )["sigma_nmad"]


def run(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    """Distributed overhead at equal threads (xgboost.dask on w workers x 1 thread vs one process
    with w threads, the same rows in memory) and scaling across workers, per size."""
    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        with local_cluster(workers) as client:
            X, y = _training_rows(n, work, client)
        data_file = work / f"train_rows_{n}.npz"
        np.savez(data_file, X=X.to_numpy(), y=y.to_numpy())
        base: dict = {}  # one worker's times, for the efficiency across workers
        for w in range(1, workers + 1):
            out_rows += _workers_rows(X, y, w, plan, data_file, work, base)
        data_file.unlink(missing_ok=True)
    return out_rows


def _distributed(X, y, w: int, plan: dict) -> tuple[dict, dict, list, list]:
    """Training and prediction with xgboost.dask on ``w`` workers x 1 thread: their measurements (the
    training's value is the booster, the prediction's the sum of predictions) and profiles."""
    import dask.dataframe as dd
    import xgboost as xgb
    from xgboost import dask as dxgb

    with local_cluster(w) as client:
        parts = max(2 * w, len(X) // 2_000_000)
        Xd = client.persist(dd.from_pandas(X, npartitions=parts))
        yd = client.persist(dd.from_pandas(y, npartitions=parts))
        prof: list = []
        pprof: list = []

        def distributed():
            with xgb.config_context(verbosity=0):
                dtrain = dxgb.DaskQuantileDMatrix(client, Xd, yd, max_bin=TRAIN_PARAMS["max_bin"])
                return dxgb.train(
                    client, {**TRAIN_PARAMS, "nthread": 1}, dtrain, num_boost_round=TRAIN_ROUNDS
                )["booster"]

        m_d = timed(profiled(client, distributed, prof), **plan)
        booster = m_d["value"]

        def distributed_predict():
            return float(dxgb.inplace_predict(client, booster, Xd).sum().compute())

        p_d = timed(profiled(client, distributed_predict, pprof), **plan)
    return m_d, p_d, prof, pprof


def _workers_rows(X, y, w: int, plan: dict, data_file: Path, work: Path, base: dict) -> list[dict]:
    """Training and prediction rows at ``w`` workers, each against one process with ``w`` threads."""
    case = f"{len(X)} mock rows, {len(TRAIN_FEATURES)} features, {TRAIN_ROUNDS} rounds"
    pcase = f"{len(X)} mock rows, predict with the {TRAIN_ROUNDS}-round model"
    m_d, p_d, prof, pprof = _distributed(X, y, w, plan)
    booster_d = m_d.pop("value")
    m_s, p_s, booster_s = xgb_single_process(data_file, w, plan, work)
    p_s["value"] = p_s.pop("predict_sum")
    nm_d, nm_s = _galaxy_nmad(booster_d, X, y), _galaxy_nmad(booster_s, X, y)
    agree = bool(abs(nm_d - nm_s) <= 0.05 * nm_s)
    # prediction agreement: the distributed prediction equals the same booster's in one process
    ref = float(np.sum(booster_d.inplace_predict(X), dtype=np.float64))
    pagree = bool(abs(p_d.pop("value") - ref) <= 1e-6 * abs(ref))
    p_s.pop("value")
    base.setdefault("train", m_d["seconds"])
    base.setdefault("predict", p_d["seconds"])
    return [
        bench_row(
            "train",
            case,
            "xgboost.dask",
            len(X),
            w,
            m_d,
            agree=agree,
            profile=prof,
            sigma_nmad=nm_d,
            overhead=m_d["seconds"] / m_s["seconds"] - 1,
            efficiency=base["train"] / m_d["seconds"] / w,
            note=f"{w} worker(s) x 1 thread; overhead = its time / single-process time at {w} thread(s) - 1",
        ),
        bench_row(
            "train",
            case,
            "xgboost_single_process",
            len(X),
            w,
            m_s,
            agree=agree,
            sigma_nmad=nm_s,
            note=f"one fresh process, nthread={w} (its data loading excluded)",
        ),
        bench_row(
            "train",
            pcase,
            "xgboost.dask",
            len(X),
            w,
            p_d,
            agree=pagree,
            profile=pprof,
            overhead=p_d["seconds"] / p_s["seconds"] - 1,
            efficiency=base["predict"] / p_d["seconds"] / w,
            note="dask inplace_predict over the persisted partitions; the same booster",
        ),
        bench_row(
            "train",
            pcase,
            "xgboost_single_process",
            len(X),
            w,
            p_s,
            agree=pagree,
            note=f"inplace_predict of its own booster, nthread={w}, in a fresh process",
        ),
    ]


def xgb_single_process(
    data_file: Path,
    nthread: int,
    plan: dict,
    work: Path,
    params: dict | None = None,
    rounds: int | None = None,
):
    """Single-process XGBoost in a fresh process per run (``bench/xgb_peer.py``): the training and
    prediction times it reports (its data loading excluded), and its booster."""
    import xgboost as xgb

    from survey_engine.bench.measure import PeakMemory

    model = work / f"xgb_peer_{nthread}.ubj"
    args = [
        str(data_file),
        str(nthread),
        str(model),
        json.dumps(params or TRAIN_PARAMS),
        str(rounds or TRAIN_ROUNDS),
    ]
    runs, peak, peak_process = [], 0, 0
    for i in range(plan["warmup"] + plan["repeats"]):
        with PeakMemory() as mem:
            runs.append(
                peer_process(
                    "survey_engine.bench.xgb_peer",
                    args,
                    "single-process XGBoost",
                    env=peer_environment(nthread),
                )
            )
        if i >= plan["warmup"]:
            peak, peak_process = max(peak, mem.peak), max(peak_process, mem.peak_process)
    timed_runs = runs[plan["warmup"] :]

    def summary(key):
        return run_summary([r[key] for r in timed_runs], runs[0][key], plan["warmup"], peak, peak_process)

    booster = xgb.Booster(model_file=str(model))
    return summary("train_s"), {**summary("predict_s"), "predict_sum": timed_runs[-1]["predict_sum"]}, booster
