"""Bad ML input: clear errors naming the column or file, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from survey_engine.ml.apply import predict
from survey_engine.ml.artifact import ModelError
from survey_engine.ml.supervised import TrainingError, TrainOptions, evaluate, train


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({"u": rng.normal(19, 1, n), "g": rng.normal(18, 1, n), "r": rng.normal(17.5, 1, n),
                       "allbad": np.full(n, 99.0), "cls": rng.choice(["A", "B"], n), "one": "A"})
    df["z"] = np.clip(0.1 * (df.u - df.g) + rng.normal(0.3, 0.05, n), 0, None)
    path = tmp_path_factory.mktemp("bad") / "t.parquet"
    df.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def model(table, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("badm") / "m"
    train(str(table), TrainOptions("photoz", ["u-g", "g-r"], target="z"), str(out), client=client)
    return out


@pytest.mark.parametrize(
    "opts, message",
    [
        (dict(task="photoz", features=["u-nosuch"], target="z"), "nosuch"),
        (dict(task="photoz", features=["u-g"], target="zz"), "no column 'zz'"),
        (dict(task="classify", features=["u-g"], label="nolabel"), "no column 'nolabel'"),
        (dict(task="photoz", features=["u-g", "allbad"], target="z"), r"\['allbad'\] are missing"),
        (dict(task="classify", features=["u-g"], label="one"), "single class"),
        (dict(task="photoz", features=["u-g"], target="z", where="u < 10.5"), "fewer than the 5 folds"),
        (dict(task="photoz", features=["u-g", "z"], target="z"), "leaks"),
    ],
)
def test_training_errors(table, client, tmp_path, opts, message):
    with pytest.raises(TrainingError, match=message):
        train(str(table), TrainOptions(**opts), str(tmp_path / "m"), client=client)
    assert not (tmp_path / "m").exists()


def test_model_on_data_without_its_features(model, client, tmp_path):
    pd.DataFrame({"u": [1.0], "r": [2.0]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ModelError, match=r"\['g'\]"):
        predict(str(model), str(tmp_path / "other.parquet"), str(tmp_path / "out"), client=client, progress=False)
    assert not (tmp_path / "out").exists()


def test_incompatible_model_version(model, table, client, tmp_path):
    import shutil

    bad = tmp_path / "old"
    shutil.copytree(model, bad)
    meta = json.loads((bad / "model.json").read_text())
    meta["format_version"] = 99
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="format version 99"):
        evaluate(str(bad), str(table), client=client)
    with pytest.raises(ModelError, match="not a model folder"):
        evaluate(str(tmp_path), str(table), client=client)


def test_gpu_option_falls_back_or_agrees(table, client, tmp_path, capfd):
    """--gpu: on a machine without a usable GPU the CPU trains, with a message; with one, the
    GPU model's metrics agree with the CPU's."""
    from survey_engine.ml.supervised import choose_device

    cpu = train(str(table), TrainOptions("photoz", ["u-g", "g-r"], target="z"), str(tmp_path / "cpu"), client=client)
    gpu = train(str(table), TrainOptions("photoz", ["u-g", "g-r"], target="z", gpu=True), str(tmp_path / "gpu"), client=client)
    device = json.loads((tmp_path / "gpu" / "model.json").read_text())["device"]
    assert device == choose_device(True)
    if device == "cpu":
        assert "training on the CPU" in capfd.readouterr().err
        assert gpu["test"]["sigma_nmad"] == pytest.approx(cpu["test"]["sigma_nmad"], rel=0.05)
    else:
        assert gpu["test"]["sigma_nmad"] == pytest.approx(cpu["test"]["sigma_nmad"], rel=0.1)


def test_cli_errors_exit_2(table, tmp_path):
    run = subprocess.run([sys.executable, "-m", "survey_engine.cli", "train", "photoz", "--catalog", str(table), "--features", "u-nosuch",
                          "--target", "z", "--model-out", str(tmp_path / "m"), "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "nosuch" in run.stderr


def test_few_held_out_rows_warn(table, client, tmp_path):
    """Five rows: the model trains, and the metrics on its one or two held-out rows come with a warning."""
    small = tmp_path / "five.parquet"
    pd.read_parquet(table).iloc[:5].to_parquet(small)
    with pytest.warns(UserWarning, match=r"only \d held-out rows \(fewer than 50\): the test metrics mean little"):
        result = train(str(small), TrainOptions("photoz", ["u-g", "g-r"], target="z", members=1), str(tmp_path / "m"), client=client)
    assert result["warnings"] and result["test"].get("n", 0) < 50
