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
# every test here trains on real or mock data (or reads a model that did): minutes on 2 cores
pytestmark = pytest.mark.slow


def test_sdss_galaxies_as_accurate_as_single_process_baselines(sdss_model):
    _, r = sdss_model
    test = r["test"]
    assert 0.18 * 41475 < test["n"] < 0.22 * 41475  # the held-out fifth of the galaxies
    assert r["split"]["fold_kind"].startswith("random")  # this file has no positions
    # The honest comparison (issue 20): the textbook baselines (XGBoost 600 trees, depth 6, eta
    # 0.05, subsample / colsample 0.8; random forest 200 trees, min_samples_leaf 2) on the same
    # split, trained on every training row, while the ensemble gives 15% of them to calibration.
    # The earlier 5% margin was over a weaker XGBoost (300 trees at eta 0.1). Measured with one
    # member: 0.01576 vs 0.01637 (XGBoost) / 0.01614 (forest).
    for name, base in r["baselines"].items():
        assert base["n"] == test["n"]
        assert test["sigma_nmad"] < base["sigma_nmad"], name
    assert r["headline"]["stronger_baseline"] == min(
        r["baselines"], key=lambda k: r["baselines"][k]["sigma_nmad"]
    )
    assert r["headline"]["sigma_nmad_lower_by"] > 0.01
    assert test["sigma_nmad"] < 0.0158  # anchors.md: single-machine XGBoost/RF give about 0.016
    assert test["outlier_rate_015"] < 0.005
    assert abs(test["bias"]) < 0.002
    # calibrated on rows the model did not train on: 68% and 95% within 0.03 of nominal (measured
    # with one member 0.697 / 0.954), the PIT close to uniform
    assert abs(test["interval_coverage"] - 0.68) < 0.03 and abs(test["interval_coverage_95"] - 0.95) < 0.03
    assert test["pit_ks"] < 0.05 and 0 < test["crps"] < 0.02
    for b in test["by_photoz"] + test["by_magnitude"]:  # measured: within 0.045 where >= 500 rows
        if b["n"] >= 500:
            assert (
                abs(b["interval_coverage"] - 0.68) < 0.06 and abs(b["interval_coverage_95"] - 0.95) < 0.03
            ), b
    assert {b["z_lo"] for b in test["by_redshift"]} >= {0.0, 0.1, 0.2}
    assert len(test["by_magnitude"]) >= 3 and r["split"]["magnitude_column"] == "r"


def test_artifact_and_report(sdss_model):
    out, r = sdss_model
    meta, models = load_model(out)
    assert meta["task"] == "photoz" and meta["features"] == SDSS_COLOURS and meta["target"] == "redshift"
    assert meta["training_catalog"]["fingerprint"] and meta["versions"]["xgboost"]
    views = meta["views"]
    # the default ("distilled"): one student booster on the features and the 4 members' rotations
    # of them side by side, and the quantile booster; the members themselves are not kept
    assert set(models) == {"median", "quantiles"} and views["stacked"]
    assert models["median"].num_features() == 5 * len(SDSS_COLOURS)
    assert len(views["rotations"]) == 4 and len(views["mean"]) == len(SDSS_COLOURS)
    for rot in views["rotations"]:
        assert np.allclose(np.asarray(rot) @ np.asarray(rot).T, np.eye(len(SDSS_COLOURS)), atol=1e-9)
    assert json.loads((out / "metrics.json").read_text())["test"]["sigma_nmad"] == pytest.approx(
        r["test"]["sigma_nmad"]
    )
    html = (out / "report.html").read_text()
    assert "sigma_nmad" in html and "<img src='data:image/png;base64," in html and "random_forest" in html
    # the headline margin and the p(z) on held-out rows, as in metrics.json (tests/ml/test_report.py)
    lower = r["headline"]["sigma_nmad_lower_by"]
    assert f"{abs(lower) * 100:.1f}% {'lower' if lower >= 0 else 'higher'} than the stronger baseline" in html
    assert f"PIT KS {r['test']['pit_ks']:.4f}" in html and "In bins of photometric redshift" in html
    assert sum(r["importance"].values()) == pytest.approx(1.0)


