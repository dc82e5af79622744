"""Model metrics computed from mergeable per-partition summaries, so they scale with the data.

Photo-z (conventions of ../shared/notes/anchors.md): ez = (z_phot - z_spec) / (1 + z_spec);
bias = median(ez); sigma_NMAD = 1.4826 median(|ez - median(ez)|); sigma_IQR = IQR(ez) / 1.349;
outlier rates |ez| > 0.15 and |ez| > max(0.06, 3 sigma_IQR). Each partition contributes counts of
ez quantised to 1e-6 (per magnitude and redshift bin), and the metrics come from the merged
counts: exact to 1e-6, whatever the number of partitions. With a p(z) (a grid of quantiles, see
``ml/pdf.py``) also: coverage of the 68% and 95% intervals, the PIT histogram and its KS statistic
(PIT in 100 bins: KS exact to 0.01), and the mean CRPS (as Rubin's RAIL / qp define them).

Classification: the confusion matrix (summed per partition) gives precision, recall and F1 per
class; one-vs-rest ROC AUC comes from per-class histograms of the predicted probability (1e-4 bins).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EZ_RES = 1e-6
PROB_BINS = 10_000
# Bins of the top class's probability for the expected calibration error (the usual 15).
RELIABILITY_BINS = 15
Z_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 7.0)
MAG_BINS = (10.0, 16.0, 17.0, 17.5, 18.0, 18.5, 19.0, 19.5, 20.0, 21.0, 22.0, 30.0)


def ez_values(z_phot, z_spec) -> np.ndarray:
    z_phot, z_spec = np.asarray(z_phot, float), np.asarray(z_spec, float)
    return (z_phot - z_spec) / (1.0 + z_spec)


def photoz_metrics(z_phot, z_spec) -> dict:
    """Exact metrics from arrays (the reference the distributed ones are checked against)."""
    ez = ez_values(z_phot, z_spec)
    ez = ez[np.isfinite(ez)]
    if len(ez) == 0:
        return {"n": 0}
    med = float(np.median(ez))
    q25, q75 = np.percentile(ez, [25, 75])
    sig_iqr = float((q75 - q25) / 1.349)
    return {
        "n": int(len(ez)),
        "bias": med,
        "sigma_nmad": float(1.4826 * np.median(np.abs(ez - med))),
        "sigma_iqr": sig_iqr,
        "outlier_rate_015": float(np.mean(np.abs(ez) > 0.15)),
        "outlier_rate_lsst": float(np.mean(np.abs(ez) > max(0.06, 3 * sig_iqr))),
    }


def photoz_summary(
    frame: pd.DataFrame,
    z_phot: str,
    z_spec: str,
    mag: str | None,
    lo: str | None = None,
    hi: str | None = None,
    lo95: str | None = None,
    hi95: str | None = None,
    pdf_columns: list[str] | None = None,
    pdf_levels: list[float] | None = None,
) -> pd.DataFrame:
    """One partition's mergeable summary: counts of quantised ez per (magnitude bin, z_spec bin,
    z_phot bin), whether z_spec fell inside [lo, hi] (68%) and [lo95, hi95] (95%) when those
    columns are given, the PIT bin and the summed CRPS when the quantile grid is given."""
    ez = ez_values(frame[z_phot], frame[z_spec])
    ok = np.isfinite(ez)
    zs = np.asarray(frame[z_spec], float)[ok]
    zbin = np.digitize(zs, Z_BINS) - 1
    pbin = np.digitize(np.asarray(frame[z_phot], float)[ok], Z_BINS) - 1
    if mag and mag in frame.columns:
        mbin = np.digitize(np.asarray(frame[mag], float)[ok], MAG_BINS) - 1
    else:
        mbin = np.full(len(zs), -1)
    code = np.rint(ez[ok] / EZ_RES).astype(np.int64)

    def inside(a, b):
        if a and b:
            return ((zs >= np.asarray(frame[a], float)[ok]) & (zs <= np.asarray(frame[b], float)[ok])).astype(
                np.int8
            )
        return np.full(len(zs), -1, dtype=np.int8)

    pit_bin, crps = np.full(len(zs), -1, dtype=np.int16), np.zeros(len(zs))
    if pdf_columns:
        from survey_engine.ml.pdf import PIT_BINS, pit
        from survey_engine.ml.pdf import crps as crps_of

        grid = frame[list(pdf_columns)].to_numpy(dtype=np.float64)[ok]
        pit_bin = np.clip((pit(grid, zs, pdf_levels) * PIT_BINS).astype(np.int16), 0, PIT_BINS - 1)
        crps = crps_of(grid, zs, pdf_levels)
    df = pd.DataFrame(
        {
            "mbin": mbin.astype(np.int16),
            "zbin": zbin.astype(np.int16),
            "pbin": pbin.astype(np.int16),
            "code": code,
            "inside": inside(lo, hi),
            "inside95": inside(lo95, hi95),
            "pit": pit_bin,
            "crps": crps,
            "n": 1,
        }
    )
    return df.groupby(SUMMARY_KEYS, as_index=False)[["n", "crps"]].sum()


SUMMARY_KEYS = ["mbin", "zbin", "pbin", "code", "inside", "inside95", "pit"]


def merge_summaries(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({k: [] for k in SUMMARY_KEYS + ["n", "crps"]})
    return pd.concat(parts).groupby(SUMMARY_KEYS, as_index=False)[["n", "crps"]].sum()


def _wquantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cw = np.cumsum(w)
    total = cw[-1]
    # the same interpolation as numpy's default ('linear') on the expanded sample
    pos = q * (total - 1)
    lo_i = np.searchsorted(cw, np.floor(pos) + 1)
    hi_i = np.searchsorted(cw, np.ceil(pos) + 1)
    frac = pos - np.floor(pos)
    return float(v[lo_i] * (1 - frac) + v[hi_i] * frac)


def metrics_from_counts(codes: np.ndarray, counts: np.ndarray) -> dict:
    if counts.sum() == 0:
        return {"n": 0}
    ez = codes.astype(np.float64) * EZ_RES
    w = counts.astype(np.int64)
    med = _wquantile(ez, w, 0.5)
    q25, q75 = _wquantile(ez, w, 0.25), _wquantile(ez, w, 0.75)
    sig_iqr = (q75 - q25) / 1.349
    n = int(w.sum())
    return {
        "n": n,
        "bias": med,
        "sigma_nmad": 1.4826 * _wquantile(np.abs(ez - med), w, 0.5),
        "sigma_iqr": sig_iqr,
        "outlier_rate_015": float(w[np.abs(ez) > 0.15].sum() / n),
        "outlier_rate_lsst": float(w[np.abs(ez) > max(0.06, 3 * sig_iqr)].sum() / n),
    }


def _distribution_metrics(df: pd.DataFrame, histogram: bool = False) -> dict:
    """Coverage of the 68% and 95% intervals, PIT (histogram, KS) and mean CRPS of summary rows."""
    out = {}
    for key, name in (("inside", "interval_coverage"), ("inside95", "interval_coverage_95")):
        known = df[df[key] >= 0]
        if len(known):
            out[name] = float(known.loc[known[key] == 1, "n"].sum() / known["n"].sum())
    known = df[df.pit >= 0]
    if len(known):
        from survey_engine.ml.pdf import PIT_BINS

        counts = np.bincount(known.pit.to_numpy(int), weights=known.n.to_numpy(float), minlength=PIT_BINS)
        cdf = np.cumsum(counts) / counts.sum()
        out["pit_ks"] = float(np.max(np.abs(cdf - np.arange(1, PIT_BINS + 1) / PIT_BINS)))
        out["crps"] = float(known.crps.sum() / known.n.sum())
        if histogram:  # ten bins: a calibrated p(z) gives 0.1 in each
            out["pit_histogram"] = (counts.reshape(10, -1).sum(axis=1) / counts.sum()).round(5).tolist()
    return out


def photoz_metrics_from_summary(summary: pd.DataFrame) -> dict:
    """Overall metrics plus the same metrics in bins of magnitude, of spectroscopic redshift and of
    photometric redshift (what calibration on unseen rows can promise coverage in)."""

    def collapse(df, histogram=False):
        g = df.groupby("code")["n"].sum()
        return {
            **metrics_from_counts(g.index.to_numpy(), g.to_numpy()),
            **_distribution_metrics(df, histogram),
        }

    out = collapse(summary, histogram=True)
    out["by_redshift"] = [
        {"z_lo": Z_BINS[b], "z_hi": Z_BINS[b + 1], **collapse(df)}
        for b, df in summary.groupby("zbin")
        if 0 <= b < len(Z_BINS) - 1
    ]
    out["by_photoz"] = [
        {"z_lo": Z_BINS[b], "z_hi": Z_BINS[b + 1], **collapse(df)}
        for b, df in summary.groupby("pbin")
        if 0 <= b < len(Z_BINS) - 1
    ]
    if (summary.mbin >= 0).any():
        out["by_magnitude"] = [
            {"mag_lo": MAG_BINS[b], "mag_hi": MAG_BINS[b + 1], **collapse(df)}
            for b, df in summary.groupby("mbin")
            if 0 <= b < len(MAG_BINS) - 1
        ]
    return out


# -- classification ----------------------------------------------------------------------------


def classification_summary(frame: pd.DataFrame, label: str, classes: list[str]) -> dict:
    """One partition: confusion counts and per-class probability histograms (pos / neg)."""
    k = len(classes)
    index = {c: i for i, c in enumerate(classes)}
    truth = frame[label].astype(str).map(index)
    ok = truth.notna().to_numpy()
    t = truth.to_numpy()[ok].astype(int)
    pred = frame["class_pred"].astype(str).map(index).to_numpy()[ok].astype(int)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (t, pred), 1)
    probs = np.column_stack([np.asarray(frame[f"prob_{c}"], float)[ok] for c in classes]).reshape(-1, k)
    hist_pos = np.zeros((k, PROB_BINS), dtype=np.int64)
    hist_neg = np.zeros((k, PROB_BINS), dtype=np.int64)
    for i in range(k):
        b = np.clip((probs[:, i] * PROB_BINS).astype(int), 0, PROB_BINS - 1)
        hist_pos[i] = np.bincount(b[t == i], minlength=PROB_BINS)
        hist_neg[i] = np.bincount(b[t != i], minlength=PROB_BINS)
    p_true = probs[np.arange(len(t)), t]
    top = probs.max(axis=1)
    b = np.clip((top * RELIABILITY_BINS).astype(int), 0, RELIABILITY_BINS - 1)
    return {
        "confusion": conf,
        "pos": hist_pos,
        "neg": hist_neg,
        "log_loss_sum": float(-np.log(np.clip(p_true, 1e-15, 1.0)).sum()),
        # sum over classes of (p_c - [c is true])^2, without building the one-hot matrix
        "brier_sum": float((probs**2).sum() - 2 * p_true.sum() + len(t)),
        "top_p": np.bincount(b, weights=top, minlength=RELIABILITY_BINS),
        "top_right": np.bincount(b, weights=(pred == t).astype(float), minlength=RELIABILITY_BINS),
    }


CLASSIFICATION_SUMS = ("confusion", "pos", "neg", "log_loss_sum", "brier_sum", "top_p", "top_right")


def merge_classification(parts: list[dict]) -> dict:
    return {k: sum(p[k] for p in parts) for k in CLASSIFICATION_SUMS}


def classification_metrics(summary: dict, classes: list[str]) -> dict:
    conf = summary["confusion"]
    n = int(conf.sum())
    per_class = {}
    for i, c in enumerate(classes):
        tp = conf[i, i]
        prec = tp / conf[:, i].sum() if conf[:, i].sum() else 0.0
        rec = tp / conf[i, :].sum() if conf[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        pos, neg = summary["pos"][i], summary["neg"][i]
        # P(score_pos > score_neg) + 0.5 P(equal bin)
        neg_below = np.concatenate([[0], np.cumsum(neg)[:-1]])
        auc = float((pos * neg_below).sum() + 0.5 * (pos * neg).sum()) / max(1, pos.sum() * neg.sum())
        per_class[c] = {
            "precision": float(prec),
            "recall": float(rec),
            "f1": float(f1),
            "support": int(conf[i, :].sum()),
            "roc_auc": auc,
        }
    return {
        "n": n,
        "accuracy": float(np.trace(conf) / n) if n else 0.0,
        "macro_f1": float(np.mean([v["f1"] for v in per_class.values()])),
        "macro_roc_auc": float(np.mean([v["roc_auc"] for v in per_class.values()])),
        # how honest the probabilities are: mean log loss and Brier score (summed over classes),
        # and the expected calibration error of the top class (|share right - mean probability| per
        # bin of that probability, weighted by the bin's rows)
        "log_loss": float(summary["log_loss_sum"] / n) if n else 0.0,
        "brier": float(summary["brier_sum"] / n) if n else 0.0,
        "ece": float(np.abs(summary["top_right"] - summary["top_p"]).sum() / n) if n else 0.0,
        "per_class": per_class,
        "confusion": conf.tolist(),
        "classes": classes,
    }
