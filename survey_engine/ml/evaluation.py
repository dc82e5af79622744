"""Metrics of a model against truth: per-partition summaries merged on the driver, for a saved
model on a labelled catalog (``evaluate``) or for freshly fitted boosters on prepared rows."""

from __future__ import annotations

import pandas as pd

from survey_engine.catalog.row_filter import RowFilterError, filter_rows
from survey_engine.features.spec import FeatureError, FeatureSpec
from survey_engine.ml import metrics as M
from survey_engine.ml.artifact import ModelError, load_model
from survey_engine.ml.data import Table, open_table
from survey_engine.ml.options import TASKS
from survey_engine.ml.prediction import predict_frame


def summaries(frame, meta: dict, models: dict, truth: str, magnitude: str | None):
    """Per-partition metric summaries of predictions against ``truth`` (delayed, then merged)."""
    import dask

    def one(part):
        pred = predict_frame(part, meta, models)
        if meta["task"] == "photoz":
            from survey_engine.ml.pdf import INTERVAL_COLUMNS, LEVELS, PDF_COLUMNS

            pred = pred.assign(**{"_zs": pd.to_numeric(part[truth], errors="coerce")})
            if "z_phot_lo95" in pred.columns:
                return M.photoz_summary(
                    pred, "z_phot", "_zs", magnitude, *INTERVAL_COLUMNS, list(PDF_COLUMNS), list(LEVELS)
                )
            return M.photoz_summary(pred, "z_phot", "_zs", magnitude, "z_phot_lo", "z_phot_hi")
        pred = pred.assign(_label=part[truth].astype("string").str.strip())
        return M.classification_summary(pred, "_label", meta["classes"])

    with _shared(models) as models:  # sent to the workers once, not inside every task
        parts = dask.compute(*[dask.delayed(one)(p) for p in frame.to_delayed()])
    if meta["task"] == "photoz":
        return M.photoz_metrics_from_summary(M.merge_summaries(list(parts)))
    return M.classification_metrics(M.merge_classification(list(parts)), meta["classes"])


def sample_predictions(frame, meta, models, limit: int = 50_000) -> pd.DataFrame:
    """Test-set predictions (prepared rows, with ``_y``), sampled down for the report's plots."""
    import dask

    prepared_meta = on_prepared(meta)
    with _shared(models) as models:
        parts = dask.compute(
            *[dask.delayed(predict_frame)(p, prepared_meta, models) for p in frame.to_delayed()]
        )
    df = pd.concat(parts) if parts else pd.DataFrame()
    if len(df) > limit:
        df = df.sample(limit, random_state=0)
    return df


def _shared(models):
    """A context giving the boosters scattered to every worker once (a ``runtime.Shared``) when a
    distributed client is running; as they are otherwise."""
    from contextlib import nullcontext

    from survey_engine.runtime import Shared

    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        return nullcontext(models)
    return Shared(client, models)


def on_prepared(meta: dict) -> dict:
    """The model's metadata for rows whose features are already computed (columns named as the
    features): the boosters are applied to them as they are."""
    return {
        **meta,
        "feature_spec": {
            **meta["feature_spec"],
            "ebv_column": None,
            "sentinels": [],
            "missing": "nan",
            "impute_values": {},
            "text_as_missing": True,
        },
    }


def evaluate_prepared(rows, meta, models) -> dict:
    """Metrics on prepared rows (features already computed: apply the boosters directly)."""
    fake_meta = on_prepared(meta)
    truth = "_y"
    if meta["task"] == "classify":
        classes = meta["classes"]
        rows = rows.assign(
            _label=rows["_y"].map({float(i): c for i, c in enumerate(classes)}, meta=("_y", "object"))
        )
        truth = "_label"
    mag = "_mag" if "_mag" in rows.columns else None
    return summaries(rows, fake_meta, models, truth, mag)


def check_model_fits(meta: dict, table: Table) -> None:
    spec = FeatureSpec.from_json(meta["feature_spec"])
    try:
        spec.plan(table.columns)
    except FeatureError as exc:
        raise ModelError(f"{table.path}: cannot apply the model: {exc}") from None


def evaluate(
    model_dir: str, table_path: str, client=None, truth: str | None = None, where: str | None = None
) -> dict:
    """Metrics of a saved model on a labelled catalog (every row with a truth value)."""
    from survey_engine.runtime import dask_client

    meta, models = load_model(model_dir)
    if meta["task"] not in TASKS:
        raise ModelError(f"{model_dir}: a {meta['task']} model has no truth to evaluate against")
    table = open_table(table_path)
    check_model_fits(meta, table)
    truth = truth or (meta["target"] if meta["task"] == "photoz" else meta["label"])
    if truth not in table.columns:
        raise ModelError(f"{table.path}: no truth column {truth!r} to evaluate against")
    mag = meta.get("magnitude_column")
    mag = mag if mag in table.columns else None
    try:
        frame = filter_rows(table.frame, where)
    except RowFilterError as exc:
        raise ModelError(f"{table.path}: {exc}") from None
    with dask_client(client):
        return summaries(frame, meta, models, truth, mag)
