"""The textbook single-process baselines of ``--baselines`` (XGBoost and a random forest, as a
user would configure them) on the same split and features, and the headline margin over the
stronger of them."""

from __future__ import annotations

import numpy as np

from survey_engine.ml import metrics as M

# The textbook single-process baselines (--baselines), as a user would configure them.
BASELINE_XGBOOST = {
    "n_estimators": 600,
    "max_depth": 6,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
}
BASELINE_FOREST = {"n_estimators": 200, "min_samples_leaf": 2}


def run_baselines(train_rows, test_rows, opts, feats, classes) -> dict:
    """Single-process XGBoost and a scikit-learn random forest on the same split and features, in
    their textbook configurations (BASELINE_XGBOOST: 600 trees, depth 6, eta 0.05, subsample and
    colsample 0.8; BASELINE_FOREST: 200 trees, min_samples_leaf 2), trained on every training row
    (the calibration rows included)."""
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    tr, te = train_rows.compute(), test_rows.compute()
    if te.empty:  # nothing held out to compare on (a warning says so); the headline is left out
        return {name: {"n": 0} for name in ("xgboost_single_process", "random_forest")}
    Xtr, Xte = tr[feats].to_numpy(np.float32), te[feats].to_numpy(np.float32)
    fill = np.nanmedian(Xtr, axis=0)
    Xtr_f, Xte_f = np.where(np.isnan(Xtr), fill, Xtr), np.where(np.isnan(Xte), fill, Xte)
    out = {}
    if opts.task == "photoz":
        ytr, yte = tr["_y"].to_numpy(), te["_y"].to_numpy()
        xg = xgb.XGBRegressor(**BASELINE_XGBOOST, n_jobs=2, random_state=opts.seed).fit(Xtr, ytr)
        rf = RandomForestRegressor(**BASELINE_FOREST, n_jobs=2, random_state=opts.seed).fit(Xtr_f, ytr)
        out["xgboost_single_process"] = M.photoz_metrics(xg.predict(Xte), yte)
        out["random_forest"] = M.photoz_metrics(rf.predict(Xte_f), yte)
    else:
        from sklearn.metrics import accuracy_score, f1_score

        ytr, yte = tr["_y"].to_numpy().astype(int), te["_y"].to_numpy().astype(int)
        xg = xgb.XGBClassifier(**BASELINE_XGBOOST, n_jobs=2, random_state=opts.seed).fit(Xtr, ytr)
        rf = RandomForestClassifier(**BASELINE_FOREST, n_jobs=2, random_state=opts.seed).fit(Xtr_f, ytr)
        for name, pred in (("xgboost_single_process", xg.predict(Xte)), ("random_forest", rf.predict(Xte_f))):
            out[name] = {
                "n": int(len(yte)),
                "accuracy": float(accuracy_score(yte, pred)),
                "macro_f1": float(f1_score(yte, pred, average="macro")),
            }
    return out


def headline(task: str, test: dict, baselines: dict) -> dict:
    """The margin over the stronger textbook baseline on the same split: photo-z, how much lower
    sigma_NMAD is (positive = better); classification, accuracy and macro-F1 differences. Empty
    when nothing was held out."""
    if not test.get("n"):
        return {}
    if task == "photoz":
        name = min(baselines, key=lambda k: baselines[k]["sigma_nmad"])
        best = baselines[name]["sigma_nmad"]
        return {
            "stronger_baseline": name,
            "baseline_sigma_nmad": best,
            "sigma_nmad": test["sigma_nmad"],
            "sigma_nmad_lower_by": 1 - test["sigma_nmad"] / best,
        }
    name = max(baselines, key=lambda k: baselines[k]["accuracy"])
    return {
        "stronger_baseline": name,
        "baseline_accuracy": baselines[name]["accuracy"],
        "accuracy": test["accuracy"],
        "accuracy_gain": test["accuracy"] - baselines[name]["accuracy"],
        "macro_f1_gain": test["macro_f1"] - baselines[name]["macro_f1"],
    }
