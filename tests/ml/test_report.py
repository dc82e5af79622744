"""The model report shows what the metrics say: the headline margin over the textbook baselines
(and what they are), the p(z)'s coverage against what its rows can show, PIT and CRPS."""

from __future__ import annotations

import re
from types import SimpleNamespace

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from survey_engine.ml import metrics as M
from survey_engine.ml.baselines import BASELINE_FOREST, BASELINE_XGBOOST, headline, run_baselines
from survey_engine.ml.pdf import INTERVAL_COLUMNS, LEVELS, PDF_COLUMNS
from survey_engine.ml.report import coverage_noise, model_report


def _photoz_meta(width: float) -> tuple[dict, pd.DataFrame]:
    """Held-out rows whose truth scatters with sigma 0.02 (in 1 + z) around z_phot; the p(z) is a
    normal of ``width`` times that: 1 is calibrated, 0.5 too narrow."""
    rng = np.random.default_rng(3)
    n = 4000
    zp = rng.uniform(0.05, 0.7, n)
    zs = zp + 0.02 * (1 + zp) * rng.normal(size=n)
    from scipy import stats

    grid = zp[:, None] + width * 0.02 * (1 + zp[:, None]) * stats.norm.ppf(np.asarray(LEVELS))[None, :]
    # the interval columns as predict writes them (ml/prediction.py), summarised as evaluate does
    intervals = INTERVAL_COLUMNS
    frame = pd.DataFrame(grid, columns=list(PDF_COLUMNS)).assign(
        z_phot=zp,
        z_spec=zs,
        r=rng.uniform(17, 22, n),
        **{c: grid[:, LEVELS.index(q)] for c, q in intervals.items()},
    )
    summary = M.photoz_summary(frame, "z_phot", "z_spec", "r", *intervals, list(PDF_COLUMNS), list(LEVELS))
    test = M.photoz_metrics_from_summary(summary)
    baselines = {
        "xgboost_single_process": {**test, "sigma_nmad": test["sigma_nmad"] * 1.10},
        "random_forest": {**test, "sigma_nmad": test["sigma_nmad"] * 1.05},
    }
    metrics = {
        "test": test,
        "baselines": baselines,
        "headline": headline("photoz", test, baselines),
        "split": {"rows": n * 5, "fold_kind": "random (by row)", "folds": 5},
    }
    meta = {
        "task": "photoz",
        "features": ["u-g", "g-r", "r"],
        "training_catalog": {"path": "sky"},
        "device": "cpu",
        "metrics": metrics,
    }
    return meta, frame.rename(columns={"z_spec": "_y"})[["_y", "z_phot"]]


def _cell_after(page: str, label: str) -> str:
    """The text of the table cell right after the cell ``label``."""
    return re.search(rf"<td>{re.escape(label)}</td><td>([^<]*)</td>", page).group(1)


def test_photoz_report_shows_the_headline_the_baselines_and_the_pdf_s_calibration():
    meta, sample = _photoz_meta(width=1.0)
    test = meta["metrics"]["test"]
    page = model_report(meta, sample)
    # the headline: 1 - 1/1.05 lower than the forest (the stronger baseline), and what both baselines are
    assert "4.8% lower than the stronger baseline (random_forest" in page
    for params in (BASELINE_XGBOOST, BASELINE_FOREST):
        assert all(f"{k} {v}" in page for k, v in params.items())
    # coverage at both levels as measured, beside the binomial spread of a calibrated p(z) on n rows
    assert float(_cell_after(page, "68%")) == pytest.approx(test["interval_coverage"], abs=1e-4)
    assert float(_cell_after(page, "95%")) == pytest.approx(test["interval_coverage_95"], abs=1e-4)
    assert abs(test["interval_coverage"] - 0.68) < 3 * coverage_noise(test["n"], 0.68)
    assert f"PIT KS {test['pit_ks']:.4f}" in page and f"CRPS {test['crps']:.5f}" in page
    assert page.count("<img src='data:image/png;base64,") == 2  # the PIT histogram and z_phot vs z_spec
    for title in ("spectroscopic redshift", "photometric redshift", "magnitude"):
        assert f"In bins of {title}" in page
    assert page.count("<th>cov 68%</th><th>se 68%</th><th>cov 95%</th><th>se 95%</th>") == 3
    # each bin's coverage beside the spread of its own rows (not the whole test set's)
    for b in test["by_photoz"]:
        cells = f"<td>{b['interval_coverage']:.4g}</td><td>{coverage_noise(b['n'], 0.68):.4g}</td>"
        assert (
            cells + f"<td>{b['interval_coverage_95']:.4g}</td><td>{coverage_noise(b['n'], 0.95):.4g}</td>"
            in page
        )


