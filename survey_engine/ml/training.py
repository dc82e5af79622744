"""Fitting a task's boosters on prepared rows: the photo-z median ensemble and quantile booster
with the p(z) calibrated on rows they did not train on, or the classification ensemble with its
temperature fitted on held-out training rows."""

from __future__ import annotations

import math

import dask
import numpy as np
import pandas as pd

from survey_engine.features.spec import FeatureSpec
from survey_engine.ml.dask_xgboost import dask_train, xgb_params
from survey_engine.ml.ensemble import (
    ensemble_proba,
    fit_views,
    member_count,
    member_name,
    members_predict,
    photoz_raw,
    train_members,
)
from survey_engine.ml.options import (
    CALIBRATION_FRACTION,
    CALIBRATION_MAX_ROWS,
    CLASS_WEIGHT_POWER,
    CLASSIFY_ENSEMBLE,
    CLASSIFY_PARAMS,
    DISTILLED_PARAMS,
    EARLY_STOPPING_ROUNDS,
    MEMBER_PHOTOZ_PARAMS,
    MEMBER_QUANTILE_PARAMS,
    MEMBERS,
    PHOTOZ_ENSEMBLE,
    PHOTOZ_PARAMS,
    QUANTILE_PARAMS,
    STACKED_CLASSIFY_PARAMS,
    STOP_TOLERANCE,
    TrainingError,
)


def balanced_weights(frame, k: int, power: float):
    """Class weights (total / (k n_c)) ** power: 1 balances the classes fully, 0 not at all."""
    counts = frame["_y"].value_counts().compute()
    total = counts.sum()
    w = {float(c): (total / (k * n)) ** power for c, n in counts.items()}
    return frame["_y"].map(w, meta=("_y", "f8"))


def fit(
    task: str,
    client,
    frame,
    spec: FeatureSpec,
    classes,
    params: dict,
    device: str,
    seed: int,
    members: int = MEMBERS,
    feature_inputs: dict | None = None,
    progress: bool = False,
    desc: str = "train",
    ensemble: str | None = None,
) -> dict:
    """Train the model(s) of ``task`` on ``frame`` (prepared rows). Returns boosters, the
    ensemble's views and extras. Photo-z: the boosters train on the rows that are not calibration
    rows (``_cal``), and the p(z) is calibrated on those (``calibration``); ``ensemble`` (default
    ``PHOTOZ_ENSEMBLE``) is "distilled", "stacked" or "members" (ml/options.py). Classification:
    ``ensemble`` (default ``CLASSIFY_ENSEMBLE``) is "stacked" or "members". With ``progress``, one
    bar ``desc`` counts every boosting round."""
    from survey_engine.runtime import event_progress

    feats = list(spec.features)
    if task == "photoz":
        return _fit_photoz(
            client,
            frame,
            feats,
            params,
            device,
            seed,
            members,
            feature_inputs,
            progress,
            desc,
            ensemble or PHOTOZ_ENSEMBLE,
        )
    layout = ensemble or CLASSIFY_ENSEMBLE
    views = fit_views(frame, feats, members, seed, stacked=layout == "stacked")
    base = STACKED_CLASSIFY_PARAMS if views and views.get("stacked") else CLASSIFY_PARAMS
    rounds = int({**base, **params}["rounds"])
    with event_progress(
        client, 2 * member_count(views) * rounds, desc, progress, unit="round"
    ) as topic:  # temperature (stopping early when stacked: the bar then jumps to its end) + final
        return _fit_classifier(client, frame, feats, views, classes, params, device, seed, topic)


