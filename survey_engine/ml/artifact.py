"""Model artifacts on disk: everything needed to apply a model again, and to refuse a wrong one.

``MODEL_DIR/model.json`` holds the task, the feature spec, the target or label and classes, the
training catalog's fingerprint, metrics, parameters and library versions; the fitted models sit
beside it. The folder is written under a temporary name and renamed into place, so a crash never
leaves half a model.

Models are data, never code: a model folder holds only formats that cannot run code when read -
XGBoost's own UBJSON (``*.ubj``), JSON, and NumPy ``*.npz`` read with ``allow_pickle=False``
(fitted scikit-learn estimators are stored as their arrays, e.g. an Isolation Forest's trees).
A catalog of light-curve features records how they were computed (``features.variability``); a model
trained on one stores that spec as ``variability_spec``, inside the feature spec's checksum.
``model.json`` lists every file it loads, each a plain name inside the folder, with its SHA-256,
and the SHA-256 of the feature spec; ``load_model`` checks them all before reading anything, so a
tampered, truncated or swapped file, a renamed feature, or an entry such as ``../evil.pkl`` is a
``ModelError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from survey_engine.errors import SurveyEngineError
from survey_engine.runtime import library_versions

FORMAT_VERSION = 2
MODEL_FILE = "model.json"
SAFE_SUFFIXES = (".ubj", ".npz", ".json")


class ModelError(SurveyEngineError, ValueError):
    """A model folder that cannot be used (missing, incompatible, tampered or not fitting the data)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def feature_spec_sha256(meta: dict) -> str:
    """Checksum of what decides the model's inputs: the feature spec and the feature names, and the
    variability spec of light-curve features when the training catalog recorded one."""
    decides = {"feature_spec": meta.get("feature_spec"), "features": meta.get("features")}
    if meta.get("variability_spec") is not None:  # absent: the checksum of models before it was stored
        decides["variability_spec"] = meta["variability_spec"]
    blob = json.dumps(decides, sort_keys=True, default=json_default)
    return hashlib.sha256(blob.encode()).hexdigest()


def training_variability_spec(table) -> dict | None:
    """The variability spec recorded in a training catalog (``ml.data.Table``), stored in the model as
    ``variability_spec`` so that ``predict`` can refuse features computed with other options."""
    from survey_engine.features.variability import recorded_spec

    return recorded_spec(table.catalog) if table.catalog is not None else None


def save_model(
    out: str | Path,
    meta: dict,
    boosters: dict | None = None,
    arrays: dict | None = None,
    extra_files: dict | None = None,
) -> Path:
    """Write a model folder atomically: ``boosters`` name -> xgboost.Booster (``name.ubj``),
    ``arrays`` name -> {key: numeric NumPy array} (``name.npz``), ``extra_files`` name -> text or
    bytes (reports; listed with checksums, never loaded as models)."""
    from survey_engine.catalog.layout import check_name, output_path, publish_folder, remove_tree, safe_child
    from survey_engine.catalog.lock import output_lock

    out = output_path(out, "--model-out")
    if out.exists() and not (out / MODEL_FILE).exists() and any(out.iterdir()):
        raise ModelError(f"{out}: exists and is not a model folder; choose another --model-out")
    with output_lock(out, f"train --model-out {out}"):
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        remove_tree(tmp, out.parent)
        tmp.mkdir(parents=True)
        files = {}
        for name, booster in (boosters or {}).items():
            booster.save_model(str(safe_child(tmp, f"{check_name(name)}.ubj")))
            files[name] = f"{name}.ubj"
        for name, content in (arrays or {}).items():
            plain = {k: np.asarray(v) for k, v in content.items()}
            odd = [k for k, v in plain.items() if v.dtype.kind not in "biuf"]
            if odd:
                raise TypeError(
                    f"model part {name}: arrays {odd} are not numeric; only numeric arrays are stored"
                )
            np.savez(safe_child(tmp, f"{check_name(name)}.npz"), **plain)
            files[name] = f"{name}.npz"
        extras = {}
        for name, content in (extra_files or {}).items():
            with open(safe_child(tmp, name), "wb" if isinstance(content, bytes) else "w") as fh:
                fh.write(content)
            extras[name] = name
        checksums = {f: file_sha256(tmp / f) for f in [*files.values(), *extras.values()]}
        meta = {
            "format_version": FORMAT_VERSION,
            "files": files,
            "checksums": checksums,
            "versions": library_versions(),
            **meta,
        }
        meta["feature_spec_sha256"] = feature_spec_sha256(meta)
        (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=1, default=json_default))
        publish_folder(tmp, out, out.parent)
    return out


def load_model(path: str | Path) -> tuple[dict, dict]:
    """(metadata, loaded models by name); a ModelError naming the file for anything unusable.

    Every file is checked (a plain name inside the folder, a safe format, its SHA-256) before
    any is read; nothing that can run code is ever read."""
    from survey_engine.catalog.layout import UnsafePathError, safe_child

    path = Path(path)
    meta_file = path / MODEL_FILE
    if not meta_file.exists():
        raise ModelError(f"{path}: not a model folder (no {MODEL_FILE})")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{meta_file}: unreadable model metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_file}: model metadata is not a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(
            f"{meta_file}: model format version {version!r}; this survey_engine reads version {FORMAT_VERSION} (retrain the model)"
        )
    if meta.get("feature_spec_sha256") != feature_spec_sha256(meta):
        raise ModelError(
            f"{meta_file}: the feature spec does not match its checksum (feature_spec_sha256): "
            "the features were edited after training; retrain instead"
        )
    files, checksums = meta.get("files"), meta.get("checksums")
    if not isinstance(files, dict) or not isinstance(checksums, dict):
        raise ModelError(f"{meta_file}: no files / checksums listed")
    checked = {}
    for name, fname in files.items():
        try:
            f = safe_child(path, fname, f"{meta_file}: model file")
        except UnsafePathError as exc:
            raise ModelError(str(exc)) from None
        if not fname.endswith(SAFE_SUFFIXES):
            raise ModelError(
                f"{f}: not a safe model format (only {', '.join(SAFE_SUFFIXES)} files are read; never pickles)"
            )
        if not f.is_file():
            raise ModelError(f"{path}: model file {fname} is missing")
        if checksums.get(fname) != file_sha256(f):
            raise ModelError(
                f"{f}: checksum does not match the one in {MODEL_FILE} (damaged or replaced file)"
            )
        checked[name] = f
    models = {}
    for name, f in checked.items():
        if f.suffix == ".ubj":
            import xgboost as xgb

            booster = xgb.Booster()
            try:
                booster.load_model(str(f))
            except xgb.core.XGBoostError as exc:
                raise ModelError(f"{f}: cannot load the XGBoost model: {exc}") from None
            models[name] = booster
        elif f.suffix == ".npz":
            try:
                with np.load(f, allow_pickle=False) as data:
                    models[name] = {k: data[k] for k in data.files}
            except (OSError, ValueError) as exc:
                raise ModelError(f"{f}: cannot read the model arrays: {exc}") from None
        else:
            try:
                models[name] = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ModelError(f"{f}: unreadable JSON: {exc}") from None
    return meta, models


def json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj))
