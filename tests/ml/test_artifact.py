"""Models are data: a model folder loads only the files it lists, inside itself, in formats that
cannot run code, each checked against its SHA-256; the feature spec is checksummed too."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_engine.ml.artifact import ModelError, file_sha256, load_model
from survey_engine.ml.unsupervised import forest_arrays, forest_scores, train_anomaly, train_pca


class _Evil:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    rng = np.random.default_rng(5)
    n = 3000
    df = pd.DataFrame({"u": rng.normal(19, 0.5, n)})
    df["g"] = df.u - 1 + rng.normal(0, 0.05, n)
    df["r"] = df.g - 0.5 + rng.normal(0, 0.05, n)
    path = tmp_path_factory.mktemp("art") / "t.parquet"
    df.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def anomaly_model(table, client, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "iso"
    train_anomaly(str(table), ["u-g", "g-r"], str(out), n_estimators=50, client=client)
    return out


def test_isolation_forest_arrays_score_exactly_as_scikit_learn():
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 3))
    X[:20] += 5
    est = IsolationForest(n_estimators=60, random_state=2).fit(X)
    np.testing.assert_allclose(
        forest_scores(forest_arrays(est), X), -est.score_samples(X), rtol=0, atol=1e-12
    )


def test_model_folders_hold_no_pickles_and_list_every_file(anomaly_model, table, client, tmp_path):
    train_pca(str(table), ["u-g", "g-r"], str(tmp_path / "pca"), n_components=1, client=client)
    for folder in (anomaly_model, tmp_path / "pca"):
        meta = json.loads((folder / "model.json").read_text())
        on_disk = sorted(p.name for p in folder.iterdir() if p.name != "model.json")
        assert on_disk == sorted(meta["checksums"]) and not any(
            n.endswith((".pkl", ".joblib")) for n in on_disk
        )
        assert all(meta["checksums"][f] == file_sha256(folder / f) for f in on_disk)
        load_model(folder)


def _copy(model: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "m"
    shutil.copytree(model, dst)
    return dst


def _edit(folder: Path, change) -> None:
    meta = json.loads((folder / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))


def test_an_entry_outside_the_folder_runs_no_code_and_exits_2(anomaly_model, table, tmp_path):
    model = _copy(anomaly_model, tmp_path)
    marker = tmp_path / "PWNED"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Evil(str(marker))))
    _edit(model, lambda m: m["files"].update({"isolation_forest": "../evil.pkl"}))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "predict",
            "--model",
            str(model),
            "--catalog",
            str(table),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert "'../evil.pkl'" in run.stderr and "model.json" in run.stderr and "Traceback" not in run.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_pickle_inside_the_folder_is_never_read(anomaly_model, tmp_path):
    model = _copy(anomaly_model, tmp_path)
    marker = tmp_path / "PWNED"
    (model / "evil.pkl").write_bytes(pickle.dumps(_Evil(str(marker))))
    _edit(
        model,
        lambda m: (
            m["files"].update({"isolation_forest": "evil.pkl"}),
            m["checksums"].update({"evil.pkl": file_sha256(model / "evil.pkl")}),
        ),
    )
    with pytest.raises(ModelError, match=r"evil\.pkl: not a safe model format"):
        load_model(model)
    assert not marker.exists()


def test_a_renamed_feature_is_refused(anomaly_model, tmp_path):
    model = _copy(anomaly_model, tmp_path)

    def rename(meta):
        meta["features"] = ["u-r" if f == "u-g" else f for f in meta["features"]]
        meta["feature_spec"] = json.loads(json.dumps(meta["feature_spec"]).replace('"u-g"', '"u-r"'))

    _edit(model, rename)
    with pytest.raises(ModelError, match=r"model\.json: the feature spec does not match its checksum"):
        load_model(model)


def test_a_replaced_or_truncated_file_is_refused_naming_it(anomaly_model, tmp_path):
    model = _copy(anomaly_model, tmp_path)
    part = model / "isolation_forest.npz"
    part.write_bytes(part.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"isolation_forest\.npz: checksum does not match"):
        load_model(model)
