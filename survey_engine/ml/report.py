"""Model reports: one self-contained HTML page (plots embedded as PNG) beside ``metrics.json``."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd

from survey_engine.catalog.plots import png_html


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
    rows = [{"model": "survey_engine (xgboost.dask)", **{k: m["test"][k] for k in keys}}]
    return rows + [
        {"model": name, **{k: b.get(k) for k in keys}} for name, b in m.get("baselines", {}).items()
    ]


def _photoz_parts(m: dict, sample: pd.DataFrame) -> list[str]:
    """Held-out photo-z metrics (overall and in bins) and z_phot against z_spec."""
    import matplotlib.pyplot as plt

    test = m["test"]
    keys = ["n", "bias", "sigma_nmad", "sigma_iqr", "outlier_rate_015", "outlier_rate_lsst"]
    parts = ["<h2>Held-out metrics</h2>", table_html(_baseline_rows(m, keys), ["model"] + keys)]
    for key, label in (("by_redshift", "z"), ("by_magnitude", "mag")):
        if test.get(key):
            parts += [
                f"<h3>In bins of {label}</h3>",
                table_html(test[key], [f"{label}_lo", f"{label}_hi"] + keys),
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


def _classifier_parts(m: dict, classes: list) -> list[str]:
    """Held-out classification metrics (overall and per class) and the confusion matrix."""
    import matplotlib.pyplot as plt

    test = m["test"]
    keys = ["n", "accuracy", "macro_f1", "macro_roc_auc"]
    parts = [
        "<h2>Held-out metrics</h2>",
        table_html(_baseline_rows(m, keys), ["model"] + keys),
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
    style = "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>survey_engine model report</title>{style}</head><body>{''.join(parts)}</body></html>"