def _fit_photoz(
    client,
    frame,
    feats: list[str],
    params: dict,
    device: str,
    seed: int,
    members: int,
    feature_inputs: dict | None,
    progress: bool,
    desc: str,
    layout: str,
) -> dict:
    """The photo-z median booster(s) and 16% / 84% quantile booster, and the p(z) calibration.
    ``layout``: "distilled" (members, then one student on their stacked views), "stacked" or
    "members" (ml/options.py, ENSEMBLES)."""
    from survey_engine.runtime import event_progress

    cal_rows, frame = frame[frame["_cal"]], frame[~frame["_cal"]]
    views = fit_views(frame, feats, members, seed, stacked=layout == "stacked")

    def log_z(rows):
        return rows.assign(_y=np.log1p(rows["_y"].clip(lower=-0.99)))

    frame, cal_log = log_z(frame), log_z(cal_rows)
    early = layout in ("stacked", "distilled")
    distil = layout == "distilled" and views is not None
    p, rounds = xgb_params(
        PHOTOZ_PARAMS if layout == "stacked" else MEMBER_PHOTOZ_PARAMS, params, device, seed
    )
    p["objective"] = "reg:absoluteerror"
    q, qrounds = xgb_params(QUANTILE_PARAMS if early else MEMBER_QUANTILE_PARAMS, {}, device, seed)
    q.update({"objective": "reg:quantileerror", "quantile_alpha": [0.16, 0.84]})
    s, srounds = xgb_params(DISTILLED_PARAMS, {}, device, seed)
    if "rounds" in params:  # given rounds (--rounds) also cap the quantile booster and the student
        qrounds, srounds = min(qrounds, rounds), min(srounds, rounds)
    s.update({"objective": "reg:squarederror", "eval_metric": "mae"})
    total = member_count(views) * rounds + qrounds + (srounds if distil else 0)
    with event_progress(client, total, desc, progress, unit="round") as topic:
        boosters = train_members(
            client,
            frame,
            feats,
            views,
            p,
            rounds,
            "median",
            topic=topic,
            stop_on=cal_log if layout == "stacked" else None,
            stopping_rounds=EARLY_STOPPING_ROUNDS,
        )
        if distil:
            boosters, views = distil_members(
                client, frame, feats, views, boosters, s, srounds, cal_log, topic
            )
        # the quantile booster trains its fixed rounds: XGBoost's quantile loss cannot be evaluated on a
        # worker that holds no calibration rows ("Multi-target is not yet supported")
        boosters["quantiles"] = dask_train(client, frame, feats, q, qrounds, topic=topic)
    span = tuple(float(v) for v in dask.compute(frame["_y"].min(), frame["_y"].max()))
    calibration = calibrate_photoz(
        boosters,
        views,
        cal_rows.compute(),
        feats,
        feature_inputs,
        seed,
        span if np.isfinite(span).all() else None,
    )
    return {"boosters": boosters, "views": views, "calibration": calibration}


def distil_members(
    client,
    frame,
    feats: list[str],
    views: dict,
    teacher: dict,
    params: dict,
    rounds: int,
    stop_on,
    topic: str | None = None,
) -> tuple[dict, dict]:
    """One booster (the student) on the members' views side by side, trained to reproduce the
    members' mean log(1 + z) on the training rows (a smooth target, without the noise of the
    truth), and stopped once its absolute error against the truth of ``stop_on`` (the calibration
    rows) stops improving. Returns the student as the "median" booster and its (stacked) views."""
    from survey_engine.runtime import Shared

    student_views = {**views, "stacked": True}
    meta = frame._meta
    with Shared(client, teacher) as shared:  # the members sent to each worker once
        targets = frame.map_partitions(teacher_target, feats, views, shared, meta=meta)
        student = train_members(
            client,
            targets,
            feats,
            student_views,
            params,
            rounds,
            "median",
            topic=topic,
            stop_on=stop_on,
            stopping_rounds=EARLY_STOPPING_ROUNDS,
            stop_tolerance=STOP_TOLERANCE,
        )
    return student, student_views


def teacher_target(part: pd.DataFrame, feats: list[str], views: dict, teacher) -> pd.DataFrame:
    """``part`` with ``_y`` replaced by the members' mean log(1 + z) (``teacher``: the boosters or
    a ``runtime.Shared`` holding them)."""
    from survey_engine.runtime import shared_value

    if not len(part):
        return part
    X = part[feats].to_numpy(dtype=np.float32, na_value=np.nan)
    return part.assign(
        _y=np.mean(members_predict(shared_value(teacher), "median", X, views), axis=0, dtype=np.float64)
    )


