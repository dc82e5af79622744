"""Distributed (mergeable) metrics equal the exact ones computed on all rows at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_engine.ml import metrics as M


def test_photoz_metrics_from_partition_summaries_equal_exact():
    rng = np.random.default_rng(1)
    zs = rng.uniform(0, 1.2, 20_001)
    zp = zs + (1 + zs) * np.where(
        rng.random(len(zs)) < 0.03, rng.normal(0, 0.3, len(zs)), rng.normal(0.002, 0.02, len(zs))
    )
    df = pd.DataFrame({"zp": zp, "zs": zs, "mag": rng.uniform(15, 21, len(zs))})
    exact = M.photoz_metrics(zp, zs)
    parts = [M.photoz_summary(chunk, "zp", "zs", "mag") for chunk in (df.iloc[i::7] for i in range(7))]
    merged = M.photoz_metrics_from_summary(M.merge_summaries(parts))
    for key in ("bias", "sigma_nmad", "sigma_iqr", "outlier_rate_015", "outlier_rate_lsst"):
        assert merged[key] == pytest.approx(exact[key], abs=2e-6), key
    assert merged["n"] == exact["n"] == len(df)
    bins = merged["by_redshift"]
    assert sum(b["n"] for b in bins) == len(df)
    lo = bins[0]
    sel = (zs >= lo["z_lo"]) & (zs < lo["z_hi"])
    assert lo["sigma_nmad"] == pytest.approx(M.photoz_metrics(zp[sel], zs[sel])["sigma_nmad"], abs=2e-6)
    assert sum(b["n"] for b in merged["by_magnitude"]) == len(df)


def test_classification_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, roc_auc_score

    rng = np.random.default_rng(2)
    classes = ["GALAXY", "QSO", "STAR"]
    y = rng.integers(0, 3, 5000)
    logits = rng.normal(0, 1, (5000, 3))
    logits[np.arange(5000), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    df = pd.DataFrame(
        {
            "truth": np.array(classes)[y],
            "class_pred": np.array(classes)[p.argmax(axis=1)],
            **{f"prob_{c}": p[:, i] for i, c in enumerate(classes)},
        }
    )
    parts = [
        M.classification_summary(c, "truth", classes)
        for c in (df.iloc[i * 1000 : (i + 1) * 1000] for i in range(5))
    ]
    got = M.classification_metrics(M.merge_classification(parts), classes)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p.argmax(axis=1)))
    assert got["macro_f1"] == pytest.approx(f1_score(y, p.argmax(axis=1), average="macro"))
    prec, rec, _, _ = precision_recall_fscore_support(y, p.argmax(axis=1))
    for i, c in enumerate(classes):
        assert got["per_class"][c]["precision"] == pytest.approx(prec[i])
        assert got["per_class"][c]["recall"] == pytest.approx(rec[i])
        assert got["per_class"][c]["roc_auc"] == pytest.approx(roc_auc_score(y == i, p[:, i]), abs=1e-3)
    # the probabilities' honesty, merged over partitions: log loss, Brier score and the top class's
    # expected calibration error (15 bins of its probability), as computed on all rows at once
    from sklearn.metrics import log_loss

    assert got["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1, 2]))
    assert got["brier"] == pytest.approx(np.mean(((p - np.eye(3)[y]) ** 2).sum(axis=1)))
    top, right = p.max(axis=1), p.argmax(axis=1) == y
    b = np.minimum((top * 15).astype(int), 14)
    ece = sum(abs(right[b == k].sum() - top[b == k].sum()) for k in range(15)) / len(y)
    assert got["ece"] == pytest.approx(ece) and got["ece"] > 0.01  # softmax of noisy logits: not calibrated
    empty = M.classification_summary(df.assign(class_pred=np.array(classes)[y]).iloc[:0], "truth", classes)
    assert M.classification_metrics(empty, classes)["ece"] == 0.0  # no rows: no error, no division
