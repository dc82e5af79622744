"""The run report: ``WORKDIR/report.html``, one self-contained page (plots embedded as PNG) that
shows what every stage of a job made.

Each section appears when the job has a stage of its kind: the time and peak memory of every
stage; a sky map (Mollweide, sources per square degree) of every imported catalog; the
separations and match rates of every cross-match (and, where the left side has proper motions,
the share matched against proper motion); photo-z against the spectroscopic redshifts of the
held-out sky with the coverage of the 68% intervals; the confusion matrix of a classifier; the
proper-motion and colour-magnitude diagrams of the clusters found; anomaly scores; for variable
stars classified from their light curves, phase-folded light curves of a few and the
period-amplitude (Bailey) diagram coloured by predicted class. Data are
reduced on the workers partition by partition (histograms, samples), so the report stays cheap at
any size. A section that cannot be drawn says why instead of failing the job.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.catalog.layout import atomic_write_text
from survey_engine.catalog.plots import png_html
from survey_engine.ml.report import table_html

log = logging.getLogger("survey_engine.jobs")

STYLE = """<style>
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #4a78b5;padding-bottom:.15em;margin-top:1.6em}
.lead{color:#555}table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eef2f8}td:first-child,th:first-child{text-align:left}
img{max-width:100%}.grid{display:flex;flex-wrap:wrap;gap:1em}.note{color:#666;font-size:.9em}
.err{color:#a00}.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:.8em 0}
.card{border:1px solid #ccd;border-radius:6px;padding:.5em .9em;background:#f8f9fc}.card b{display:block;font-size:1.3em}
</style>"""

SECTION_IDS = (
    "stages",
    "sky",
    "crossmatch",
    "photoz",
    "classification",
    "variables",
    "clusters",
    "anomalies",
)


def write_report(spec, summary: dict, client=None) -> Path:
    """Write ``spec.workdir/report.html`` for a finished run described by ``summary``; its path."""
    import matplotlib

    matplotlib.use("Agg")
    t0 = time.perf_counter()
    stages = {s.id: s for s in spec.stages}
    done = {sid: info for sid, info in summary["stages"].items() if sid in stages}
    parts = [_header(spec, summary, done), _stage_section(spec, done)]
    for builder in (
        _sky_section,
        _crossmatch_section,
        _photoz_section,
        _classification_section,
        _variables_section,
        _cluster_section,
        _anomaly_section,
    ):
        parts.append(_guarded(builder, spec, stages, done))
    parts.append(
        f"<p class='note'>Report written in {time.perf_counter() - t0:.1f} s by survey_engine from "
        f"{html.escape(str(spec.path))}; the run's numbers are in run_summary.json beside this file.</p>"
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>survey_engine run report: {html.escape(spec.name)}</title>{STYLE}</head><body>{''.join(parts)}</body></html>"
    )
    out = spec.workdir / "report.html"
    atomic_write_text(out, page)
    return out


def _guarded(builder, spec, stages, done) -> str:
    try:
        return builder(spec, stages, done)
    except Exception as exc:  # a plot that fails must not cost the user a finished run
        log.warning("report section %s failed: %s", builder.__name__, exc)
        name = builder.__name__.strip("_").replace("_section", "")
        return f"<h2>{html.escape(name)}</h2><p class='err'>could not draw this section: {html.escape(f'{type(exc).__name__}: {exc}')}</p>"


def _of_kind(stages, done, kind: str, task: str | None = None) -> list[str]:
    return [
        sid
        for sid in done
        if stages[sid].kind == kind and (task is None or stages[sid].params.get("task") == task)
    ]


def _header(spec, summary: dict, done: dict) -> str:
    total = sum(float(i.get("seconds") or 0) for i in done.values() if not i.get("skipped"))
    cluster = summary.get("cluster", {})
    reused = [sid for sid, i in done.items() if i.get("skipped")]
    cards = [
        ("stages", f"{len(done)}"),
        ("run time", f"{total:.0f} s"),
        ("workers", str(cluster.get("workers", "?"))),
    ]
    peak = max((float(i.get("peak_memory_mib") or 0) for i in done.values()), default=0.0)
    if peak:
        cards.append(("peak memory", f"{peak / 1024:.2f} GiB"))
    for sid in done:
        info = done[sid]
        if "match_rate" in info:
            cards.append((f"{sid} match rate", f"{100 * info['match_rate']:.2f}%"))
    text = "".join(f"<div class='card'>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in cards)
    note = (
        f" Reused from an earlier run: {html.escape(', '.join(reused))} (their times are that run's)."
        if reused
        else ""
    )
    desc = f"<p class='lead'>{html.escape(spec.description)}</p>" if getattr(spec, "description", "") else ""
    return (
        f"<h1>Run report: {html.escape(spec.name)}</h1>{desc}"
        f"<p class='lead'>Work directory <code>{html.escape(str(spec.workdir))}</code>, started {html.escape(summary.get('started', ''))} "
        f"on {cluster.get('workers', '?')} Dask workers.{note}</p><div class='cards'>{text}</div>"
    )


def _stage_section(spec, done: dict) -> str:
    import matplotlib.pyplot as plt

    rows = []
    for sid, info in done.items():
        flat = {**info, **info.get("held_out", {})}  # a model's held-out metrics
        extra = {
            k: v
            for k, v in flat.items()
            if k not in ("kind", "seconds", "path", "skipped", "peak_memory_mib", "cpu_seconds")
            and not isinstance(v, (dict, list))
        }
        rows.append(
            {
                "stage": sid,
                "kind": info["kind"],
                "seconds": info.get("seconds"),
                "CPU seconds": info.get("cpu_seconds"),
                "peak memory (MiB)": info.get("peak_memory_mib"),
                "reused": "yes" if info.get("skipped") else "",
                "result": ", ".join(f"{k}={_short(v)}" for k, v in extra.items()),
            }
        )
    parts = [
        "<h2 id='stages'>Stages: time and memory</h2>",
        "<p class='note'>Seconds are wall-clock time; CPU seconds and peak memory are summed over the driver and its local "
        "Dask workers during the stage.</p>",
    ]
    timed = [r for r in rows if r["seconds"] is not None]
    if timed:
        fig, ax = plt.subplots(1, 2, figsize=(11, 0.34 * len(timed) + 1.3), sharey=True)
        names = [r["stage"] for r in timed][::-1]
        ax[0].barh(names, [float(r["seconds"]) for r in timed][::-1], color="#4a78b5")
        ax[0].set(xlabel="seconds", title="time per stage")
        ax[1].barh(names, [float(r["peak memory (MiB)"] or 0) / 1024 for r in timed][::-1], color="#c77c2e")
        ax[1].set(xlabel="GiB", title="peak memory per stage")
        fig.tight_layout()
        parts.append(png_html(fig))
    rows = [{k: ("" if v is None else v) for k, v in r.items()} for r in rows]
    parts.append(
        table_html(rows, ["stage", "kind", "seconds", "CPU seconds", "peak memory (MiB)", "reused", "result"])
    )
    return "".join(parts)


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _partition_results(path: str, columns: list[str], func) -> list:
    """``func(frame)`` for every partition of the catalog at ``path`` (only ``columns`` read), on the workers."""
    import dask

    from survey_engine.catalog.catalog import open_catalog

    cat = open_catalog(path, margin=None)
    ddf = cat.select_columns([c for c in columns if c in cat.column_names()]).to_dask()
    return list(dask.compute(*[dask.delayed(func)(p) for p in ddf.to_delayed()]))


def _columns(path: str) -> list[str]:
    from survey_engine.catalog.catalog import open_catalog

    return open_catalog(path, margin=None).column_names()


# -- sky maps ------------------------------------------------------------------------------------

RA_BINS, SINDEC_BINS = 240, 120


class _SkyHistogram:
    def __init__(self, ra: str, dec: str):
        self.ra, self.dec = ra, dec

    def __call__(self, df: pd.DataFrame) -> np.ndarray:
        h, _, _ = np.histogram2d(
            df[self.ra].to_numpy(float) % 360.0,
            np.sin(np.radians(df[self.dec].to_numpy(float))),
            bins=[RA_BINS, SINDEC_BINS],
            range=[[0, 360], [-1, 1]],
        )
        return h


def sky_density(path: str) -> np.ndarray:
    """Sources per square degree on an equal-area (RA, sin Dec) grid, coarse enough that a cell
    holds about 10 sources on average (240 x 120 cells at most)."""
    from survey_engine.catalog.catalog import open_catalog

    cat = open_catalog(path, margin=None)
    counts = np.asarray(
        sum(
            _partition_results(
                path, [cat.ra_column, cat.dec_column], _SkyHistogram(cat.ra_column, cat.dec_column)
            )
        )
    )
    factor = 1
    while factor < 8 and counts.sum() / counts.size < 10:
        counts = counts.reshape(counts.shape[0] // 2, 2, counts.shape[1] // 2, 2).sum(axis=(1, 3))
        factor *= 2
    cell_deg2 = 4 * np.pi * (180 / np.pi) ** 2 / counts.size
    return counts / cell_deg2


def _sky_section(spec, stages, done) -> str:
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    ids = [sid for sid in done if stages[sid].kind in ("import", "ingest")]
    if not ids:
        return ""
    parts = [
        "<h2 id='sky'>Sky maps</h2><p class='note'>Mollweide projection in equatorial coordinates (RA increasing to the left), "
        "sources per square degree.</p><div class='grid'>"
    ]
    for sid in ids:
        density = sky_density(done[sid]["path"])
        ra_edges = np.radians(np.linspace(0, 360, density.shape[0] + 1))
        dec_edges = np.arcsin(np.linspace(-1, 1, density.shape[1] + 1))
        fig = plt.figure(figsize=(5.3, 3.4))
        ax = fig.add_subplot(111, projection="mollweide")
        shown = np.where(density > 0, density, np.nan)
        positive = density[density > 0]
        norm = LogNorm(vmin=np.percentile(positive, 1), vmax=positive.max()) if len(positive) else None
        mesh = ax.pcolormesh(np.pi - ra_edges, dec_edges, shown.T, cmap="viridis", norm=norm, shading="flat")
        ax.set_xticks(np.radians([-150, -90, -30, 30, 90, 150]))
        ax.set_xticklabels(["330°", "270°", "210°", "150°", "90°", "30°"], fontsize=7, color="w")
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, alpha=0.3)
        fig.colorbar(mesh, ax=ax, orientation="horizontal", pad=0.06, fraction=0.05, label="sources / deg²")
        rows = done[sid].get("rows")
        ax.set_title(f"{sid}: {rows:,} rows" if isinstance(rows, int) else sid)
        parts.append(png_html(fig))
    parts.append("</div>")
    return "".join(parts)


# -- cross-matches -------------------------------------------------------------------------------


class _MatchSample:
    def __init__(self, pmra: str | None, pmdec: str | None):
        self.pmra, self.pmdec = pmra, pmdec

    def __call__(self, df: pd.DataFrame) -> dict:
        sep = df["sep_arcsec"].to_numpy(float)
        out = {"sep": sep[np.isfinite(sep)]}
        if self.pmra:
            pm = np.hypot(df[self.pmra].to_numpy(float), df[self.pmdec].to_numpy(float))
            out["pm"], out["matched"] = pm, np.isfinite(sep)
        return out


def _crossmatch_section(spec, stages, done) -> str:
    import matplotlib.pyplot as plt

    ids = _of_kind(stages, done, "crossmatch")
    if not ids:
        return ""
    parts = ["<h2 id='crossmatch'>Cross-matches</h2>"]
    rows, samples = [], {}
    for sid in ids:
        p, info = stages[sid].params, done[sid]
        suffix = p.get("suffixes", ["_1", "_2"])[0]
        cols = _columns(info["path"])
        pmra, pmdec = f"pmra{suffix}", f"pmdec{suffix}"
        has_pm = pmra in cols and pmdec in cols and p.get("join", "inner") in ("left", "outer")
        got = _partition_results(
            info["path"],
            ["sep_arcsec", *([pmra, pmdec] if has_pm else [])],
            _MatchSample(pmra if has_pm else None, pmdec),
        )
        sample = {k: np.concatenate([g[k] for g in got]) for k in got[0]} if got else {"sep": np.zeros(0)}
        samples[sid] = sample
        epoch = f"propagated to {p['epoch']:g}" if "epoch" in p else "as observed (no propagation)"
        rows.append(
            {
                "stage": sid,
                "left": p["left"],
                "right": p["right"],
                "radius (arcsec)": p["radius"],
                "how": p.get("how", "nearest"),
                "positions": epoch,
                "matched": info.get("matched", info.get("rows")),
                "match rate": f"{100 * info['match_rate']:.2f}%" if "match_rate" in info else "",
                "median sep (arcsec)": float(np.median(sample["sep"])) if len(sample["sep"]) else None,
            }
        )
    parts.append(table_html(rows, list(rows[0])))
    with_pm = [sid for sid in ids if "pm" in samples[sid]]
    fig, ax = plt.subplots(1, 2 if with_pm else 1, figsize=(11 if with_pm else 6, 4))
    ax = np.atleast_1d(ax)
    radius = max(float(stages[sid].params["radius"]) for sid in ids)
    for sid in ids:
        sep = samples[sid]["sep"]
        ax[0].hist(
            sep, bins=60, range=(0, radius), histtype="step", lw=1.6, label=f"{sid} ({len(sep):,} pairs)"
        )
    ax[0].set(xlabel="separation (arcsec)", ylabel="pairs", title="match separations", yscale="log")
    ax[0].legend(fontsize=8)
    if with_pm:
        edges = np.array([0, 5, 10, 20, 30, 45, 60, 80, 100, 130, 170, 250, 400])
        for sid in with_pm:
            s = samples[sid]
            which = np.digitize(s["pm"], edges) - 1
            ok = np.isfinite(s["pm"]) & (which >= 0) & (which < len(edges) - 1)
            n = np.bincount(which[ok], minlength=len(edges) - 1)
            m = np.bincount(which[ok], weights=s["matched"][ok], minlength=len(edges) - 1)
            centre = 0.5 * (edges[1:] + edges[:-1])
            keep = n >= 3
            ax[1].plot(centre[keep], (m / np.maximum(n, 1))[keep], "o-", label=sid)
        ax[1].set(
            xlabel="total proper motion (mas/yr)",
            ylabel="share of left rows matched",
            ylim=(-0.03, 1.05),
            title="matched share vs proper motion",
        )
        ax[1].legend(fontsize=8)
    fig.tight_layout()
    parts.append(png_html(fig))
    return "".join(parts)


# -- photometric redshifts -----------------------------------------------------------------------


def _model_files(path: str) -> tuple[dict, pd.DataFrame | None]:
    model = Path(path)
    metrics = json.loads((model / "metrics.json").read_text()) if (model / "metrics.json").exists() else {}
    held_out = pd.read_parquet(model / "held_out.parquet") if (model / "held_out.parquet").exists() else None
    return metrics, held_out


class _ZHistogram:
    EDGES = np.linspace(0, 1.5, 61)

    def __call__(self, df: pd.DataFrame) -> np.ndarray:
        if "class_pred" in df.columns:
            df = df[df["class_pred"] == "GALAXY"]
        return np.histogram(df["z_phot"].to_numpy(float), bins=self.EDGES)[0]


def _photoz_section(spec, stages, done) -> str:
    import matplotlib.pyplot as plt

    ids = _of_kind(stages, done, "train", "photoz")
    if not ids:
        return ""
    parts = ["<h2 id='photoz'>Photometric redshifts</h2>"]
    for sid in ids:
        metrics, held = _model_files(done[sid]["path"])
        test = metrics.get("test", {})
        keys = [k for k in ("n", "bias", "sigma_nmad", "outlier_rate_015", "interval_coverage") if k in test]
        target = stages[sid].params.get("target")
        parts.append(
            f"<p>Model <b>{html.escape(sid)}</b> trained on {html.escape(str(target))} of "
            f"{html.escape(stages[sid].params.get('where') or 'all labelled rows')}; metrics on the held-out sky "
            "(whole HEALPix pixels kept out of training):</p>"
        )
        parts.append(table_html([{"model": sid, **{k: test[k] for k in keys}}], ["model", *keys]))
        applied = [a for a in done if stages[a].kind == "predict" and stages[a].params.get("model") == sid]
        ncol = 2 + bool(applied)
        fig, ax = plt.subplots(1, ncol, figsize=(5.2 * ncol, 4.6))
        if held is not None and len(held):
            zs, zp = held["_y"].to_numpy(float), held["z_phot"].to_numpy(float)
            top = float(np.nanpercentile(zs, 99.5)) * 1.08
            hb = ax[0].hexbin(
                zs, zp, gridsize=70, extent=(0, top, 0, top), bins="log", cmap="viridis", mincnt=1
            )
            ax[0].plot([0, top], [0, top], "w-", lw=0.8)
            zz = np.linspace(0, top, 50)
            for sign in (-1, 1):
                ax[0].plot(zz, zz + sign * 0.15 * (1 + zz), "w--", lw=0.6)
            fig.colorbar(hb, ax=ax[0], label="galaxies")
            ax[0].set(
                xlim=(0, top),
                ylim=(0, top),
                xlabel="z_spec",
                ylabel="z_phot",
                title=f"held out: {len(zs):,} galaxies, σ_NMAD = {test.get('sigma_nmad', float('nan')):.4f}",
            )
            if {"z_phot_lo", "z_phot_hi"} <= set(held.columns):
                inside = (held["z_phot_lo"].to_numpy(float) <= zs) & (zs <= held["z_phot_hi"].to_numpy(float))
                edges = np.quantile(zs, np.linspace(0, 1, 9))
                which = np.clip(np.digitize(zs, edges[1:-1]), 0, len(edges) - 2)
                cov = np.array(
                    [
                        inside[which == b].mean() if (which == b).any() else np.nan
                        for b in range(len(edges) - 1)
                    ]
                )
                width = np.array(
                    [
                        np.median((held["z_phot_hi"] - held["z_phot_lo"]).to_numpy(float)[which == b])
                        for b in range(len(edges) - 1)
                    ]
                )
                centre = 0.5 * (edges[1:] + edges[:-1])
                ax[1].plot(centre, cov, "o-", label=f"coverage (all: {inside.mean():.1%})")
                ax[1].axhline(0.68, color="k", ls="--", lw=0.8, label="nominal 68%")
                ax[1].plot(centre, width, "s-", color="#c77c2e", label="median interval width")
                ax[1].set(xlabel="z_spec", ylim=(0, 1), title="16-84% intervals on held-out galaxies")
                ax[1].legend(fontsize=8)
        for a in applied:
            hist = sum(_partition_results(done[a]["path"], ["z_phot", "class_pred"], _ZHistogram()))
            edges = _ZHistogram.EDGES
            ax[-1].stairs(hist, edges, fill=True, alpha=0.6, label=f"{a}: {int(np.sum(hist)):,} galaxies")
            if held is not None and len(held):
                ax[-1].stairs(
                    np.histogram(held["_y"], bins=edges)[0] * (np.sum(hist) / max(len(held), 1)),
                    edges,
                    color="k",
                    label="held-out z_spec (scaled)",
                )
            ax[-1].set(xlabel="z_phot", ylabel="galaxies", title="z_phot of every galaxy")
            ax[-1].legend(fontsize=8)
        fig.tight_layout()
        parts.append(png_html(fig))
    return "".join(parts)


# -- classification ------------------------------------------------------------------------------


class _ClassCounts:
    def __call__(self, df: pd.DataFrame) -> pd.Series:
        return df["class_pred"].astype("string").value_counts()


def _classification_section(spec, stages, done) -> str:
    import matplotlib.pyplot as plt

    ids = _of_kind(stages, done, "train", "classify")
    if not ids:
        return ""
    parts = ["<h2 id='classification'>Classification</h2>"]
    for sid in ids:
        model = Path(done[sid]["path"])
        metrics, _ = _model_files(str(model))
        classes = json.loads((model / "model.json").read_text())["classes"]
        test = metrics["test"]
        conf = np.array(test["confusion"], dtype=float)
        parts.append(
            f"<p>Model <b>{html.escape(sid)}</b>: held-out accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} "
            f"({int(conf.sum()):,} labelled objects on sky kept out of training; true classes from "
            f"{html.escape(str(stages[sid].params.get('label')))}).</p>"
        )
        applied = [a for a in done if stages[a].kind == "predict" and stages[a].params.get("model") == sid]
        width = max(5.2, 0.9 * len(classes) + 1.0)  # many classes (variable types) need room for their counts
        fig, ax = plt.subplots(1, 1 + bool(applied), figsize=(width * (1 + bool(applied)), 4.4 * width / 5.2))
        ax = np.atleast_1d(ax)
        share = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
        ax[0].imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(conf.shape[0]):
            for j in range(conf.shape[1]):
                ax[0].text(
                    j,
                    i,
                    f"{int(conf[i, j]):,}\n{share[i, j]:.1%}",
                    ha="center",
                    va="center",
                    color="white" if share[i, j] > 0.6 else "black",
                    fontsize=9 if len(classes) <= 4 else 7,
                )
        ax[0].set(
            xticks=range(len(classes)),
            yticks=range(len(classes)),
            xticklabels=classes,
            yticklabels=classes,
            xlabel="predicted",
            ylabel=f"true class ({stages[sid].params.get('label')})",
            title="confusion matrix (held out)",
        )
        for a in applied:
            counts = (
                pd.concat(_partition_results(done[a]["path"], ["class_pred"], _ClassCounts()))
                .groupby(level=0)
                .sum()
            )
            counts = counts.reindex(classes).fillna(0)
            ax[1].bar(classes, counts.to_numpy(), color=["#4a78b5", "#c77c2e", "#5a9e5a"][: len(classes)])
            for x, v in enumerate(counts.to_numpy()):
                ax[1].text(x, v, f"{int(v):,}", ha="center", va="bottom", fontsize=9)
            ax[1].set(ylabel="objects", title=f"{a}: predicted classes of all {int(counts.sum()):,}")
        fig.tight_layout()
        parts.append(png_html(fig))
        parts.append(
            table_html(
                [{"class": c, **v} for c, v in test["per_class"].items()],
                ["class", "precision", "recall", "f1", "support"],
            )
        )
    return "".join(parts)


# -- variable stars ------------------------------------------------------------------------------

PHASE_PANELS = (
    8  # phase-folded light curves shown: the clearest star of each predicted class, and a misclassified one
)


class _VariableSample:
    """Per partition: the columns of the Bailey diagram for at most ``keep`` rows, and the candidates
    for the phase-folded panels (each predicted class's most clearly periodic star, rightly classified
    where the true class is known, and the most clearly periodic misclassified one)."""

    def __init__(self, columns: list[str], fap: str, label: str | None, keep: int):
        self.columns, self.fap, self.label, self.keep = columns, fap, label, keep

    def __call__(self, df: pd.DataFrame) -> dict:
        df = df[[c for c in self.columns if c in df.columns]]
        df = df.assign(_healpix_29=df.index.to_numpy())
        shown = df.sample(min(len(df), self.keep), random_state=0) if len(df) > self.keep else df
        ranked = df[np.isfinite(df[self.fap].to_numpy(float))].sort_values(self.fap, kind="stable")
        wrong = np.zeros(len(ranked), bool)
        if self.label:
            wrong = (ranked[self.label].astype(str) != ranked["class_pred"].astype(str)).to_numpy()
        right = ranked[~wrong]
        best = pd.concat(
            [
                right.groupby(right["class_pred"].astype(str), sort=True).head(1).assign(_wrong=False),
                ranked[wrong].head(1).assign(_wrong=True),
            ]
        )
        return {"shown": shown, "best": best, "rows": len(df)}


def _variable_stages(stages, done) -> list[tuple[str, str, str]]:
    """(predict stage, its classify model, the lightcurves stage) for every classification of
    variability features computed from nested light curves."""
    found = []
    for sid in done:
        if stages[sid].kind != "predict":
            continue
        model, catalog = stages[sid].params.get("model"), stages[sid].params.get("catalog")
        if (
            model in done
            and stages[model].params.get("task") == "classify"
            and catalog in done
            and stages[catalog].kind == "variability"
            and stages[catalog].params.get("catalog") in done
            and stages[stages[catalog].params["catalog"]].kind == "lightcurves"
        ):
            found.append((sid, model, stages[catalog].params["catalog"]))
    return found


def _period_band(features: list[str], columns: list[str], path: str) -> str:
    """The prefix (``r_``, or empty for an unnamed band) of the period the classifier used."""
    for f in features:
        if (f == "period" or f.endswith("_period")) and f in columns:
            return f[: -len("period")]
    prefixes = [c[: -len("period")] for c in columns if c.endswith("_period")]
    if not prefixes:
        from survey_engine.errors import MissingColumnError

        raise MissingColumnError(f"{path}: no <band>_period column, so it is not a variability catalog")
    return prefixes[0]


def _light_curves(path: str, id_column: str, lc_column: str, picked: pd.DataFrame) -> dict:
    """The nested light curves of the ``picked`` objects, read from only the partitions that hold them."""
    import pyarrow.parquet as pq

    from survey_engine.catalog.catalog import open_catalog

    cat = open_catalog(path, margin=None)
    hp = picked["_healpix_29"].to_numpy(np.int64)
    curves = {}
    for order, pix, file in zip(cat.partitions.Norder, cat.partitions.Npix, cat.partition_files()):
        ids = picked[(hp >> (2 * (29 - int(order)))) == int(pix)][id_column].tolist()
        if not ids:
            continue
        table = pq.read_table(file, columns=[id_column, lc_column], filters=[(id_column, "in", ids)])
        for ident, record in zip(table.column(id_column).to_pylist(), table.column(lc_column).to_pylist()):
            curves[ident] = record or {}
    return curves


def _variables_section(spec, stages, done) -> str:
    found = _variable_stages(stages, done)
    if not found:
        return ""
    parts = [
        "<h2 id='variables'>Variable stars</h2><p class='note'>Classified from their light curves' variability features. "
        "Phase-folded light curves (two cycles, every band, folded at the period found, maximum light at phase 0) of "
        "the most clearly periodic star of each predicted class and of the most clearly periodic misclassified one; "
        "the period-amplitude (Bailey) diagram of every classified star (a sample beyond 20,000), coloured by predicted "
        "class. Amplitude is light-curve's: half the range of the magnitudes.</p>"
    ]
    for sid, model, lc_sid in found:
        parts += _variable_stage_html(sid, model, lc_sid, stages, done)
    return "".join(parts)


def _variable_stage_html(sid: str, model: str, lc_sid: str, stages, done) -> list[str]:
    """One classified variability catalog: a line of what it is, its phase-folded light curves, its
    Bailey diagram and the table of the stars shown."""
    lc_params = stages[lc_sid].params
    id_column = lc_params.get("object_id") or lc_params.get("id") or "object_id"
    fields = {k: lc_params.get(k, k) for k in ("band", "time", "mag")}
    label = stages[model].params.get("label")
    cols = _columns(done[sid]["path"])
    band = _period_band(list(stages[model].params.get("features", [])), cols, done[sid]["path"])
    period, amplitude, fap = f"{band}period", f"{band}amplitude", f"{band}period_fap"
    want = [id_column, "class_pred", period, amplitude, fap, *([label] if label in cols else [])]
    rows = done[sid].get("rows") or done[lc_sid].get("objects") or 20_000
    got = _partition_results(
        done[sid]["path"],
        want,
        _VariableSample(want, fap, label if label in cols else None, max(200, 20_000 * 30 // max(rows, 1))),
    )
    shown = pd.concat([g["shown"] for g in got])
    best = pd.concat([g["best"] for g in got]).sort_values(fap, kind="stable")
    wrong = best[best["_wrong"].astype(bool)].head(1)
    right = best[~best["_wrong"].astype(bool)].drop_duplicates("class_pred").head(PHASE_PANELS - len(wrong))
    picked = pd.concat([right.sort_values("class_pred", kind="stable"), wrong])
    curves = _light_curves(done[lc_sid]["path"], id_column, lc_params.get("lc_column", "lc"), picked)
    acc = done[model].get("held_out", {}).get("accuracy")
    columns = {"id": id_column, "label": label, "period": period, "amplitude": amplitude, "fap": fap}
    return [
        f"<p><b>{html.escape(sid)}</b>: {sum(g['rows'] for g in got):,} stars classified by <b>{html.escape(model)}</b>"
        + (f" (held-out accuracy {acc:.3f})" if isinstance(acc, float) else "")
        + f", from the light curves of <b>{html.escape(lc_sid)}</b>; periods and amplitudes of band "
        f"{html.escape(band.rstrip('_') or '(unnamed)')}.</p>",
        png_html(_phase_folded_figure(picked, curves, fields, band, columns)),
        png_html(_bailey_figure(sid, shown, band, period, amplitude)),
        _picked_table(picked, columns, label in cols),
    ]


def _phase_folded_figure(picked: pd.DataFrame, curves: dict, fields: dict, band: str, columns: dict):
    """The picked stars' light curves folded at their periods (two cycles, maximum light at phase 0)."""
    import matplotlib.pyplot as plt

    id_column, label = columns["id"], columns["label"]
    ncol = 4
    nrow = max(1, -(-len(picked) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(13, 3.2 * nrow), squeeze=False)
    for ax, (_, star) in zip(axes.ravel(), picked.iterrows()):
        record = curves.get(star[id_column], {})
        t = np.asarray(record.get(fields["time"], []), dtype=float)
        m = np.asarray(record.get(fields["mag"], []), dtype=float)
        bands = (
            np.asarray(record.get(fields["band"], [""] * len(t)), dtype=object)
            if fields["band"]
            else np.full(len(t), "")
        )
        p = float(star[columns["period"]])
        ref = band.rstrip("_")
        main = (bands == ref) if ref and (bands == ref).any() else np.ones(len(t), bool)
        t0 = t[main][np.argmin(m[main])] if main.any() else 0.0
        phase = ((t - t0) / p) % 1.0 if np.isfinite(p) and p > 0 else np.zeros(len(t))
        for b in sorted(set(bands.tolist())):
            sel = bands == b
            ax.scatter(np.r_[phase[sel], phase[sel] + 1], np.r_[m[sel], m[sel]], s=4, label=str(b) or None)
        ax.invert_yaxis()
        truth = f"true {star[label]}, " if label in star.index else ""
        mark = " (misclassified)" if bool(star["_wrong"]) else ""
        ax.set_title(
            f"{id_column} {star[id_column]}{mark}\n{truth}predicted {star['class_pred']}, P = {p:.5g} d",
            fontsize=9,
            color="#a00" if mark else "black",
        )
        ax.set(xlabel="phase", ylabel="magnitude", xlim=(0, 2))
        if len(set(bands.tolist())) > 1:
            ax.legend(fontsize=7, markerscale=2, loc="lower right")
    for ax in axes.ravel()[len(picked) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _bailey_figure(sid: str, shown: pd.DataFrame, band: str, period: str, amplitude: str):
    """The period-amplitude diagram of the classified stars, coloured by predicted class."""
    import matplotlib.pyplot as plt

    classes = sorted(shown["class_pred"].astype(str).unique())
    colours = dict(zip(classes, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for c in classes:
        grp = shown[shown["class_pred"].astype(str) == c]
        ax.scatter(
            np.log10(grp[period].to_numpy(float)),
            grp[amplitude].to_numpy(float),
            s=7,
            color=colours[c],
            label=f"{c} ({len(grp):,})",
            alpha=0.8,
        )
    ax.set(
        xlabel=f"log10 period ({band.rstrip('_') or 'light curve'}, days)",
        ylabel=f"amplitude ({band.rstrip('_') or 'mag'}, mag)",
        title=f"{sid}: period-amplitude diagram by predicted class",
    )
    ax.legend(fontsize=8, markerscale=2, ncol=2)
    fig.tight_layout()
    return fig


def _picked_table(picked: pd.DataFrame, columns: dict, labelled: bool) -> str:
    """The stars shown in the phase-folded panels: id, true class if known, prediction, period, amplitude, FAP."""
    id_column, label = columns["id"], columns["label"]
    return table_html(
        [
            {
                id_column: r[id_column],
                **({"true class": r[label]} if label in r.index else {}),
                "predicted": r["class_pred"],
                "period (d)": float(r[columns["period"]]),
                "amplitude (mag)": float(r[columns["amplitude"]]),
                "FAP": float(r[columns["fap"]]),
            }
            for _, r in picked.iterrows()
        ],
        [
            id_column,
            *(["true class"] if labelled else []),
            "predicted",
            "period (d)",
            "amplitude (mag)",
            "FAP",
        ],
    )


# -- clusters ------------------------------------------------------------------------------------


class _ClusterSample:
    def __init__(self, columns: list[str], field_share: float):
        self.columns, self.field_share = columns, field_share

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        members = df[df["cluster_id"] >= 0]
        field = df[df["cluster_id"] < 0]
        field = field.sample(frac=self.field_share, random_state=0) if len(field) else field
        return pd.concat([members, field])[[c for c in self.columns if c in df.columns]]


def _cluster_section(spec, stages, done) -> str:
    import matplotlib.pyplot as plt

    ids = _of_kind(stages, done, "cluster")
    if not ids:
        return ""
    parts = ["<h2 id='clusters'>Clusters</h2>"]
    for sid in ids:
        path = Path(done[sid]["path"])
        found = json.loads((path / "clusters.json").read_text()) if (path / "clusters.json").exists() else {}
        clusters = found.get("clusters", [])
        parts.append(
            f"<p><b>{html.escape(sid)}</b>: {found.get('n_clusters', len(clusters))} clusters found by "
            f"{html.escape(str(found.get('method', '')))} in {found.get('tiles', '?')} tiles (each with its "
            f'{found.get("margin_arcsec", "?")}" margin), merged across tile borders; {found.get("noise", "?"):,} rows are field.</p>'
        )
        cols = _columns(str(path))
        want = ["cluster_id", "pmra", "pmdec", "parallax", "phot_g_mean_mag", "bp_rp", "g", "r"]
        rows = done[sid].get("rows") or 200_000
        sample = pd.concat(
            _partition_results(str(path), want, _ClusterSample(want, min(1.0, 40_000 / max(rows, 1))))
        )
        members, field = sample[sample.cluster_id >= 0], sample[sample.cluster_id < 0]
        mag, colour = (
            ("phot_g_mean_mag", "bp_rp") if {"phot_g_mean_mag", "bp_rp"} <= set(cols) else ("r", None)
        )
        fig, ax = plt.subplots(1, 2, figsize=(11, 4.8))
        if {"pmra", "pmdec"} <= set(sample.columns):
            ax[0].scatter(field.pmra, field.pmdec, s=1, c="0.75", label="field (sample)", rasterized=True)
            for cid, grp in members.groupby("cluster_id"):
                ax[0].scatter(grp.pmra, grp.pmdec, s=4, label=f"cluster {cid} ({len(grp)})")
            lim = np.nanpercentile(np.abs(np.r_[field.pmra, field.pmdec]), 98) if len(field) else 20
            lim = max(lim, np.nanmax(np.abs(np.r_[members.pmra, members.pmdec])) * 1.1 if len(members) else 0)
            ax[0].set(
                xlim=(-lim, lim),
                ylim=(-lim, lim),
                xlabel="pmra (mas/yr)",
                ylabel="pmdec (mas/yr)",
                title="proper motions",
            )
            ax[0].legend(fontsize=7, markerscale=3, loc="lower left")
        if colour and colour in sample.columns:
            ax[1].scatter(field[colour], field[mag], s=1, c="0.75", rasterized=True)
            for cid, grp in members.groupby("cluster_id"):
                ax[1].scatter(grp[colour], grp[mag], s=4)
            ax[1].invert_yaxis()
            ax[1].set(
                xlabel=colour.replace("bp_rp", "BP - RP"),
                ylabel=mag.replace("phot_g_mean_mag", "G"),
                title="colour-magnitude diagram",
            )
        fig.tight_layout()
        parts.append(png_html(fig))
        table = [
            {
                "cluster": c.get("cluster_id"),
                "members": c.get("members"),
                **{k: c[k] for k in c if k not in ("cluster_id", "members")},
            }
            for c in clusters[:12]
        ]
        if table:
            keys = list(dict.fromkeys(k for r in table for k in r if not isinstance(r[k], (list, dict))))
            parts.append(table_html(table, keys))
    return "".join(parts)


# -- anomalies -----------------------------------------------------------------------------------


class _AnomalySample:
    EDGES = np.linspace(0.3, 0.85, 111)  # Isolation Forest scores lie in (0, 1); ~0.5 is ordinary

    def __init__(self, columns: list[str], keep: int):
        self.columns, self.keep = columns, keep

    def __call__(self, df: pd.DataFrame) -> dict:
        score = np.clip(df["anomaly_score"].to_numpy(float), self.EDGES[0], self.EDGES[-1])
        return {
            "hist": np.histogram(score[np.isfinite(score)], bins=self.EDGES)[0],
            "top": df.nlargest(self.keep, "anomaly_score")[[c for c in self.columns if c in df.columns]],
            "sample": df.sample(min(len(df), 2000), random_state=0)[
                [c for c in self.columns if c in df.columns]
            ],
        }


def _anomaly_section(spec, stages, done) -> str:
    import matplotlib.pyplot as plt

    ids = [
        a
        for a in done
        if stages[a].kind == "predict"
        and stages.get(stages[a].params.get("model")) is not None
        and stages[stages[a].params["model"]].params.get("task") == "anomaly"
    ]
    if not ids:
        return ""
    parts = ["<h2 id='anomalies'>Anomalies</h2><p class='note'>Isolation Forest scores: higher is odder.</p>"]
    for sid in ids:
        path = done[sid]["path"]
        cols = _columns(path)
        ident = next((c for c in ("objid", "source_id", "id") if c in cols), None)
        want = [
            c
            for c in [
                ident,
                "ra",
                "dec",
                "anomaly_score",
                "u",
                "g",
                "r",
                "i",
                "z",
                "class_pred",
                "true_class",
            ]
            if c
        ]
        got = _partition_results(path, want, _AnomalySample(want, 20))
        hist = sum(g["hist"] for g in got)
        top = pd.concat([g["top"] for g in got]).nlargest(15, "anomaly_score")
        sample = pd.concat([g["sample"] for g in got])
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        ax[0].stairs(hist, _AnomalySample.EDGES, fill=True)
        ax[0].set(
            xlabel="anomaly_score",
            ylabel="rows",
            yscale="log",
            title=f"{sid}: scores of {int(hist.sum()):,} rows",
        )
        if {"u", "g", "r"} <= set(sample.columns):
            sc = ax[1].scatter(
                sample.g - sample.r, sample.u - sample.g, c=sample.anomaly_score, s=2, cmap="plasma"
            )
            ax[1].scatter(
                top.g - top.r,
                top.u - top.g,
                s=40,
                facecolors="none",
                edgecolors="k",
                label="15 highest scores",
            )
            fig.colorbar(sc, ax=ax[1], label="anomaly_score")
            gr, ug = np.r_[sample.g - sample.r, top.g - top.r], np.r_[sample.u - sample.g, top.u - top.g]
            ax[1].set(
                xlabel="g - r",
                ylabel="u - g",
                title="colours (sample)",
                xlim=(min(-0.8, np.nanmin(gr) - 0.1), max(2.2, np.nanmax(gr) + 0.1)),
                ylim=(min(-1.0, np.nanmin(ug) - 0.1), max(4.0, np.nanmax(ug) + 0.1)),
            )
            ax[1].legend(fontsize=8)
        fig.tight_layout()
        parts.append(png_html(fig))
        parts.append(table_html(top.to_dict("records"), list(top.columns)))
    return "".join(parts)