def test_evaluate_on_a_file_recomputes_the_metrics(sdss_model, client):
    out, _ = sdss_model
    m = evaluate(str(out), str(shared_path("photoz/sdss_galaxy_colors_50k.parquet")), client=client)
    assert m["n"] == 50_000  # every row with a redshift, QSOs included
    assert m["sigma_nmad"] < 0.03


def test_boss_dr10_as_accurate_as_baselines(client, tmp_path):
    feats = [
        "MAG_U-MAG_G",
        "MAG_G-MAG_R",
        "MAG_R-MAG_I",
        "MAG_I-MAG_Z",
        "MAG_R",
        "MAG_I",
        "MAGERR_G",
        "MAGERR_R",
        "MAGERR_I",
        "MAGERR_Z",
    ]
    r = train(
        str(shared_path("photoz/annz_boss_dr10/train")),
        TrainOptions("photoz", feats, target="Z", baselines=True, refit=False),
        str(tmp_path / "boss"),
        client=client,
    )
    # against the textbook baselines: measured 0.01900 vs 0.01975 XGBoost / 0.01971 forest, 3.6% lower,
    # the same in repeated runs since each worker's rows are pinned (dask_xgboost.pinned); before, the
    # same seed gave 0.01876 or 0.01900 (and 0.0192 once under load) as parts moved between workers
    assert r["headline"]["sigma_nmad_lower_by"] > 0.03
    assert r["test"]["sigma_nmad"] < 0.0191  # anchors.md: about 0.019 single-machine
    assert (
        abs(r["test"]["interval_coverage"] - 0.68) < 0.03
        and abs(r["test"]["interval_coverage_95"] - 0.95) < 0.03
    )


def test_mock_sky_train_with_spatial_folds_then_predict_whole_catalog(client, mock_catalog, tmp_path):
    model = tmp_path / "mock_pz"
    r = train(
        str(mock_catalog),
        TrainOptions(
            "photoz",
            ["u-g", "g-r", "r-i", "i-z", "r", "snr(r_err)"],
            target="redshift",
            where="obj_class == 'GALAXY'",
            params={"rounds": 300, "eta": 0.1},  # the four members still; a quarter of their rounds
        ),
        str(model),
        client=client,
    )
    assert r["split"]["fold_kind"].startswith("spatial")
    assert r["test"]["sigma_nmad"] < 0.08  # the mock's galaxies are noisier than SDSS's bright sample
    out = predict(str(model), str(mock_catalog), str(tmp_path / "with_zphot"), client=client, progress=False)
    src, got = open_catalog(mock_catalog), open_catalog(out)
    assert got.row_count() == src.row_count() and got.npartitions == src.npartitions
    assert got.margin is not None and got.margin.row_count() == src.margin.row_count()
    df = got.compute()
    assert {
        "z_phot",
        "z_phot_lo",
        "z_phot_hi",
        "z_phot_lo95",
        "z_phot_hi95",
        "z_pdf_q010",
        "z_pdf_q990",
        "quality",
    } <= set(df.columns)
    assert np.isfinite(df.z_phot).all()
    assert (
        (df.z_phot_lo95 <= df.z_phot_lo).all()
        and (df.z_phot_lo <= df.z_phot).all()
        and (df.z_phot <= df.z_phot_hi).all()
    )
    assert (df.z_phot_hi <= df.z_phot_hi95).all() and (df.z_pdf_q500 == df.z_phot).all()
    gal = df[df.obj_class == "GALAXY"]
    ez = (gal.z_phot - gal.redshift) / (1 + gal.redshift)
    nmad = 1.4826 * np.median(np.abs(ez - np.median(ez)))
    ez0 = (np.median(gal.redshift) - gal.redshift) / (1 + gal.redshift)
    assert nmad < 0.08 and nmad < 0.6 * 1.4826 * np.median(
        np.abs(ez0 - np.median(ez0))
    )  # far better than a constant