def test_a_too_narrow_pdf_shows_in_the_report_and_a_weaker_model_says_higher():
    meta, sample = _photoz_meta(width=0.5)
    test = meta["metrics"]["test"]
    assert test["interval_coverage"] < 0.68 - 5 * coverage_noise(test["n"], 0.68)  # ~0.38
    page = model_report(meta, sample)
    assert float(_cell_after(page, "68%")) == pytest.approx(test["interval_coverage"], abs=1e-4)
    meta["metrics"]["headline"] = headline(
        "photoz", test, {"random_forest": {"sigma_nmad": test["sigma_nmad"] / 1.02}}
    )
    assert "2.0% higher than the stronger baseline (random_forest" in model_report(meta, sample)


def test_coverage_noise_is_the_binomial_spread():
    assert coverage_noise(100, 0.68) == pytest.approx(0.04665, abs=1e-5)
    assert coverage_noise(10_000, 0.95) == pytest.approx(0.00218, abs=1e-5)
    assert np.isnan(coverage_noise(0, 0.68))


def test_classifier_report_shows_its_headline_and_probability_quality():
    test = {
        "n": 1000,
        "accuracy": 0.972,
        "macro_f1": 0.962,
        "macro_roc_auc": 0.99,
        "log_loss": 0.0937,
        "brier": 0.041,
        "ece": 0.0092,
        "per_class": {"STAR": {"precision": 1, "recall": 1, "f1": 1, "roc_auc": 1, "support": 1000}},
        "confusion": [[1000]],
    }
    baselines = {
        "xgboost_single_process": {"accuracy": 0.966, "macro_f1": 0.953},
        "random_forest": {"accuracy": 0.968, "macro_f1": 0.955},
    }
    meta = {
        "task": "classify",
        "classes": ["STAR"],
        "features": ["u-g"],
        "training_catalog": {"path": "sky"},
        "device": "cpu",
        "metrics": {
            "test": test,
            "baselines": baselines,
            "headline": headline("classify", test, baselines),
            "split": {"rows": 5000, "fold_kind": "spatial", "folds": 5},
        },
    }
    page = model_report(meta, pd.DataFrame())
    assert (
        "accuracy 0.9720, +0.0040 against the stronger baseline (random_forest, 0.9680); macro-F1 gain +0.0070"
        in page
    )
    assert "log_loss 0.0937, brier 0.0410, ece 0.0092" in page


def test_a_model_trained_without_baselines_has_a_report_without_a_headline():
    meta, sample = _photoz_meta(width=1.0)
    for key in ("baselines", "headline"):
        del meta["metrics"][key]
    page = model_report(meta, sample)
    assert "Headline" not in page and "stronger baseline" not in page
    assert "<h2>p(z) on held-out rows</h2>" in page and "In bins of photometric redshift" in page


def test_baselines_and_headline_with_nothing_held_out():
    """A test fold without rows (a warning says so): the baselines say n = 0 and there is no
    headline, instead of a KeyError after the model was trained."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"u-g": rng.normal(size=50), "g-r": rng.normal(size=50), "_y": rng.uniform(0, 1, 50)})
    train, held_out = dd.from_pandas(rows, npartitions=1), dd.from_pandas(rows.iloc[:0], npartitions=1)
    opts = SimpleNamespace(task="photoz", seed=0)
    out = run_baselines(train, held_out, opts, ["u-g", "g-r"], None)
    assert out == {"xgboost_single_process": {"n": 0}, "random_forest": {"n": 0}}
    assert headline("photoz", {"n": 0}, out) == {}
    assert headline("classify", {"n": 0}, out) == {}
