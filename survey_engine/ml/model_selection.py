"""Choosing and judging hyperparameters: a small grid search scored on an inner held-out fold, and
k-fold cross-validation (with the textbook baselines on the same folds when asked)."""

from __future__ import annotations

import numpy as np

from survey_engine.ml.baselines import run_baselines
from survey_engine.ml.evaluation import evaluate_prepared
from survey_engine.ml.options import TrainingError
from survey_engine.ml.training import fit, fitted_meta

SEARCH_GRID = [{"max_depth": d, "eta": e} for d in (5, 7) for e in (0.05, 0.1)]


def search(
    client, train_rows, spec, classes, opts, device, inputs=None, progress: bool = False
) -> tuple[dict, list]:
    """Small grid over depth and learning rate, scored on an inner held-out fold."""
    inner = train_rows["_fold"] == 1
    fit_rows, val_rows = train_rows[~inner], train_rows[inner]
    log_rows, best, best_score = [], {}, None
    for cand in SEARCH_GRID:
        fitted = fit(
            opts.task,
            client,
            fit_rows,
            spec,
            classes,
            cand,
            device,
            opts.seed,
            opts.members,
            inputs,
            progress,
            f"search {', '.join(f'{k} {v}' for k, v in cand.items())}",
            ensemble=opts.ensemble_layout,
        )
        meta = fitted_meta(opts, spec, classes, fitted)
        m = evaluate_prepared(val_rows, meta, fitted["boosters"])
        score = m["sigma_nmad"] if opts.task == "photoz" else -m["macro_f1"]
        log_rows.append({**cand, "score": score})
        if best_score is None or score < best_score:
            best, best_score = dict(cand), score
    return best, log_rows


def cross_validate(
    client, prepared, spec, classes, opts, params, device, inputs=None, progress: bool = False
) -> dict:
    folds = []
    for f in range(opts.cv):
        tr, te = prepared[prepared["_cvfold"] != f], prepared[prepared["_cvfold"] == f]
        if not int(te.shape[0].compute()):  # a fold without rows: nothing to evaluate, left out of the means
            folds.append({"fold": f, "n": 0})
            continue
        fitted = fit(
            opts.task,
            client,
            tr,
            spec,
            classes,
            params,
            device,
            opts.seed,
            opts.members,
            inputs,
            progress,
            f"cv fold {f + 1}/{opts.cv}",
            ensemble=opts.ensemble_layout,
        )
        meta = fitted_meta(opts, spec, classes, fitted)
        m = evaluate_prepared(te, meta, fitted["boosters"])
        keys = (
            ("sigma_nmad", "bias", "outlier_rate_015", "outlier_rate_lsst")
            if opts.task == "photoz"
            else ("accuracy", "macro_f1", "macro_roc_auc", "log_loss", "ece")
        )
        row = {k: m[k] for k in keys} | {"fold": f, "n": m["n"]}
        if opts.task == "photoz":
            row |= {
                k: m[k] for k in ("interval_coverage", "interval_coverage_95", "pit_ks", "crps") if k in m
            }
            row["by_redshift"] = [
                {
                    k: b.get(k)
                    for k in ("z_lo", "z_hi", "n", "sigma_nmad", "interval_coverage", "interval_coverage_95")
                }
                for b in m["by_redshift"]
            ]
        if opts.baselines:  # the single-process baselines on the same fold: a like-for-like comparison
            row["baselines"] = {
                name: {k: v[k] for k in keys if k in v}
                for name, v in run_baselines(tr, te, opts, list(spec.features), classes).items()
            }
        folds.append(row)
    evaluated = [f for f in folds if f["n"]]
    if not evaluated:
        raise TrainingError(f"none of the {opts.cv} cross-validation folds holds labelled rows")
    summary = {}
    for k in evaluated[0]:
        if k in ("fold", "n", "baselines", "by_redshift"):
            continue
        vals = np.array([f[k] for f in evaluated if k in f], dtype=np.float64)
        summary[k] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else None}
    out = {"folds": folds, "summary": summary}
    if opts.baselines:
        out["baselines"] = {
            name: {k: float(np.mean([f["baselines"][name][k] for f in evaluated])) for k in base}
            for name, base in evaluated[0]["baselines"].items()
        }
    return out