def test_cli_train_predict_evaluate(mock_catalog, tmp_path):
    model, out = tmp_path / "m", tmp_path / "pred"
    base = [sys.executable, "-m", "survey_engine.cli"]
    run = subprocess.run(
        base
        + [
            "train",
            "photoz",
            "--catalog",
            str(mock_catalog),
            "--features",
            "u-g,g-r,r-i,i-z,r",
            "--target",
            "redshift",
            "--where",
            "obj_class == 'GALAXY'",
            "--model-out",
            str(model),
            "--workers",
            "2",
            "--members",
            "2",
            "--rounds",
            "300",
            "--eta",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout[: run.stdout.rindex("}") + 1])["held_out"]["sigma_nmad"] < 0.08
    run = subprocess.run(
        base
        + [
            "predict",
            "--model",
            str(model),
            "--catalog",
            str(mock_catalog),
            "--out",
            str(out),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "z_phot" in open_catalog(out).column_names()
    assert len(load_model(model)[0]["views"]["rotations"]) == 2  # --members 2: two views (one student)
    run = subprocess.run(
        base
        + [
            "evaluate",
            "--model",
            str(model),
            "--catalog",
            str(out),
            "--workers",
            "2",
            "--out",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "m.json").read_text())["n"] > 0
    # --where as an astronomer types it into ADQL (=, AND): the same rows as the pandas spelling
    evaluate = base + ["evaluate", "--model", str(model), "--catalog", str(out), "--workers", "1"]
    adql = "obj_class = 'GALAXY' AND redshift >= 0.1"
    run = subprocess.run(
        evaluate + ["--where", adql, "--out", str(tmp_path / "w.json")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    rows = open_catalog(out, margin=None).compute()
    expected = int(((rows.obj_class == "GALAXY") & (rows.redshift >= 0.1)).sum())
    assert 0 < expected < len(rows) and json.loads((tmp_path / "w.json").read_text())["n"] == expected
    # a bare word where text is meant: an error naming the catalog, the word and the fix, no metrics
    run = subprocess.run(
        evaluate + ["--where", "obj_class == GALAXY", "--out", str(tmp_path / "bad.json")],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and not (tmp_path / "bad.json").exists()
    assert str(out) in run.stderr and "'GALAXY' is not defined" in run.stderr and "quotes" in run.stderr


def test_sdss_one_band_removed_keeps_its_coverage(sdss_model, client):
    """A sentinel (99) in one band: the row is flagged and its intervals are those calibrated for
    that band missing (measured with one member: 68% 0.67-0.69 and 95% 0.95 for each of ugriz;
    the model before gave a narrow interval around a biased redshift, 6% coverage)."""
    import pandas as pd

    from survey_engine.features.spec import FeatureSpec
    from survey_engine.ml.preparation import prepare_partition
    from survey_engine.ml.supervised import predict_frame

    out, _ = sdss_model
    meta, models = load_model(out)
    data = pd.read_parquet(shared_path("photoz/sdss_galaxy_colors_50k.parquet"))
    galaxies = data.query("spec_class == 'GALAXY'")
    prep = prepare_partition(
        data,
        FeatureSpec.from_json(meta["feature_spec"]),
        "photoz",
        "redshift",
        None,
        5,
        42,
        None,
        None,
        "spec_class == 'GALAXY'",
    )
    held_out = galaxies[(prep._fold == 0).to_numpy()]  # rows the model never saw
    z = held_out.redshift.to_numpy()
    for band in "ugriz":
        pred = predict_frame(held_out.assign(**{band: 99.0}), meta, models)
        assert (pred.quality == 1).all() and (pred.n_missing_features >= 1).all()
        c68 = np.mean((z >= pred.z_phot_lo) & (z <= pred.z_phot_hi))
        c95 = np.mean((z >= pred.z_phot_lo95) & (z <= pred.z_phot_hi95))
        assert abs(c68 - 0.68) < 0.04 and abs(c95 - 0.95) < 0.03, band
