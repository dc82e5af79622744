"""The single-process XGBoost peer of the training suite, run in a fresh process of its own.

``python -m survey_engine.bench.xgb_peer DATA.npz NTHREAD MODEL_OUT PARAMS_JSON ROUNDS`` loads the
rows, trains with ``NTHREAD`` threads, predicts every row, saves the booster and prints one JSON
line with the times of each step. A fresh process, started with OMP_NUM_THREADS=NTHREAD, is what a user runs; in the
benchmark driver, Dask's LocalCluster sets OMP_NUM_THREADS=1 and XGBoost caps its threads at
``omp_get_max_threads()`` (measured: nthread=2 ran no faster than 1 there).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv: list[str]) -> None:
    import xgboost as xgb

    data, nthread, model_out, params, rounds = (
        argv[0],
        int(argv[1]),
        argv[2],
        json.loads(argv[3]),
        int(argv[4]),
    )
    with np.load(data) as z:
        X, y = z["X"], z["y"]
    t0 = time.perf_counter()
    dtrain = xgb.QuantileDMatrix(X, y, max_bin=params.get("max_bin", 256), nthread=nthread)
    booster = xgb.train({**params, "nthread": nthread}, dtrain, num_boost_round=rounds)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = booster.inplace_predict(X)
    predict_s = time.perf_counter() - t0
    booster.save_model(model_out)
    print(
        json.dumps(
            {"train_s": train_s, "predict_s": predict_s, "predict_sum": float(np.sum(pred, dtype=np.float64))}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
