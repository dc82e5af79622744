"""The rotated-view ensemble: the features plus ``members`` rotations of them (standardised, then
the first on their principal axes and the others on random orthogonal axes), either stacked side
by side in one booster (``views["stacked"]``, the photo-z default: one early-stopped booster picks
among all views, at a tenth of the trees) or one booster per rotation, averaged. Fitting the
views, the matrix each booster sees, training the boosters on the cluster, their combined
predictions, and the features' importances over all of them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from survey_engine.ml.dask_xgboost import dask_train


def fit_views(frame, feats: list[str], members: int, seed: int, stacked: bool = False) -> dict | None:
    """Standardisation (training mean and scale) and one rotation per member: member 0 the
    principal axes of the standardised training features, the others random orthogonal matrices
    drawn from ``seed``. Moments from the rows with every feature present, merged over partitions.
    ``stacked``: one booster sees them all. None for a single member, or too few complete rows
    (plain features)."""
    import dask

    if members <= 1:
        return None
    parts = dask.compute(*[dask.delayed(_moments)(p, feats) for p in frame.to_delayed()])
    n = sum(p[0] for p in parts)
    if n < len(feats) + 2:  # too few rows with every feature present to fit axes: plain features
        return None
    mean = sum(p[1] for p in parts) / n
    cov = (sum(p[2] for p in parts) - n * np.outer(mean, mean)) / (n - 1)
    std = np.sqrt(np.clip(np.diag(cov), 0, None))
    scale = np.where(std > 0, std, 1.0)
    c = cov / np.outer(scale, scale)
    _, vecs = np.linalg.eigh((c + c.T) / 2)
    rotations = [vecs[:, ::-1]]
    rng = np.random.default_rng(seed)
    for _ in range(1, members):
        q, r = np.linalg.qr(rng.normal(size=(len(feats), len(feats))))
        rotations.append(q * np.sign(np.diag(r)))  # a uniformly random orthogonal matrix
    views = {"mean": mean.tolist(), "scale": scale.tolist(), "rotations": [m.tolist() for m in rotations]}
    return {**views, "stacked": True} if stacked else views


def _moments(part: pd.DataFrame, feats: list[str]) -> tuple[int, np.ndarray, np.ndarray]:
    """Rows with every feature finite: their count, sum and sum of outer products (mergeable)."""
    X = part[feats].to_numpy(dtype=np.float64, na_value=np.nan)
    X = X[np.isfinite(X).all(axis=1)]
    return len(X), X.sum(axis=0), X.T @ X


def member_count(views: dict | None) -> int:
    """Boosters in the ensemble: one per rotation, or one for stacked views or plain features."""
    return len(views["rotations"]) if views and not views.get("stacked") else 1


def member_rotations(views: dict | None, m: int) -> list[int]:
    """Which rotations booster ``m`` sees (after the plain features)."""
    if not views:
        return []
    return list(range(len(views["rotations"]))) if views.get("stacked") else [m]


def member_name(base: str, m: int) -> str:
    return base if m == 0 else f"{base}_{m}"


def member_matrix(X: np.ndarray, views: dict | None, m: int) -> np.ndarray:
    """What booster ``m`` sees: the features, then their rotation(s) (NaN where a feature is NaN),
    float32 in C order as ``inplace_predict`` reads it without a copy."""
    X = np.asarray(X, dtype=np.float32)
    if not views:
        return X
    rotation = np.hstack(
        [np.asarray(views["rotations"][r], dtype=np.float64) for r in member_rotations(views, m)]
    )
    out = np.empty((len(X), X.shape[1] + rotation.shape[1]), dtype=np.float32)
    out[:, : X.shape[1]] = X
    z = (X - np.asarray(views["mean"])) / np.asarray(views["scale"])  # float64: the rotations as trained
    out[:, X.shape[1] :] = z @ rotation
    return out


def member_frame(frame, feats: list[str], views: dict | None, m: int):
    """The dask frame member ``m`` trains on (columns: features, rotated features, ``_y``)."""
    if not views:
        return frame, list(feats)
    cols = list(feats) + [f"_view{r}_{j}" for r in member_rotations(views, m) for j in range(len(feats))]

    def one(part: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(
            member_matrix(part[feats].to_numpy(dtype=np.float32, na_value=np.nan), views, m),
            columns=cols,
            index=part.index,
        )
        out["_y"] = part["_y"].to_numpy()
        return out

    meta = pd.DataFrame({c: pd.Series(dtype=np.float32) for c in cols} | {"_y": pd.Series(dtype=np.float64)})
    return frame.map_partitions(one, meta=meta), cols


def train_members(
    client,
    frame,
    feats: list[str],
    views: dict | None,
    params: dict,
    rounds: int,
    base: str,
    weight=None,
    topic: str | None = None,
    stop_on=None,
    stopping_rounds: int = 0,
    stop_tolerance: float = 0.0,
) -> dict:
    """The ensemble's boosters; with ``stop_on`` (prepared rows), each stops early on them (cut back
    to the fewest rounds within ``stop_tolerance`` of the best loss: ``dask_xgboost.fewest_rounds``)."""
    boosters = {}
    for m in range(member_count(views)):
        view_frame, cols = member_frame(frame, feats, views, m)
        stop_frame = None if stop_on is None else member_frame(stop_on, feats, views, m)[0]
        boosters[member_name(base, m)] = dask_train(
            client,
            view_frame,
            cols,
            {**params, "seed": params["seed"] + m},
            rounds,
            weight,
            topic,
            stop_frame,
            stopping_rounds,
            stop_tolerance,
        )
    return boosters


def members_predict(models: dict, base: str, X: np.ndarray, views: dict | None) -> list[np.ndarray]:
    return [
        np.asarray(models[member_name(base, m)].inplace_predict(member_matrix(X, views, m)))
        for m in range(member_count(views))
    ]


def photoz_raw(models: dict, X: np.ndarray, views: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boosters' log(1 + z) median (the members' mean) and 16% / 84% quantiles."""
    m = np.mean(members_predict(models, "median", X, views), axis=0, dtype=np.float64)
    q = np.asarray(models["quantiles"].inplace_predict(X), dtype=np.float64).reshape(len(X), -1)
    return m, q[:, 0], q[:, -1]


