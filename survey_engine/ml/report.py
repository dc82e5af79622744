"""Model reports: one self-contained HTML page (plots embedded as PNG) beside ``metrics.json``."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd

from survey_engine.catalog.plots import png_html
from survey_engine.ml.baselines import BASELINE_FOREST, BASELINE_XGBOOST


def table_html(rows: list[dict], keys: list[str]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = ""
    for r in rows:
        body += "<tr>" + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in keys) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _baseline_rows(m: dict, keys: list[str]) -> list[dict]:
    rows = [{"model": "survey_engine (xgboost.dask)", **{k: m["test"].get(k) for k in keys}}]
    return rows + [
        {"model": name, **{k: b.get(k) for k in keys}} for name, b in m.get("baselines", {}).items()
    ]


# the p(z)'s two intervals: metric key, label, nominal coverage
INTERVALS = (("interval_coverage", "68%", 0.68), ("interval_coverage_95", "95%", 0.95))


def coverage_noise(n: int, nominal: float) -> float:
    """The binomial standard error of the coverage that a perfectly calibrated p(z) shows on ``n``
    rows: bins of 100 rows scatter by 0.047 around 68%, so a bin's deviation is read against it."""
    return float(np.sqrt(nominal * (1 - nominal) / n)) if n else float("nan")


def _bin_rows(rows: list[dict], keys: list[str]) -> tuple[list[dict], list[str]]:
    """A bin table's rows with each interval's coverage beside the spread a calibrated p(z) would
    show on the bin's rows (headers kept short: the table has a dozen columns)."""
    shown = [(key, label, nominal) for key, label, nominal in INTERVALS if any(key in r for r in rows)]
    out = [
        {k: r.get(k) for k in keys}
        | {f"cov {label}": r.get(key) for key, label, _ in shown}
        | {f"se {label}": coverage_noise(r.get("n", 0), nominal) for _, label, nominal in shown}
        for r in rows
    ]
    return out, keys + [f"{kind} {label}" for _, label, _ in shown for kind in ("cov", "se")]


def _settings(params: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items())


def _headline_html(m: dict, task: str) -> str:
    """The margin over the stronger textbook baseline, and what the baselines are."""
    h = m.get("headline")
    if not h:
        return ""
    name = html.escape(h["stronger_baseline"])
    if task == "photoz":
        lower = h["sigma_nmad_lower_by"]
        line = (
            f"sigma_NMAD {h['sigma_nmad']:.5f}: {abs(lower) * 100:.1f}% {'lower' if lower >= 0 else 'higher'} "
            f"than the stronger baseline ({name}, {h['baseline_sigma_nmad']:.5f})"
        )
    else:
        line = (
            f"accuracy {h['accuracy']:.4f}, {h['accuracy_gain']:+.4f} against the stronger baseline "
            f"({name}, {h['baseline_accuracy']:.4f}); macro-F1 gain {h['macro_f1_gain']:+.4f}"
        )
    return (
        f"<p><b>Headline (held-out rows): {line}.</b> The baselines are the textbook single-process "
        f"configurations on the same split and features, trained on every training row: XGBoost "
        f"({html.escape(_settings(BASELINE_XGBOOST))}) and a scikit-learn random forest "
        f"({html.escape(_settings(BASELINE_FOREST))}).</p>"
    )


def _pdf_parts(test: dict) -> list[str]:
    """How honest the p(z) is on the held-out rows: coverage of both intervals against what a
    calibrated p(z) would give on as many rows, the PIT histogram with its KS statistic, CRPS."""
    import matplotlib.pyplot as plt

    if "interval_coverage" not in test:
        return []
    n, ks = test["n"], test.get("pit_ks", float("nan"))
    rows = [
        {"interval": label, "coverage": test[key], "nominal": nominal, "se": coverage_noise(n, nominal)}
        for key, label, nominal in INTERVALS
        if key in test
    ]
    parts = [
        "<h2>p(z) on held-out rows</h2>",
        f"<p>Intervals calibrated on rows the boosters never trained on. PIT KS {ks:.4f}, "
        f"CRPS {test.get('crps', float('nan')):.5f}. se: the binomial spread of the coverage of a perfectly calibrated p(z) on "
        "as many held-out rows (the finite number of calibration rows adds to it); in the tables below, "
        "read each bin's deviation from nominal in units of its se: a few se is what finite samples give.</p>",
        table_html(rows, ["interval", "coverage", "nominal", "se"]),
    ]
    if test.get("pit_histogram"):
        hist = np.asarray(test["pit_histogram"])
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(np.arange(len(hist)) / len(hist), hist, width=1 / len(hist), align="edge", edgecolor="white")
        ax.axhline(1 / len(hist), color="k", lw=0.8)
        ax.set(
            xlabel="PIT",
            ylabel="share of rows",
            title=f"PIT histogram (KS {ks:.3f})",
        )
        parts.append(png_html(fig))
    return parts


