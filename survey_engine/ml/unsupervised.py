"""Anomaly scores (Isolation Forest) and principal components (dask-ml PCA) as catalog operations.

Both are fitted once (the Isolation Forest on a uniform sample of the catalog, PCA on all of it
with dask-ml) and applied partition by partition like the supervised models. Missing feature
values are imputed with the training medians (neither estimator accepts NaN).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from survey_engine.catalog.row_filter import RowFilterError, filter_rows
from survey_engine.features.spec import FeatureError, FeatureSpec
from survey_engine.ml.artifact import save_model, training_variability_spec
from survey_engine.ml.data import open_table
from survey_engine.ml.supervised import TrainingError

ANOMALY_SAMPLE = 200_000


def _features(table, features: list[str], ebv: str | None, where: str | None = None):
    """The feature spec and the features of the rows ``where`` selects (all rows without it)."""
    spec = FeatureSpec(features, ebv_column=ebv, missing="impute")
    try:
        spec.plan(table.columns)
    except FeatureError as exc:
        raise TrainingError(f"{table.path}: {exc}") from None
    try:
        frame = filter_rows(table.frame, where)
    except RowFilterError as exc:
        raise TrainingError(f"{table.path}: {exc}") from None
    meta = spec.compute(table.frame._meta_nonempty.head(2)).iloc[:0]
    return spec, frame.map_partitions(spec.compute, meta=meta)


def train_anomaly(
    table_path: str,
    features: list[str],
    model_out: str,
    *,
    seed: int = 42,
    n_estimators: int = 200,
    sample_rows: int = ANOMALY_SAMPLE,
    ebv: str | None = None,
    where: str | None = None,
    client=None,
) -> dict:
    """An isolation forest on a sample of the rows ``where`` selects (every row without it)."""
    from sklearn.ensemble import IsolationForest

    from survey_engine.runtime import dask_client

    t0 = time.time()
    table = open_table(table_path)
    with dask_client(client):
        spec, feats = _features(table, features, ebv, where)
        n = int(feats.shape[0].compute())
        if n < 2:
            raise TrainingError(f"{table.path}: {n} rows; an anomaly model needs more")
        frac = min(1.0, sample_rows / n)
        sample = (feats.sample(frac=frac, random_state=seed) if frac < 1 else feats).compute()
        spec.fit(sample)
        X = sample.fillna(spec.impute_values).to_numpy(dtype=np.float64)
        est = IsolationForest(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(X)
        scores = -est.score_samples(X)
    metrics = {
        "rows": n,
        "sample_rows": len(sample),
        "score_quantiles": {str(q): float(np.quantile(scores, q)) for q in (0.5, 0.9, 0.99, 0.999)},
        "seconds": round(time.time() - t0, 1),
    }
    meta = {
        "task": "anomaly",
        "feature_spec": spec.to_json(),
        "features": list(spec.features),
        "training_catalog": {"path": str(table.path), "fingerprint": table.fingerprint},
        "variability_spec": training_variability_spec(table),
        "metrics": metrics,
    }
    save_model(model_out, meta, arrays={"isolation_forest": forest_arrays(est)})
    return metrics


def train_pca(
    table_path: str,
    features: list[str],
    model_out: str,
    *,
    n_components: int = 3,
    ebv: str | None = None,
    where: str | None = None,
    client=None,
) -> dict:
    """Principal components of the standardised features of the rows ``where`` selects."""
    from dask_ml.decomposition import PCA

    from survey_engine.runtime import dask_client

    table = open_table(table_path)
    with dask_client(client):
        spec, feats = _features(table, features, ebv, where)
        if n_components > len(spec.features):
            raise TrainingError(f"--components {n_components} is more than the {len(spec.features)} features")
        spec.fit(feats.head(100_000, npartitions=-1))
        filled = feats.fillna(spec.impute_values)
        mean = filled.mean().compute().to_numpy().copy()
        std = filled.std().compute().to_numpy().copy()
        std[~(std > 0)] = 1.0
        X = ((filled - mean) / std).to_dask_array(lengths=True)
        pca = PCA(n_components=n_components, svd_solver="full").fit(X)
    model = {
        "mean": mean,
        "std": std,
        "components": np.asarray(pca.components_),
        "explained_variance_ratio": np.asarray(pca.explained_variance_ratio_),
    }
    metrics = {"explained_variance_ratio": model["explained_variance_ratio"].tolist()}
    meta = {
        "task": "pca",
        "feature_spec": spec.to_json(),
        "features": list(spec.features),
        "n_components": n_components,
        "training_catalog": {"path": str(table.path), "fingerprint": table.fingerprint},
        "variability_spec": training_variability_spec(table),
        "metrics": metrics,
    }
    save_model(model_out, meta, arrays={"pca": model})
    return metrics


def forest_arrays(est) -> dict[str, np.ndarray]:
    """A fitted scikit-learn IsolationForest as plain arrays (stored as ``.npz``, never pickled):
    all trees' nodes in one table (children, feature in the input's numbering, threshold, NaN
    direction) and, per node, what a row ending there adds to its path length."""
    from sklearn.ensemble._iforest import _average_path_length

    left, right, feature, threshold, nan_left, leaf_add, roots = [], [], [], [], [], [], []
    offset = 0
    for tree, features in zip(est.estimators_, est.estimators_features_):
        t = tree.tree_
        leaf = t.children_left == -1
        roots.append(offset)
        left.append(np.where(leaf, -1, t.children_left + offset))
        right.append(np.where(leaf, -1, t.children_right + offset))
        feature.append(np.where(leaf, 0, np.asarray(features)[np.maximum(t.feature, 0)]))
        threshold.append(t.threshold)
        nan_left.append(getattr(t, "missing_go_to_left", np.zeros(t.node_count, np.uint8)).astype(bool))
        leaf_add.append(t.compute_node_depths() + _average_path_length(t.n_node_samples) - 1.0)
        offset += t.node_count
    denominator = len(est.estimators_) * float(_average_path_length([est._max_samples])[0])
    return {
        "left": np.concatenate(left).astype(np.int64),
        "right": np.concatenate(right).astype(np.int64),
        "feature": np.concatenate(feature).astype(np.int64),
        "threshold": np.concatenate(threshold).astype(np.float64),
        "nan_left": np.concatenate(nan_left),
        "leaf_add": np.concatenate(leaf_add).astype(np.float64),
        "roots": np.asarray(roots, dtype=np.int64),
        "denominator": np.asarray(denominator),
    }


def forest_scores(forest: dict, X: np.ndarray, chunk: int = 20_000) -> np.ndarray:
    """Anomaly scores (higher is odder; ``-IsolationForest.score_samples``) from ``forest_arrays``:
    every row walks every tree at once, as scikit-learn does on float32 inputs."""
    X = np.asarray(X, dtype=np.float32)
    left, right, feature, threshold = forest["left"], forest["right"], forest["feature"], forest["threshold"]
    nan_left, leaf_add, roots = forest["nan_left"], forest["leaf_add"], forest["roots"]
    denominator = float(forest["denominator"])
    out = np.empty(len(X), dtype=np.float64)
    for start in range(0, len(X), chunk):
        rows = X[start : start + chunk]
        node = np.broadcast_to(roots, (len(rows), len(roots))).copy()
        row = np.repeat(np.arange(len(rows)), len(roots)).reshape(node.shape)
        while True:
            inner = left[node] >= 0
            if not inner.any():
                break
            n, r = node[inner], row[inner]
            x = rows[r, feature[n]].astype(np.float64)
            go_left = np.where(np.isnan(x), nan_left[n], x <= threshold[n])
            node[inner] = np.where(go_left, left[n], right[n])
        depth = leaf_add[node].sum(axis=1)
        out[start : start + chunk] = 2.0 ** (-depth / denominator) if denominator else 1.0
    return out


def apply_unsupervised(frame: pd.DataFrame, meta: dict, models: dict) -> pd.DataFrame:
    spec = FeatureSpec.from_json(meta["feature_spec"])
    X = spec.compute(frame).fillna(spec.impute_values).to_numpy(dtype=np.float64)
    out = frame.copy()
    if meta["task"] == "anomaly":
        out["anomaly_score"] = (
            forest_scores(models["isolation_forest"], X).astype(np.float32)
            if len(X)
            else np.zeros(0, np.float32)
        )
    else:
        m = models["pca"]
        Z = (
            ((X - m["mean"]) / m["std"]) @ m["components"].T
            if len(X)
            else np.zeros((0, len(m["components"])))
        )
        for i in range(Z.shape[1]):
            out[f"pca_{i + 1}"] = Z[:, i].astype(np.float32)
    return out
