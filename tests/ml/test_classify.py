"""Star / galaxy / QSO classification on real SDSS data with xgboost.dask."""

from __future__ import annotations

import numpy as np
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.ml.apply import predict
from survey_engine.ml.supervised import TrainingError, TrainOptions, fit_temperature, train
from tests.conftest import shared_path

UGRIZ_COLOURS = ["u-g", "g-r", "r-i", "i-z"]
# The members' model (the default before issue 20) on the five spatial folds of DR14, measured
# through ``train`` as the test below (2026-12-02): mean log loss 0.09436, ECE 0.01325.
MEMBERS_LOG_LOSS, MEMBERS_ECE = 0.0944, 0.0133


@pytest.fixture(scope="module")
def dr14(client, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "dr14"
    opts = TrainOptions("classify", UGRIZ_COLOURS, label="class", baselines=True, cv=5)
    return out, train(str(shared_path("classification/sdss_dr14_5k_dev.csv")), opts, str(out), client=client)


@pytest.mark.slow
def test_sdss_dr14_star_galaxy_qso(dr14):
    _, r = dr14
    test = r["test"]
    assert r["split"]["fold_kind"].startswith("spatial")  # the file has ra/dec: held-out sky
    assert set(test["per_class"]) == {"GALAXY", "QSO", "STAR"}
    for name, base in r["baselines"].items():  # same split, same run
        assert test["accuracy"] >= base["accuracy"] - 0.002, name
    assert test["accuracy"] > 0.96 and test["macro_f1"] > 0.94 and test["macro_roc_auc"] > 0.98
    conf = np.array(test["confusion"])
    assert conf.sum() == test["n"] and np.trace(conf) / conf.sum() == pytest.approx(test["accuracy"])
    for c, m in test["per_class"].items():
        assert 0 <= m["precision"] <= 1 and m["support"] > 0, c


@pytest.mark.slow
def test_sdss_dr14_goal_over_five_spatial_folds(dr14):
    """Issue 20's goal (accuracy >= 0.972, macro-F1 >= 0.962, probabilities as calibrated as the
    members' model's), judged on all five spatial folds: one fold holds ~1,100 rows and ~80 QSOs,
    so a single fold moves by 0.5% with two or three objects (fold 0 alone: 0.967 / 0.944 here, the
    baselines 0.966 / 0.947). Measured with the default stacked booster: 0.9724 / 0.9620, log loss
    0.0937, ECE 0.0092 (the four members: 0.9719 / 0.9613, log loss 0.0944, ECE 0.0132; a single booster on the plain
    features: 0.969 / 0.957)."""
    _, r = dr14
    cv = r["cv"]
    assert len(cv["folds"]) == 5 and sum(f["n"] for f in cv["folds"]) == r["split"]["rows"]
    mean = {k: v["mean"] for k, v in cv["summary"].items()}
    assert mean["accuracy"] >= 0.972 and mean["macro_f1"] >= 0.962
    assert mean["log_loss"] <= MEMBERS_LOG_LOSS and mean["ece"] <= MEMBERS_ECE
    # the baselines are the textbook configurations now (issue 20: XGBoost 600 trees at eta 0.05,
    # forest of 200 trees with min_samples_leaf 2), stronger than the 300-tree XGBoost this was
    # measured against; on independent data the ensemble's gain over them was nil, so the honest
    # assertion is "not worse" (within two objects per fold), not "better"
    for name, base in cv["baselines"].items():
        assert (
            mean["accuracy"] >= base["accuracy"] - 0.002 and mean["macro_f1"] >= base["macro_f1"] - 0.005
        ), name
    for f in cv["folds"]:
        assert set(f["baselines"]) == {"xgboost_single_process", "random_forest"}


@pytest.mark.slow
def test_probabilities_are_calibrated_and_sum_to_one(dr14, client, tmp_path):
    out, _ = dr14
    pred = predict(
        str(out),
        str(shared_path("classification/sdss_dr14_5k_dev.csv")),
        str(tmp_path / "p"),
        client=client,
        progress=False,
    )
    import pandas as pd

    df = pd.read_parquet(pred)
    probs = df[["prob_GALAXY", "prob_QSO", "prob_STAR"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert set(df.class_pred) <= {"GALAXY", "QSO", "STAR"}
    assert (df.class_pred.to_numpy() == np.array(["GALAXY", "QSO", "STAR"])[probs.argmax(axis=1)]).all()
    # reliability: among rows given p(max) in [0.9, 1], the share right is at least 0.9 - slack
    top = probs.max(axis=1)
    right = df.class_pred.to_numpy() == df["class"].to_numpy()
    assert right[top > 0.9].mean() > 0.9


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 3))
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in true_p])
    over = np.exp(logits * 2.0) / np.exp(logits * 2.0).sum(axis=1, keepdims=True)  # overconfident by 2x
    assert fit_temperature(over, y) == pytest.approx(2.0, rel=0.15)


@pytest.mark.slow
def test_star_galaxy_with_shape_parameters(client, tmp_path):
    feats = [
        "psfMag_r-modelMag_r",
        "psfMag_r-petroMag_r",
        "fiberMag_r-modelMag_r",
        "petroR50_r",
        "petroR90_r",
        "lnLStar_r",
        "lnLExp_r",
        "lnLDeV_r",
        "mRrCc_r",
        "modelMag_r",
    ]
    r = train(
        str(shared_path("classification/annz_sg_separation/train")),
        TrainOptions("classify", feats, label="class", baselines=True),
        str(tmp_path / "sg"),
        client=client,
    )
    assert set(r["test"]["per_class"]) == {"GALAXY", "STAR"}
    assert r["test"]["accuracy"] > 0.95
    for name, base in r["baselines"].items():
        assert r["test"]["accuracy"] >= base["accuracy"] - 0.005, name


@pytest.mark.slow
def test_mock_sky_classification_applied_to_catalog(client, mock_catalog, tmp_path):
    model = tmp_path / "mock_cls"
    r = train(
        str(mock_catalog),
        # the four members still; a quarter of their rounds (eta raised to match)
        TrainOptions(
            "classify",
            ["u-g", "g-r", "r-i", "i-z", "r"],
            label="obj_class",
            params={"rounds": 200, "eta": 0.1},
        ),
        str(model),
        client=client,
    )
    assert (
        r["test"]["accuracy"] > 0.85
    )  # mock colours overlap more than SDSS's (faint, noisy mock photometry)
    out = predict(str(model), str(mock_catalog), str(tmp_path / "classified"), client=client, progress=False)
    df = open_catalog(out).compute()
    assert {"class_pred", "prob_GALAXY", "prob_QSO", "prob_STAR"} <= set(df.columns)
    assert (df.class_pred == df.obj_class).mean() > 0.85


def test_spectroscopic_redshift_is_never_a_classifier_feature(tmp_path, client):
    with pytest.raises(TrainingError, match="spectroscopic redshifts"):
        train(
            str(shared_path("classification/sdss_dr14_5k_dev.csv")),
            TrainOptions("classify", UGRIZ_COLOURS + ["redshift"], label="class"),
            str(tmp_path / "leak"),
            client=client,
        )
    assert not (tmp_path / "leak").exists()
