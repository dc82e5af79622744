"""Photometric redshifts on real SDSS / BOSS data and on the mock sky, trained with xgboost.dask."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.ml.apply import predict
from survey_engine.ml.artifact import load_model
from survey_engine.ml.supervised import TrainOptions, evaluate, train
from tests.conftest import shared_path

SDSS_COLOURS = ["u-g", "g-r", "r-i", "i-z", "r"]


@pytest.fixture(scope="module")
def sdss_model(client, tmp_path_factory):
    out = tmp_path_factory.mktemp("pz") / "sdss_photoz"
    opts = TrainOptions("photoz", SDSS_COLOURS, target="redshift", where="spec_class == 'GALAXY'", baselines=True)
    result = train(str(shared_path("photoz/sdss_galaxy_colors_50k.parquet")), opts, str(out), client=client)
    return out, result


def test_sdss_galaxies_as_accurate_as_single_process_baselines(sdss_model):
    _, r = sdss_model
    test = r["test"]
    assert 0.18 * 41475 < test["n"] < 0.22 * 41475  # the held-out fifth of the galaxies
    assert r["split"]["fold_kind"].startswith("random")  # this file has no positions
    # the goal: at least 5% lower sigma_NMAD than single-process XGBoost and a random
    # forest on the same split, in the same run (measured: 0.01520 vs 0.01639 / 0.01614). The
    # rotated-view ensemble is what gets there (one booster on the plain features: 0.01565).
    for name, base in r["baselines"].items():
        assert base["n"] == test["n"]
        assert test["sigma_nmad"] <= 0.95 * base["sigma_nmad"], name
    assert test["sigma_nmad"] < 0.0153  # anchors.md: single-machine XGBoost/RF give about 0.016
    assert test["outlier_rate_015"] < 0.005
    assert abs(test["bias"]) < 0.002
    assert 0.58 < test["interval_coverage"] < 0.78  # z_phot_lo..z_phot_hi is a 68% interval
    assert {b["z_lo"] for b in test["by_redshift"]} >= {0.0, 0.1, 0.2}
    assert len(test["by_magnitude"]) >= 3


def test_artifact_and_report(sdss_model):
    out, r = sdss_model
    meta, models = load_model(out)
    assert meta["task"] == "photoz" and meta["features"] == SDSS_COLOURS and meta["target"] == "redshift"
    assert meta["training_catalog"]["fingerprint"] and meta["versions"]["xgboost"]
    assert set(models) == {"median", "median_1", "median_2", "median_3", "quantiles"}  # 4 ensemble members
    views = meta["views"]
    assert len(views["rotations"]) == 4 and len(views["mean"]) == len(SDSS_COLOURS)
    for rot in views["rotations"]:
        assert np.allclose(np.asarray(rot) @ np.asarray(rot).T, np.eye(len(SDSS_COLOURS)), atol=1e-9)
    assert json.loads((out / "metrics.json").read_text())["test"]["sigma_nmad"] == pytest.approx(r["test"]["sigma_nmad"])
    html = (out / "report.html").read_text()
    assert "sigma_nmad" in html and "<img src='data:image/png;base64," in html and "random_forest" in html
    assert sum(r["importance"].values()) == pytest.approx(1.0)


def test_evaluate_on_a_file_recomputes_the_metrics(sdss_model, client):
    out, _ = sdss_model
    m = evaluate(str(out), str(shared_path("photoz/sdss_galaxy_colors_50k.parquet")), client=client)
    assert m["n"] == 50_000  # every row with a redshift, QSOs included
    assert m["sigma_nmad"] < 0.03


def test_boss_dr10_as_accurate_as_baselines(client, tmp_path):
    feats = ["MAG_U-MAG_G", "MAG_G-MAG_R", "MAG_R-MAG_I", "MAG_I-MAG_Z", "MAG_R", "MAG_I", "MAGERR_G", "MAGERR_R", "MAGERR_I", "MAGERR_Z"]
    r = train(str(shared_path("photoz/annz_boss_dr10/train")), TrainOptions("photoz", feats, target="Z", baselines=True),
              str(tmp_path / "boss"), client=client)
    for name, base in r["baselines"].items():  # the goal: 5% lower (measured 0.01852 vs 0.01984 / 0.01971)
        assert r["test"]["sigma_nmad"] <= 0.95 * base["sigma_nmad"], name
    assert r["test"]["sigma_nmad"] < 0.0188  # anchors.md: about 0.019 single-machine


def test_mock_sky_train_with_spatial_folds_then_predict_whole_catalog(client, mock_catalog, tmp_path):
    model = tmp_path / "mock_pz"
    r = train(str(mock_catalog), TrainOptions("photoz", ["u-g", "g-r", "r-i", "i-z", "r", "snr(r_err)"], target="redshift",
                                               where="obj_class == 'GALAXY'"), str(model), client=client)
    assert r["split"]["fold_kind"].startswith("spatial")
    assert r["test"]["sigma_nmad"] < 0.08  # the mock's galaxies are noisier than SDSS's bright sample
    out = predict(str(model), str(mock_catalog), str(tmp_path / "with_zphot"), client=client, progress=False)
    src, got = open_catalog(mock_catalog), open_catalog(out)
    assert got.row_count() == src.row_count() and got.npartitions == src.npartitions
    assert got.margin is not None and got.margin.row_count() == src.margin.row_count()
    df = got.compute()
    assert {"z_phot", "z_phot_lo", "z_phot_hi"} <= set(df.columns)
    assert np.isfinite(df.z_phot).all()
    assert (df.z_phot_lo <= df.z_phot).all() and (df.z_phot <= df.z_phot_hi).all()
    gal = df[df.obj_class == "GALAXY"]
    ez = (gal.z_phot - gal.redshift) / (1 + gal.redshift)
    nmad = 1.4826 * np.median(np.abs(ez - np.median(ez)))
    ez0 = (np.median(gal.redshift) - gal.redshift) / (1 + gal.redshift)
    assert nmad < 0.08 and nmad < 0.6 * 1.4826 * np.median(np.abs(ez0 - np.median(ez0)))  # far better than a constant


def test_cli_train_predict_evaluate(mock_catalog, tmp_path):
    model, out = tmp_path / "m", tmp_path / "pred"
    base = [sys.executable, "-m", "survey_engine.cli"]
    run = subprocess.run(base + ["train", "photoz", "--catalog", str(mock_catalog), "--features", "u-g,g-r,r-i,i-z,r",
                                 "--target", "redshift", "--where", "obj_class == 'GALAXY'", "--model-out", str(model), "--workers", "2", "--members", "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout[: run.stdout.rindex("}") + 1])["held_out"]["sigma_nmad"] < 0.08
    run = subprocess.run(base + ["predict", "--model", str(model), "--catalog", str(mock_catalog), "--out", str(out), "--workers", "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "z_phot" in open_catalog(out).column_names()
    assert len(load_model(model)[0]["views"]["rotations"]) == 2  # --members 2: two boosters, two views
    run = subprocess.run(base + ["evaluate", "--model", str(model), "--catalog", str(out), "--workers", "2", "--out", str(tmp_path / "m.json")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "m.json").read_text())["n"] > 0
