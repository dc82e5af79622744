"""Apply a saved model to a whole catalog, partition by partition on the cluster.

A HATS catalog becomes a new HATS collection (margin included) with the prediction columns; plain
files become a folder of Parquet files, one per input chunk. Either is written under a temporary
name and renamed into place when complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from survey_engine.ml.artifact import ModelError, load_model
from survey_engine.ml.data import open_table
from survey_engine.ml.prediction import check_variability_spec


def apply_frame(frame: pd.DataFrame, meta: dict, models, text_as_missing: bool | None = None) -> pd.DataFrame:
    """The model's output columns added to one partition (``models``: the fitted objects, or a
    ``runtime.Shared`` holding them)."""
    from survey_engine.runtime import shared_value

    models = shared_value(models)
    if meta["task"] in ("photoz", "classify"):
        from survey_engine.ml.prediction import predict_frame

        return predict_frame(frame, meta, models, text_as_missing)
    if meta["task"] in ("anomaly", "pca"):
        from survey_engine.ml.unsupervised import apply_unsupervised

        return apply_unsupervised(frame, meta, models)
    raise ModelError(f"unknown model task {meta['task']!r}")


def predict(
    model_dir: str,
    table_path: str,
    out: str,
    client=None,
    progress: bool = True,
    missing: str | None = None,
    storage_options: dict | None = None,
) -> Path:
    """Apply the model in ``model_dir`` to every row. Text in a feature column is an error naming
    the column and row, unless ``missing`` (``--missing nan|impute|drop``) is given: then such
    values are missing values, handled as that policy says. ``table_path`` may be a remote
    catalog (``https://``, ``s3://``; ``storage_options`` as in ``open_catalog``)."""
    from survey_engine.features.spec import FeatureError, FeatureSpec
    from survey_engine.runtime import Shared, dask_client

    meta, models = load_model(model_dir)
    if missing is not None:
        meta = with_missing_policy(meta, missing, model_dir)
    table = open_table(table_path, storage_options=storage_options)
    try:
        FeatureSpec.from_json(meta["feature_spec"]).plan(table.columns)
    except FeatureError as exc:
        raise ModelError(f"{table.path}: cannot apply the model in {model_dir}: {exc}") from None
    check_variability_spec(meta, table.catalog, model_dir)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out}: exists and is not a folder; choose another --out or remove it")
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: already exists; choose another --out or remove it")
    placeholder = _Applier(meta, models, text_as_missing=True)  # Dask's made-up rows hold text ("foo")
    with (
        dask_client(client) as client,
        Shared(client, models) as shared,
    ):  # to every worker once, not in every task
        apply = _Applier(meta, shared)
        if table.catalog is not None:
            from survey_engine.catalog.catalog import open_catalog
            from survey_engine.features.variability import carried_spec

            cat = open_catalog(table_path, storage_options=storage_options)
            sample = placeholder(cat.to_dask()._meta_nonempty.head(2))
            return cat.map_partitions(apply, meta=sample.iloc[:0]).write(
                out, client=client, progress=progress, properties=carried_spec(cat)
            )
        frame = table.frame.map_partitions(
            apply, meta=placeholder(table.frame._meta_nonempty.head(2)).iloc[:0]
        )
        return _write_files(frame, out, client, progress)


def with_missing_policy(meta: dict, missing: str, model_dir: str) -> dict:
    """The model's metadata with an explicit missing-value policy: text reads as missing."""
    from survey_engine.features.spec import MISSING_POLICIES

    spec = dict(meta.get("feature_spec", {}))
    if missing not in MISSING_POLICIES:
        raise ModelError(f"--missing must be one of {MISSING_POLICIES}, got {missing!r}")
    if missing == "impute" and not spec.get("impute_values"):
        raise ModelError(
            f"{model_dir}: --missing impute needs a model trained with --missing impute (it holds no training medians)"
        )
    return {**meta, "feature_spec": {**spec, "missing": missing, "text_as_missing": True}}


class _Applier:
    """Picklable per-partition function carrying the model's metadata and a handle on its fitted
    objects (a ``runtime.Shared``) to the workers."""

    def __init__(self, meta: dict, models, text_as_missing: bool | None = None):
        self.meta, self.models, self.text_as_missing = meta, models, text_as_missing

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        return apply_frame(frame, self.meta, self.models, self.text_as_missing)


def _write_files(frame, out: Path, client, progress: bool = True) -> Path:
    from survey_engine.catalog.lock import output_lock

    with output_lock(out, f"predict --out {out}"):
        return _write_files_locked(frame, out, client, progress)


def _write_files_locked(frame, out: Path, client, progress: bool) -> Path:
    import dask

    from survey_engine.catalog import owner as ownership
    from survey_engine.catalog.build import remove_unfinished_files
    from survey_engine.catalog.layout import output_path, publish_folder, remove_tree
    from survey_engine.runtime import compute_with_progress

    out = output_path(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    remove_tree(tmp, out.parent)
    tmp.mkdir(parents=True)
    owner = ownership.claim(tmp)  # a late task of an earlier predict of this process writes nothing here

    def write(part: pd.DataFrame, i: int) -> int:
        ownership.write_file(
            tmp / f"part-{i:05d}.parquet", lambda to: part.to_parquet(to, index=False), owner
        )
        return len(part)

    compute_with_progress(
        client,
        [dask.delayed(write)(p, i) for i, p in enumerate(frame.to_delayed())],
        f"predict {out.name}",
        progress,
    )
    ownership.release(tmp)
    remove_unfinished_files(tmp)  # a lost worker's temporary, whose task ran again elsewhere
    return publish_folder(tmp, out, out.parent)