def ensemble_proba(models: dict, X: np.ndarray, views: dict | None, temperature: float) -> np.ndarray:
    """Class probabilities: the members' mean, then the temperature."""
    p = np.mean([m.reshape(len(X), -1) for m in members_predict(models, "classifier", X, views)], axis=0)
    if temperature != 1.0:
        z = np.log(np.clip(p, 1e-12, 1)) / temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
    return p


def importances(models: dict, feats: list[str], views: dict | None = None) -> dict:
    """Share of the total gain per feature, over all members. A rotated feature's gain goes back
    to the features it mixes in proportion to their squared loadings (a rotation's columns have
    unit length, so each rotated feature hands out exactly its gain)."""
    base = "median" if "median" in models else "classifier"
    named = dict.fromkeys(feats, 0.0)
    k = len(feats)
    for m in range(member_count(views)):
        score = models[member_name(base, m)].get_score(importance_type="gain")
        for i, f in enumerate(feats):  # boosters trained from DataFrames keep feature names; else f0, f1, ...
            named[f] += float(score.get(f, score.get(f"f{i}", 0.0)))
        for place, r in enumerate(member_rotations(views, m), start=1):
            rotation = np.asarray(views["rotations"][r])
            for j in range(k):
                gain = float(score.get(f"_view{r}_{j}", score.get(f"f{place * k + j}", 0.0)))
                for i, f in enumerate(feats):
                    named[f] += gain * rotation[i, j] ** 2
    total = sum(named.values()) or 1.0
    return {f: v / total for f, v in sorted(named.items(), key=lambda kv: -kv[1])}