def _fit_classifier(
    client,
    frame,
    feats: list[str],
    views: dict | None,
    classes,
    params: dict,
    device: str,
    seed: int,
    topic: str | None,
) -> dict:
    """A temperature-calibrated classification ensemble (two ensembles' worth of rounds). With
    stacked views (one booster), the first ensemble also stops early on the inner held-out fold
    (``STOP_TOLERANCE``), and the final one trains on every row for the rounds it kept; without
    them (one member), or with too few held-out rows to judge, the members' fixed rounds."""
    k = len(classes)
    # temperature: fit on rows held out of a first ensemble, then train the final one on everything
    inner = frame["_fold"] == frame["_fold"].max()
    if int(frame["_fold"].nunique().compute()) < 2:  # one fold left (--search on 3 folds): the _cal share
        inner = frame["_cal"]
    held = frame[inner].compute()
    usable = len(held) >= 20 and held["_y"].nunique() > 1
    early = bool(views and views.get("stacked")) and usable
    p, rounds = xgb_params(
        STACKED_CLASSIFY_PARAMS if early else CLASSIFY_PARAMS,
        {k: v for k, v in params.items() if k != "class_weight_power"},
        device,
        seed,
    )
    p.update({"objective": "multi:softprob", "num_class": k, "eval_metric": "mlogloss"})
    weights = balanced_weights(frame, k, float(params.get("class_weight_power", CLASS_WEIGHT_POWER)))
    t_models = train_members(
        client,
        frame[~inner],
        feats,
        views,
        p,
        rounds,
        "classifier",
        weights[~inner],
        topic,
        stop_on=frame[inner] if early else None,
        stopping_rounds=EARLY_STOPPING_ROUNDS,
        stop_tolerance=STOP_TOLERANCE,
    )
    temperature = 1.0
    if usable:
        probs = ensemble_proba(t_models, held[feats].to_numpy(dtype=np.float32, na_value=np.nan), views, 1.0)
        temperature = fit_temperature(probs, held["_y"].to_numpy().astype(int))
    if early:  # every row now, for the rounds the held-out fold chose
        rounds = t_models[member_name("classifier", 0)].num_boosted_rounds()
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


def calibrate_photoz(
    models: dict,
    views: dict | None,
    cal: pd.DataFrame,
    feats: list[str],
    feature_inputs: dict | None,
    seed: int,
    target_range: tuple[float, float] | None = None,
) -> dict:
    """The p(z) calibration (ml/pdf.py) from rows the boosters did not train on; also from the same
    rows with one input column taken away, for rows with missing features. ``target_range``: the
    training rows' log(1 + z) range (the quantiles stay within it and the calibration rows')."""
    from survey_engine.ml.pdf import fit_calibration, missing_code

    if len(cal) > CALIBRATION_MAX_ROWS:
        cal = cal.sample(CALIBRATION_MAX_ROWS, random_state=seed)
    if len(cal) < 20:
        raise TrainingError(
            f"only {len(cal)} calibration rows (a {CALIBRATION_FRACTION:.0%} share of the training rows, by sky pixel); "
            "the photo-z intervals need at least 20: give more labelled rows"
        )
    X = cal[feats].to_numpy(dtype=np.float32, na_value=np.nan)
    y = np.log1p(cal["_y"].clip(lower=-0.99).to_numpy(dtype=np.float64))
    m, lo, hi = photoz_raw(models, X, views)
    masks = input_masks(feats, feature_inputs)
    if not masks:
        return fit_calibration(m, lo, hi, y, target_range=target_range)
    patterns = {}
    for mask in masks:  # each input column removed from every calibration row in turn
        Xm = X.copy()
        Xm[:, mask] = np.nan
        patterns[int(missing_code(np.where(mask, np.nan, 0.0)[None, :])[0])] = (
            *photoz_raw(models, Xm, views),
            y,
        )
    mm, mlo, mhi = photoz_raw(models, mask_one_input(X, masks, seed), views)
    return fit_calibration(m, lo, hi, y, mm, mlo, mhi, y, patterns=patterns, target_range=target_range)


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
    return {
        "task": opts.task,
        "features": list(spec.features),
        "feature_spec": spec.to_json(),
        "classes": classes,
        "temperature": fitted.get("temperature", 1.0),
        "views": fitted.get("views"),
        "calibration": fitted.get("calibration"),
    }
