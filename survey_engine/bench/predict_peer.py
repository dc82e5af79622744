"""The single-process XGBoost peer of the predict suite, run in a fresh process of its own.

``python -m survey_engine.bench.predict_peer MODEL_DIR OUT.parquet NTHREAD FILE...`` reads the input
columns of the model's features from every file with pyarrow, builds the boosters' matrix in NumPy
(colours and columns; the model's rotated views), predicts with the same boosters through
``inplace_predict`` with ``NTHREAD`` threads, writes ``source_id``, ``z_phot`` (the median) and the
raw 16% / 84% quantiles to one Parquet file, and prints one JSON line with its time. What a user
would write by hand with XGBoost alone, without the calibrated p(z), the quality flags or a catalog.
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
    inputs_count = 1 if not views or views.get("stacked") else len(views["rotations"])
    medians = [models["median" if i == 0 else f"median_{i}"] for i in range(inputs_count)]
    for booster in models.values():
        booster.set_param({"nthread": nthread})
    t0 = time.perf_counter()
    table = ds.dataset(files, format="parquet").to_table(columns=columns)
    X = feature_matrix(table, features)
    m = np.mean(
        [b.inplace_predict(v) for b, v in zip(medians, booster_inputs(X, views))], axis=0, dtype=np.float64
    )
    q = np.asarray(models["quantiles"].inplace_predict(X), dtype=np.float64).reshape(len(X), -1)
    result = pa.table(
        {
            "source_id": table.column("source_id"),
            "z_phot": np.expm1(m).astype(np.float32),
            "z_lo": np.expm1(q[:, 0]).astype(np.float32),
            "z_hi": np.expm1(q[:, -1]).astype(np.float32),
        }
    )
    pq.write_table(result, out)
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": len(X)}))


if __name__ == "__main__":
    main(sys.argv[1:])
