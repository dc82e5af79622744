"""Fitting a task's boosters on prepared rows: the photo-z median ensemble and quantile booster
with the p(z) calibrated on rows they did not train on, or the classification ensemble with its
temperature fitted on held-out training rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from survey_engine.features.spec import FeatureSpec
from survey_engine.ml.dask_xgboost import dask_train, xgb_params
from survey_engine.ml.ensemble import ensemble_proba, fit_views, member_count, photoz_raw, train_members
from survey_engine.ml.options import (
    CALIBRATION_FRACTION,
    CALIBRATION_MAX_ROWS,
    CLASS_WEIGHT_POWER,
    CLASSIFY_PARAMS,
    MEMBERS,
    PHOTOZ_PARAMS,
    QUANTILE_PARAMS,
    TrainingError,
)


def balanced_weights(frame, k: int, power: float):
    """Class weights (total / (k n_c)) ** power: 1 balances the classes fully, 0 not at all."""
    counts = frame["_y"].value_counts().compute()
    total = counts.sum()
    w = {float(c): (total / (k * n)) ** power for c, n in counts.items()}
    return frame["_y"].map(w, meta=("_y", "f8"))


def fit(task: str, client, frame, spec: FeatureSpec, classes, params: dict, device: str, seed: int, members: int = MEMBERS,
        feature_inputs: dict | None = None, progress: bool = False, desc: str = "train") -> dict:
    """Train the model(s) of ``task`` on ``frame`` (prepared rows). Returns boosters, the
    ensemble's views and extras. Photo-z: the boosters train on the rows that are not calibration
    rows (``_cal``), and the p(z) is calibrated on those (``calibration``). With ``progress``, one
    bar ``desc`` counts every boosting round."""
    from survey_engine.runtime import event_progress

    feats = list(spec.features)
    if task == "photoz":
        cal_rows, frame = frame[frame["_cal"]], frame[~frame["_cal"]]
        views = fit_views(frame, feats, members, seed)
        frame = frame.assign(_y=np.log1p(frame["_y"].clip(lower=-0.99)))
        p, rounds = xgb_params(PHOTOZ_PARAMS, params, device, seed)
        p["objective"] = "reg:absoluteerror"
        q, qrounds = xgb_params(QUANTILE_PARAMS, {}, device, seed)
        q.update({"objective": "reg:quantileerror", "quantile_alpha": [0.16, 0.84]})
        with event_progress(client, member_count(views) * rounds + qrounds, desc, progress, unit="round") as topic:
            boosters = train_members(client, frame, feats, views, p, rounds, "median", topic=topic)
            boosters["quantiles"] = dask_train(client, frame, feats, q, qrounds, topic=topic)
        calibration = calibrate_photoz(boosters, views, cal_rows.compute(), feats, feature_inputs, seed)
        return {"boosters": boosters, "views": views, "calibration": calibration}
    views = fit_views(frame, feats, members, seed)
    rounds = int({**CLASSIFY_PARAMS, **params}["rounds"])
    with event_progress(client, 2 * member_count(views) * rounds, desc, progress, unit="round") as topic:  # temperature + final
        return _fit_classifier(client, frame, feats, views, classes, params, device, seed, topic)


def _fit_classifier(client, frame, feats: list[str], views: dict | None, classes, params: dict, device: str, seed: int,
                    topic: str | None) -> dict:
    """A temperature-calibrated classification ensemble (two ensembles' worth of rounds)."""
    k = len(classes)
    p, rounds = xgb_params(CLASSIFY_PARAMS, {k: v for k, v in params.items() if k != "class_weight_power"}, device, seed)
    p.update({"objective": "multi:softprob", "num_class": k, "eval_metric": "mlogloss"})
    weights = balanced_weights(frame, k, float(params.get("class_weight_power", CLASS_WEIGHT_POWER)))
    # temperature: fit on rows held out of a first ensemble, then train the final one on everything
    inner = frame["_fold"] == frame["_fold"].max()
    t_models = train_members(client, frame[~inner], feats, views, p, rounds, "classifier", weights[~inner], topic)
    held = frame[inner].compute()
    temperature = 1.0
    if len(held) >= 20 and held["_y"].nunique() > 1:
        probs = ensemble_proba(t_models, held[feats].to_numpy(dtype=np.float32, na_value=np.nan), views, 1.0)
        temperature = fit_temperature(probs, held["_y"].to_numpy().astype(int))
    boosters = train_members(client, frame, feats, views, p, rounds, "classifier", weights, topic)
    return {"boosters": boosters, "temperature": temperature, "views": views}


def input_masks(feats: list[str], feature_inputs: dict | None) -> list[np.ndarray]:
    """For each input column, which features go missing without it (those that leave some feature)."""
    if not feature_inputs:
        feature_inputs = {f: [f] for f in feats}
    columns = sorted({c for f in feats for c in feature_inputs.get(f, [f])})
    masks = [np.array([c in feature_inputs.get(f, [f]) for f in feats]) for c in columns]
    unique = {tuple(mk): mk for mk in masks if mk.any() and not mk.all()}
    return list(unique.values())


def mask_one_input(X: np.ndarray, masks: list[np.ndarray], seed: int) -> np.ndarray:
    """``X`` with, in each row, one input column taken away at random (its features set to NaN)."""
    rng = np.random.default_rng(seed)
    out = X.copy()
    out[np.stack(masks)[rng.integers(0, len(masks), len(X))]] = np.nan
    return out


def calibrate_photoz(models: dict, views: dict | None, cal: pd.DataFrame, feats: list[str], feature_inputs: dict | None,
                     seed: int) -> dict:
    """The p(z) calibration (ml/pdf.py) from rows the boosters did not train on; also from the same
    rows with one input column taken away, for rows with missing features."""
    from survey_engine.ml.pdf import fit_calibration, missing_code

    if len(cal) > CALIBRATION_MAX_ROWS:
        cal = cal.sample(CALIBRATION_MAX_ROWS, random_state=seed)
    if len(cal) < 20:
        raise TrainingError(f"only {len(cal)} calibration rows (a {CALIBRATION_FRACTION:.0%} share of the training rows, by sky pixel); "
                            "the photo-z intervals need at least 20: give more labelled rows")
    X = cal[feats].to_numpy(dtype=np.float32, na_value=np.nan)
    y = np.log1p(cal["_y"].clip(lower=-0.99).to_numpy(dtype=np.float64))
    m, lo, hi = photoz_raw(models, X, views)
    masks = input_masks(feats, feature_inputs)
    if not masks:
        return fit_calibration(m, lo, hi, y)
    patterns = {}
    for mask in masks:  # each input column removed from every calibration row in turn
        Xm = X.copy()
        Xm[:, mask] = np.nan
        patterns[int(missing_code(np.where(mask, np.nan, 0.0)[None, :])[0])] = (*photoz_raw(models, Xm, views), y)
    mm, mlo, mhi = photoz_raw(models, mask_one_input(X, masks, seed), views)
    return fit_calibration(m, lo, hi, y, mm, mlo, mhi, y, patterns=patterns)


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the log loss of softmax(log p / T) on held-out rows."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(probs, 1e-12, 1))

    def nll(log_t):
        z = logp / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(y)), y]))

    res = minimize_scalar(nll, bounds=(-2.0, 2.0), method="bounded")
    return float(math.exp(res.x))


def fitted_meta(opts, spec, classes, fitted) -> dict:
    """What applying freshly fitted boosters needs (search and cross-validation)."""
    return {"task": opts.task, "features": list(spec.features), "feature_spec": spec.to_json(), "classes": classes,
            "temperature": fitted.get("temperature", 1.0), "views": fitted.get("views"), "calibration": fitted.get("calibration")}
