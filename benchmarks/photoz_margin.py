"""Photo-z margin study (issue 20's 8% goal): what a robust local regression in colour space adds
to the package's photo-z model, in one process, against the textbook XGBoost.

    python benchmarks/photoz_margin.py sdss --seeds 0 1 [--weights 0.5] [--copies 8] [--jitter 0.15]
    python benchmarks/photoz_margin.py boss --seeds 0

A random held-out fifth per seed; the rest split 85% / 15% into fitting and calibration rows as
``train`` does. Compared, as sigma_NMAD and its margin below the textbook XGBoost (600 trees,
depth 6, eta 0.05, subsample / colsample 0.8, squared error on z, every training row):

- ``members``: the package's four photo-z members in one process (``MEMBER_PHOTOZ_PARAMS``,
  absolute error on log(1 + z), each on the features plus one rotation: the principal axes, then
  random orthogonal ones), their mean;
- ``student``: today's default, one ``DISTILLED_PARAMS`` booster on the features and all four
  rotations, trained on the members' mean over the fitting rows, early-stopped on the calibration
  rows' truth;
- ``local``: a robust local regression (Beck et al. 2016, MNRAS 460, 1371, with quadratic terms and
  Huber weights): for each row, the ``k`` nearest fitting rows in standardised feature space, a
  weighted least-squares fit of log(1 + z) on their offsets and squared offsets, reweighted five
  times; its value at the row;
- ``blend``: ``w`` x members + (1 - w) x local, in log(1 + z);
- ``student+copies``: the student trained on the blend over the fitting rows and ``copies`` jittered
  copies of them (each feature plus ``jitter`` x its standard deviation x N(0, 1)), so that it
  learns a smooth teacher from more points than were labelled (prediction cost unchanged); with
  ``--weights 1.0`` the members alone teach it and no local regression of the copies is computed.

Writes benchmarks/results/photoz_margin.json. Findings are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "photoz"


# (path, features, target, rows kept): the features of tests/ml/test_photoz.py
SOURCES = {
    "sdss": (
        DATA / "sdss_galaxy_colors_50k.parquet",
        ["u-g", "g-r", "r-i", "i-z", "r"],
        "redshift",
        "spec_class == 'GALAXY'",
    ),
    "boss": (
        DATA / "annz_boss_dr10" / "train",
        ["MAG_U-MAG_G", "MAG_G-MAG_R", "MAG_R-MAG_I", "MAG_I-MAG_Z", "MAG_R", "MAG_I"]
        + ["MAGERR_G", "MAGERR_R", "MAGERR_I", "MAGERR_Z"],
        "Z",
        None,
    ),
}


def load(which: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, spectroscopic redshift and feature names, read and computed as ``train`` does
    (ml/data.open_table, features/spec.FeatureSpec)."""
    from survey_engine.features.spec import FeatureSpec
    from survey_engine.ml.data import open_table

    path, features, target, where = SOURCES[which]
    frame = open_table(path).frame.compute()
    frame = frame.query(where) if where else frame
    X = FeatureSpec(features).compute(frame).to_numpy(dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError(f"{path}: a feature is missing in some rows; this study needs complete rows")
    return X, frame[target].to_numpy(dtype=np.float64), features


def sigma_nmad(z_phot: np.ndarray, z_spec: np.ndarray) -> float:
    from survey_engine.ml.metrics import photoz_metrics

    return photoz_metrics(z_phot, z_spec)["sigma_nmad"]


def local_regression(
    X_ref: np.ndarray,
    y_ref: np.ndarray,
    X: np.ndarray,
    k: int = 256,
    reweight: int = 5,
    huber: float = 0.005,
    ridge: float = 1e-3,
    leave_self_out: bool = False,
) -> np.ndarray:
    """Robust local quadratic regression of ``y_ref`` at each row of ``X`` on its ``k`` nearest
    reference rows (standardised by the reference rows). ``leave_self_out``: ``X`` is ``X_ref`` and a
    row is not its own neighbour (a target for training rows that did not see their own truth)."""
    from scipy.spatial import cKDTree

    mean, scale = X_ref.mean(0), X_ref.std(0)
    A, Q = (X_ref - mean) / scale, (X - mean) / scale
    _, idx = cKDTree(A).query(Q, k=k + int(leave_self_out), workers=-1)
    idx = idx[:, 1:] if leave_self_out else idx
    out = np.empty(len(X))
    for s in range(0, len(X), 4000):
        near = idx[s : s + 4000]
        offset = A[near] - Q[s : s + 4000, None, :]
        D = np.concatenate([np.ones(offset.shape[:2] + (1,)), offset, offset**2], axis=2)
        y, w = y_ref[near], np.ones(near.shape)
        penalty = ridge * k * np.eye(D.shape[2])
        penalty[0, 0] = 0  # the intercept, the value wanted, is not shrunk
        for _ in range(reweight + 1):
            G = np.einsum("nki,nk,nkj->nij", D, w, D) + penalty
            beta = np.linalg.solve(G, np.einsum("nki,nk,nk->ni", D, w, y)[..., None])[..., 0]
            r = np.abs(y - np.einsum("nki,ni->nk", D, beta))
            w = np.where(r < huber, 1.0, huber / np.maximum(r, 1e-12))
        out[s : s + 4000] = beta[:, 0]
    return out


def regressor(params: dict, seed: int, **extra):
    """An XGBoost regressor with the package's parameter names (ml/options.py), all cores."""
    import xgboost as xgb

    return xgb.XGBRegressor(
        n_estimators=params["rounds"],
        max_depth=params["max_depth"],
        learning_rate=params["eta"],
        subsample=params["subsample"],
        colsample_bytree=params["colsample_bytree"],
        min_child_weight=params.get("min_child_weight", 1),
        n_jobs=-1,
        random_state=seed,
        **extra,
    )


def one_split(
    X: np.ndarray,
    z: np.ndarray,
    features: list[str],
    seed: int,
    weights: list[float],
    copies: int,
    jitter: float,
) -> dict:
    import dask.dataframe as dd
    import xgboost as xgb

    from survey_engine.ml.baselines import BASELINE_XGBOOST  # the textbook XGBoost of --baselines
    from survey_engine.ml.ensemble import fit_views, member_matrix
    from survey_engine.ml.options import DISTILLED_PARAMS, EARLY_STOPPING_ROUNDS, MEMBER_PHOTOZ_PARAMS

    y = np.log1p(z)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(z))
    test, train = order[: len(z) // 5], order[len(z) // 5 :]
    cal, fit = train[: int(0.15 * len(train))], train[int(0.15 * len(train)) :]
    textbook = xgb.XGBRegressor(**BASELINE_XGBOOST, n_jobs=-1, random_state=seed).fit(X[train], z[train])
    base = sigma_nmad(textbook.predict(X[test]), z[test])

    def margin(log_z: np.ndarray) -> float:
        return round(1 - sigma_nmad(np.expm1(log_z), z[test]) / base, 4)

    # the package's views (ml/ensemble.py): each member sees the features and one rotation of
    # them, the student all four rotations side by side
    views = fit_views(
        dd.from_pandas(pd.DataFrame(X[fit], columns=features), npartitions=1), features, 4, seed
    )
    student_views = {**views, "stacked": True}
    members = [
        regressor(MEMBER_PHOTOZ_PARAMS, seed, objective="reg:absoluteerror").fit(
            member_matrix(X[fit], views, m), y[fit]
        )
        for m in range(4)
    ]

    def members_mean(Xq: np.ndarray) -> np.ndarray:
        return np.mean([b.predict(member_matrix(Xq, views, m)) for m, b in enumerate(members)], axis=0)

    def student(X_teach: np.ndarray, teacher: np.ndarray) -> tuple[float, int]:
        s = regressor(DISTILLED_PARAMS, seed, eval_metric="mae", early_stopping_rounds=EARLY_STOPPING_ROUNDS)
        cal_rows = (member_matrix(X[cal], student_views, 0), y[cal])
        s.fit(member_matrix(X_teach, student_views, 0), teacher, eval_set=[cal_rows], verbose=False)
        return margin(s.predict(member_matrix(X[test], student_views, 0))), int(s.best_iteration) + 1

    scale = X[fit].std(0)
    jittered = [X[fit] + rng.normal(size=X[fit].shape) * scale * jitter for _ in range(copies)]
    X_copies = np.vstack([X[fit], *jittered])
    # the local regression of the copies is needed only for a teacher that blends it in; the test
    # rows and the copies are one query (one standardisation, one tree)
    blended = any(w < 1 for w in weights)
    local_other = local_regression(X[fit], y[fit], np.vstack([X[test], *(jittered if blended else [])]))
    local_test = local_other[: len(test)]
    if blended:
        local_fit = local_regression(X[fit], y[fit], X[fit], leave_self_out=True)
        local_copies = np.r_[local_fit, local_other[len(test) :]]
    members_test, members_copies = members_mean(X[test]), members_mean(X_copies)
    result = {
        "seed": seed,
        "rows": {"fit": len(fit), "calibration": len(cal), "test": len(test)},
        "textbook_sigma_nmad": round(base, 5),
        "margin": {
            "members": margin(members_test),
            "student": student(X[fit], members_copies[: len(fit)]),
            "local": margin(local_test),
        },
    }
    for w in weights:
        result["margin"][f"blend w={w}"] = margin(w * members_test + (1 - w) * local_test)
        teacher = members_copies if w == 1 else w * members_copies + (1 - w) * local_copies
        result["margin"][f"student+copies w={w}"] = student(X_copies, teacher)
    return result


def save_results(results: list[dict], out: str, name: str) -> None:
    """``results`` as ``out/name`` (JSON, one entry per split), for this study and photoz_through_train."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / name).write_text(json.dumps(results, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", choices=("sdss", "boss"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5], help="members' share")
    parser.add_argument("--copies", type=int, default=8, help="jittered copies of the fitting rows")
    parser.add_argument("--jitter", type=float, default=0.15, help="in each feature's standard deviations")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    X, z, features = load(args.data)  # once for every seed
    results = []
    for seed in args.seeds:
        start = time.perf_counter()
        results.append(
            {"data": args.data, **one_split(X, z, features, seed, args.weights, args.copies, args.jitter)}
        )
        results[-1]["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(results[-1]), flush=True)
    save_results(results, args.out, "photoz_margin.json")


if __name__ == "__main__":
    main()
