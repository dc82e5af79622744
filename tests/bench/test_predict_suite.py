"""The predict suite: its one-process peer computes what survey_engine's ``predict_frame`` computes
from the same boosters (photo-z median, classifier probabilities after the temperature), and the
predict stage's cost model leaves the reference models' rows out. The suite end to end (the default
photo-z model, the classifier and the members' model, all agreeing) is checked on the quick bench's
report in ``test_bench.py``."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from survey_engine.bench import predict_peer
from survey_engine.bench.cost_model import cost_models
from survey_engine.ml.ensemble import ensemble_proba, member_matrix, photoz_raw


def _views(k: int, members: int, rng) -> dict:
    rotations = [np.linalg.qr(rng.normal(size=(k, k)))[0] for _ in range(members)]
    return {
        "mean": rng.normal(size=k).tolist(),
        "scale": (1 + rng.random(k)).tolist(),
        "rotations": rotations,
    }


def _data(rng, n: int = 3000, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, k)).astype(np.float32)
    return X, X[:, 0] + 0.5 * X[:, 1] * X[:, 2]


def test_peer_classifier_equals_predict_frame_probabilities():
    rng = np.random.default_rng(3)
    X, s = _data(rng)
    y = np.digitize(s, [-0.5, 0.5])  # three classes
    views = _views(X.shape[1], 3, rng)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1}
    models = {
        ("classifier" if m == 0 else f"classifier_{m}"): xgb.train(
            params, xgb.DMatrix(member_matrix(X, views, m), y), 15
        )
        for m in range(3)
    }
    meta = {"classes": ["GALAXY", "QSO", "STAR"], "temperature": 1.7}
    peer = predict_peer.class_columns(models, X, views, meta)
    ours = ensemble_proba(models, X, views, meta["temperature"])
    for i, c in enumerate(meta["classes"]):
        np.testing.assert_allclose(peer[f"prob_{c}"], ours[:, i].astype(np.float32), rtol=1e-6)
    assert list(peer["class_pred"]) == list(np.asarray(meta["classes"])[ours.argmax(axis=1)])
    assert len(set(peer["class_pred"])) == 3


@pytest.mark.parametrize("stacked", [True, False])
def test_peer_photoz_median_equals_predict_frame(stacked):
    rng = np.random.default_rng(4)
    X, s = _data(rng)
    y = np.log1p(np.abs(s))
    views = {**_views(X.shape[1], 2, rng), "stacked": stacked}
    p = {"max_depth": 4, "nthread": 1}
    if stacked:
        models = {"median": xgb.train(p, xgb.DMatrix(member_matrix(X, views, 0), y), 20)}
    else:
        models = {
            ("median" if m == 0 else f"median_{m}"): xgb.train(
                p, xgb.DMatrix(member_matrix(X, views, m), y), 20
            )
            for m in range(2)
        }
    q = {**p, "objective": "reg:quantileerror", "quantile_alpha": [0.16, 0.84]}
    models["quantiles"] = xgb.train(q, xgb.DMatrix(X, y), 20)
    peer = predict_peer.photoz_columns(models, X, views)
    m, lo, hi = photoz_raw(models, X, views)
    np.testing.assert_allclose(peer["z_phot"], np.expm1(m).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(peer["z_lo"], np.expm1(lo).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(peer["z_hi"], np.expm1(hi).astype(np.float32), rtol=1e-6)


def test_predict_cost_model_is_the_default_models_only():
    def row(rows, task_s, modelled=True):
        r = {"suite": "predict", "tool": "survey_engine", "case": f"c{rows}", "rows": rows, "workers": 2}
        return {**r, "seconds": task_s / 2 + 1, "task_seconds": task_s, "modelled": modelled}

    default = [row(1_000_000, 10.0), row(10_000_000, 100.0)]
    reference = [row(1_000_000, 200.0, modelled=False)]  # 20x the per-row cost: would skew the fit
    (m,) = [m for m in cost_models(default + reference) if m["stage"] == "predict"]
    assert m["sizes"] == [1_000_000, 10_000_000]
    assert m["core_s_per_row"] == pytest.approx(1e-5)


def test_summary_lists_each_prediction_model():
    from survey_engine.bench.report import _prediction_lines

    base = {"suite": "predict", "tool": "survey_engine"}
    rows = [
        {**base, "model": "photoz distilled", "rows": 10**7, "rows_per_s": 2.5e5, "trees_per_row": 557}
        | {"sigma_nmad": 0.0580, "speedup_vs_members": 10.2, "sigma_nmad_vs_members": 0.004},
        {**base, "model": "classify stacked", "rows": 10**6, "rows_per_s": 2e5, "trees_per_row": 480}
        | {"accuracy": 0.9731, "speedup_vs_members": 22.2, "accuracy_vs_members": 0.0019},
        {**base, "model": "classify members", "rows": 10**6, "rows_per_s": 9000.0, "trees_per_row": 9600}
        | {"accuracy": 0.9712},
        {**base, "tool": "single_process", "rows": 10**7, "rows_per_s": 3e5},
    ]
    lines = _prediction_lines(rows)
    assert lines[2:5] == [
        "- photoz distilled, 10,000,000 rows: 250,000 rows/s, 557 trees per row, sigma_NMAD 0.0580; "
        "10.2x the members' rows/s, sigma_NMAD +0.4% against theirs",
        "- classify stacked, 1,000,000 rows: 200,000 rows/s, 480 trees per row, accuracy 0.9731; "
        "22.2x the members' rows/s, accuracy +0.0019 against theirs",
        "- classify members, 1,000,000 rows: 9,000 rows/s, 9600 trees per row, accuracy 0.9712",
    ]
    assert _prediction_lines(rows[3:]) == []
