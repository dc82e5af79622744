"""The single-process XGBoost peer of the predict suite, run in a fresh process of its own.

``python -m survey_engine.bench.predict_peer MODEL_DIR OUT.parquet NTHREAD FILE...`` reads the input
columns of the model's features from every file with pyarrow, builds the boosters' matrix in NumPy
(colours and columns; the model's rotated views), predicts with the same boosters through
``inplace_predict`` with ``NTHREAD`` threads, writes to one Parquet file ``source_id`` and, for a
photo-z model, ``z_phot`` (the median) and the raw 16% / 84% quantiles, for a classifier
``class_pred`` and ``prob_<label>`` (the members' mean probabilities, then the model's temperature),
and prints one JSON line with its time. What a user would write by hand with XGBoost alone, without
the calibrated p(z), the quality flags or a catalog.
A fresh process started with OMP_NUM_THREADS=NTHREAD: the benchmark driver's LocalCluster sets
OMP_NUM_THREADS=1, which caps XGBoost at one thread whatever ``nthread`` says.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def feature_matrix(table, features: list[str]) -> np.ndarray:
    """Columns and colours ``a-b`` of a pyarrow table, float32 (rows x features)."""
    have = set(table.column_names)

    def col(name: str) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    out = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, f in enumerate(features):
        a, _, b = f.partition("-")
        out[:, j] = col(f) if f in have else col(a.strip()) - col(b.strip())
    return out


def booster_inputs(X: np.ndarray, views: dict | None) -> list[np.ndarray]:
    """The matrix each median booster sees: the features, then their rotation(s)."""
    if not views:
        return [X]
    z = (X - np.asarray(views["mean"])) / np.asarray(views["scale"])
    rotations = [np.asarray(r) for r in views["rotations"]]
    if views.get("stacked"):
        return [np.hstack([X, (z @ np.hstack(rotations)).astype(np.float32)])]
    return [np.hstack([X, (z @ r).astype(np.float32)]) for r in rotations]


def class_columns(models: dict, X: np.ndarray, views: dict | None, meta: dict) -> dict:
    """``class_pred`` and ``prob_<label>``: the members' mean softmax, then the temperature."""
    inputs = booster_inputs(X, views)
    names = ["classifier" if i == 0 else f"classifier_{i}" for i in range(len(inputs))]
    p = np.mean(
        [np.asarray(models[b].inplace_predict(v)).reshape(len(X), -1) for b, v in zip(names, inputs)], axis=0
    )
    temperature = meta.get("temperature", 1.0)
    if temperature != 1.0:
        z = np.log(np.clip(p, 1e-12, 1)) / temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
    classes = list(meta["classes"])
    return {
        "class_pred": np.asarray(classes, dtype=object)[p.argmax(axis=1)],
        **{f"prob_{c}": p[:, i].astype(np.float32) for i, c in enumerate(classes)},
    }


def photoz_columns(models: dict, X: np.ndarray, views: dict | None) -> dict:
    """``z_phot`` (the members' mean log(1 + z), or the one student's) and the raw 16% / 84% quantiles."""
    inputs = booster_inputs(X, views)
    medians = [models["median" if i == 0 else f"median_{i}"] for i in range(len(inputs))]
    m = np.mean([b.inplace_predict(v) for b, v in zip(medians, inputs)], axis=0, dtype=np.float64)
    q = np.asarray(models["quantiles"].inplace_predict(X), dtype=np.float64).reshape(len(X), -1)
    return {
        "z_phot": np.expm1(m).astype(np.float32),
        "z_lo": np.expm1(q[:, 0]).astype(np.float32),
        "z_hi": np.expm1(q[:, -1]).astype(np.float32),
    }


def main(argv: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from survey_engine.ml.artifact import load_model

    model_dir, out, nthread, files = argv[0], argv[1], int(argv[2]), argv[3:]
    meta, models = load_model(model_dir)
    features = list(meta["features"])
    columns = sorted(
        {c.strip() for f in features for c in ([f] if "-" not in f else f.split("-"))} | {"source_id"}
    )
    views = meta.get("views")
    for booster in models.values():
        booster.set_param({"nthread": nthread})
    t0 = time.perf_counter()
    table = ds.dataset(files, format="parquet").to_table(columns=columns)
    X = feature_matrix(table, features)
    if meta["task"] == "classify":
        cols = class_columns(models, X, views, meta)
    else:
        cols = photoz_columns(models, X, views)
    pq.write_table(pa.table({"source_id": table.column("source_id"), **cols}), out)
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": len(X)}))


if __name__ == "__main__":
    main(sys.argv[1:])