def _photoz_parts(m: dict, sample: pd.DataFrame) -> list[str]:
    """Held-out photo-z metrics (overall and in bins, with the intervals' coverage), the p(z)'s
    calibration and z_phot against z_spec."""
    import matplotlib.pyplot as plt

    test = m["test"]
    keys = ["n", "bias", "sigma_nmad", "sigma_iqr", "outlier_rate_015", "outlier_rate_lsst"]
    parts = [
        "<h2>Held-out metrics</h2>",
        _headline_html(m, "photoz"),
        table_html(_baseline_rows(m, keys), ["model"] + keys),
    ]
    parts += _pdf_parts(test)
    for key, label, edge in (
        ("by_redshift", "spectroscopic redshift", "z"),
        ("by_photoz", "photometric redshift", "z"),
        ("by_magnitude", "magnitude", "mag"),
    ):
        if test.get(key):
            parts += [
                f"<h3>In bins of {label}</h3>",
                table_html(*_bin_rows(test[key], [f"{edge}_lo", f"{edge}_hi"] + keys)),
            ]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.5))
    zs, zp = sample["_y"].to_numpy(), sample["z_phot"].to_numpy()
    top = float(np.nanpercentile(zs, 99.5)) * 1.05 if len(zs) else 1
    ax[0].scatter(zs, zp, s=1, alpha=0.3)
    ax[0].plot([0, top], [0, top], "k-", lw=0.8)
    ax[0].set(
        xlim=(0, top), ylim=(0, top), xlabel="z_spec", ylabel="z_phot", title="z_phot vs z_spec (held-out)"
    )
    ez = (zp - zs) / (1 + zs)
    ax[1].hist(np.clip(ez, -0.2, 0.2), bins=200)
    ax[1].set(xlabel="(z_phot - z_spec) / (1 + z_spec)", title=f"sigma_NMAD = {test['sigma_nmad']:.4f}")
    return parts + [png_html(fig)]


def _probability_html(test: dict) -> str:
    """The class probabilities' quality on held-out rows (temperature fitted on other rows)."""
    found = {k: test[k] for k in ("log_loss", "brier", "ece") if k in test}
    if not found:
        return ""
    return (
        "<p>Class probabilities on held-out rows: "
        + ", ".join(f"{k} {v:.4f}" for k, v in found.items())
        + ".</p>"
    )


def _classifier_parts(m: dict, classes: list) -> list[str]:
    """Held-out classification metrics (overall and per class) and the confusion matrix."""
    import matplotlib.pyplot as plt

    test = m["test"]
    keys = ["n", "accuracy", "macro_f1", "macro_roc_auc"]
    parts = [
        "<h2>Held-out metrics</h2>",
        _headline_html(m, "classify"),
        table_html(_baseline_rows(m, keys), ["model"] + keys),
        _probability_html(test),
        "<h3>Per class</h3>",
        table_html(
            [{"class": c, **v} for c, v in test["per_class"].items()],
            ["class", "precision", "recall", "f1", "roc_auc", "support"],
        ),
    ]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    conf = np.array(test["confusion"])
    ax.imshow(conf, cmap="Blues")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            ax.text(j, i, str(conf[i, j]), ha="center", va="center")
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="true",
        title="confusion (held-out)",
    )
    return parts + [png_html(fig)]


def model_report(meta: dict, sample: pd.DataFrame) -> str:
    """The model's HTML report: held-out metrics against the baselines, a figure of the held-out
    predictions, feature importance and the cross-validation summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = meta["metrics"]
    parts = [
        f"<h1>survey_engine model: {html.escape(meta['task'])}</h1>",
        f"<p>features: {html.escape(', '.join(meta['features']))}; trained on {html.escape(meta['training_catalog']['path'])} "
        f"({m['split']['rows']} labelled rows, test fold: {html.escape(m['split']['fold_kind'])}, 1 of {m['split']['folds']}); device {meta['device']}</p>",
    ]
    parts += _photoz_parts(m, sample) if meta["task"] == "photoz" else _classifier_parts(m, meta["classes"])
    imp = m.get("importance", {})
    if imp:
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(imp) + 1))
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names])
        ax.set(xlabel="share of total gain", title="feature importance")
        parts.append(png_html(fig))
    if m.get("cv"):
        parts += [
            "<h2>Cross-validation</h2>",
            "<pre>" + html.escape(json.dumps(m["cv"]["summary"], indent=1)) + "</pre>",
        ]
        if m["cv"].get("baselines"):
            parts += [
                "<p>Baselines on the same folds (means):</p>",
                "<pre>" + html.escape(json.dumps(m["cv"]["baselines"], indent=1)) + "</pre>",
            ]
    style = "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px}</style>"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>survey_engine model report</title>{style}</head><body>{''.join(parts)}</body></html>"
