"""Model artifacts on disk: everything needed to apply a model again, and to refuse a wrong one.

``MODEL_DIR/model.json`` holds the task, the feature spec, the target or label and classes, the
training catalog's fingerprint, metrics, parameters and library versions; the fitted models sit
beside it (``*.ubj`` XGBoost boosters, ``*.pkl`` scikit-learn estimators). The folder is written
under a temporary name and renamed into place, so a crash never leaves half a model.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

from survey_engine.errors import SurveyEngineError

FORMAT_VERSION = 1
MODEL_FILE = "model.json"


class ModelError(SurveyEngineError, ValueError):
    """A model folder that cannot be used (missing, incompatible, or not fitting the data)."""


def library_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("survey_engine", "scikit-learn", "dask", "distributed", "dask-ml", "numpy", "pandas", "pyarrow"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    try:  # the module's version: the xgboost and xgboost-cpu wheels install the same module
        import xgboost

        out["xgboost"] = xgboost.__version__
        out["xgboost_cuda"] = bool(xgboost.build_info().get("USE_CUDA"))
    except ImportError:
        pass
    return out


def save_model(out: str | Path, meta: dict, boosters: dict | None = None, estimators: dict | None = None, extra_files: dict | None = None) -> Path:
    """Write a model folder atomically: ``boosters`` name -> xgboost.Booster, ``estimators`` name -> picklable."""
    out = Path(out)
    if out.exists() and not (out / MODEL_FILE).exists() and any(out.iterdir()):
        raise ModelError(f"{out}: exists and is not a model folder; choose another --model-out")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    for name, booster in (boosters or {}).items():
        booster.save_model(str(tmp / f"{name}.ubj"))
        files[name] = f"{name}.ubj"
    for name, est in (estimators or {}).items():
        with open(tmp / f"{name}.pkl", "wb") as fh:
            pickle.dump(est, fh)
        files[name] = f"{name}.pkl"
    for name, content in (extra_files or {}).items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(tmp / name, mode) as fh:
            fh.write(content)
    meta = {"format_version": FORMAT_VERSION, "files": files, "versions": library_versions(), **meta}
    (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def load_model(path: str | Path) -> tuple[dict, dict]:
    """(metadata, loaded models by name); a clear ModelError for anything unusable."""
    path = Path(path)
    meta_file = path / MODEL_FILE
    if not meta_file.exists():
        raise ModelError(f"{path}: not a model folder (no {MODEL_FILE})")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta_file}: unreadable model metadata: {exc}") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{meta_file}: model format version {version!r}; this survey_engine reads version {FORMAT_VERSION} (retrain the model)")
    models = {}
    for name, fname in meta.get("files", {}).items():
        f = path / fname
        if not f.exists():
            raise ModelError(f"{path}: model file {fname} is missing")
        if fname.endswith(".ubj"):
            import xgboost as xgb

            booster = xgb.Booster()
            try:
                booster.load_model(str(f))
            except xgb.core.XGBoostError as exc:
                raise ModelError(f"{f}: cannot load the XGBoost model: {exc}") from None
            models[name] = booster
        else:
            with open(f, "rb") as fh:
                models[name] = pickle.load(fh)
    return meta, models


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj))
