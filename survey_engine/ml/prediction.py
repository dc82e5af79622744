"""A supervised model applied to one pandas partition: its prediction columns (photo-z: the
calibrated p(z) grid and intervals; classification: calibrated class probabilities), with
``n_missing_features`` and ``quality`` per row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from survey_engine.features.spec import FeatureError, FeatureSpec, with_columns
from survey_engine.ml.artifact import ModelError
from survey_engine.ml.ensemble import ensemble_proba, photoz_raw

# ``quality``: 0 every feature present; 1 some missing (NaN, sentinel or text read as missing), the
# prediction rests on the rest and its intervals are the wider ones calibrated for missing features;
# 2 every feature missing: no prediction (NaN).
QUALITY_GOOD, QUALITY_MISSING, QUALITY_NONE = 0, 1, 2


def predict_frame(
    frame: pd.DataFrame, meta: dict, models, text_as_missing: bool | None = None
) -> pd.DataFrame:
    """Add the prediction columns of a model to one pandas partition, with ``n_missing_features``
    and ``quality`` per row (``models``: the boosters, or a ``runtime.Shared`` holding them).
    ``text_as_missing`` overrides the model's rule for text in a feature column."""
    from survey_engine.runtime import shared_value

    models = shared_value(models)
    spec = FeatureSpec.from_json(meta["feature_spec"])
    if text_as_missing is not None:
        spec.text_as_missing = text_as_missing
    try:
        raw = spec.compute_raw(frame).to_numpy(
            dtype=np.float64, na_value=np.nan
        )  # NaN: missing, sentinel, text
        X = (
            spec.impute(pd.DataFrame(raw, columns=spec.features, index=frame.index))
            if spec.impute_values
            else raw
        )
        X = np.ascontiguousarray(X, dtype=np.float32)
    except FeatureError as exc:
        raise ModelError(f"the data do not have what the model needs: {exc}") from None
    absent = np.isnan(raw)
    n_missing = absent.sum(axis=1).astype(np.int16)
    quality = np.where(
        n_missing == 0, QUALITY_GOOD, np.where(n_missing < raw.shape[1], QUALITY_MISSING, QUALITY_NONE)
    ).astype(np.uint8)
    if spec.missing == "drop":  # rows with a missing feature get no prediction
        quality[n_missing > 0] = QUALITY_NONE
    views = meta.get("views")
    if meta["task"] == "photoz":
        from survey_engine.ml.pdf import missing_code

        cols = _photoz_columns(X, meta, models, views, missing_code(raw), quality == QUALITY_NONE)
    elif meta["task"] == "classify":
        cols = _class_columns(X, meta, models, views, quality == QUALITY_NONE)
    else:
        raise ModelError(f"model task {meta['task']!r} is not a supervised model")
    return with_columns(frame, {**cols, "n_missing_features": n_missing, "quality": quality})


def _class_columns(X: np.ndarray, meta: dict, models: dict, views, none: np.ndarray) -> dict:
    """``class_pred`` and ``prob_<label>`` (float32) per row; none where no feature is usable."""
    classes = meta["classes"]
    p = (
        ensemble_proba(models, X, views, meta.get("temperature", 1.0))
        if len(X)
        else np.zeros((0, len(classes)))
    )
    p = p.reshape(len(X), len(classes))
    pred = pd.array(np.asarray(classes, dtype=object)[p.argmax(axis=1)] if len(X) else [], dtype="string")
    pred[none], p[none] = pd.NA, np.nan
    return {"class_pred": pred, **{f"prob_{c}": p[:, i].astype(np.float32) for i, c in enumerate(classes)}}


def _photoz_columns(
    X: np.ndarray, meta: dict, models: dict, views, missing: np.ndarray, none: np.ndarray
) -> dict:
    """z_phot (median), the 68% and 95% intervals and the p(z) quantile grid (float32)."""
    from survey_engine.ml.pdf import INTERVAL_COLUMNS, LEVELS, PDF_COLUMNS, quantile_grid

    calibration = meta.get("calibration")
    if not len(X):
        m = lo = hi = np.zeros(0)
    else:
        m, lo, hi = photoz_raw(models, X, views)
    if calibration is None:  # a model from before the calibration: its raw 16/84% interval only
        z = np.expm1(m)
        cols = {
            "z_phot": z,
            "z_phot_lo": np.minimum(np.expm1(lo), z),
            "z_phot_hi": np.maximum(np.expm1(hi), z),
        }
    else:
        grid = quantile_grid(m, lo, hi, calibration, missing)
        grid[none] = np.nan
        at = {level: grid[:, i] for i, level in enumerate(LEVELS)}
        cols = {
            "z_phot": at[0.5],
            **{c: at[level] for c, level in INTERVAL_COLUMNS.items()},
            **{c: grid[:, i] for i, c in enumerate(PDF_COLUMNS)},
        }
    return {k: np.asarray(v).astype(np.float32) for k, v in cols.items()}


def check_variability_spec(meta: dict, catalog, model_dir: str) -> None:
    """Refuse light-curve features computed otherwise than those the model was trained on.

    ``catalog``: the ``Catalog`` predicted on (None for plain files). A ModelError names each option
    that differs with both values; a catalog (or files) recording no spec is accepted with a warning,
    since its inputs cannot be checked. Models trained without a recorded spec are not checked."""
    import warnings

    from survey_engine.features.variability import SPEC_PROPERTY, recorded_spec, spec_differences

    wanted = meta.get("variability_spec")
    if wanted is None:
        return
    found = recorded_spec(catalog) if catalog is not None else None
    where = catalog.path if catalog is not None else "the input files"
    if found is None:
        warnings.warn(
            f"{where}: no variability spec recorded ({SPEC_PROPERTY}; features computed elsewhere or by an "
            f"older survey_engine): the model in {model_dir} cannot check that its inputs were computed "
            "with the options it was trained on",
            stacklevel=2,
        )
        return
    differ = spec_differences(wanted, found)
    if differ:
        raise ModelError(
            f"{where}: variability features computed with other options than the model in {model_dir} "
            f"was trained on: {'; '.join(differ)}; recompute the features with the model's options "
            f"(survey-engine variability ... --like-model {model_dir})"
        )
