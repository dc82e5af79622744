"""Distributed training is reproducible: xgboost.dask trains on a fixed partition -> worker
placement (``placed``), so the same seed gives the same model on any cluster of the same size."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from survey_engine.ml.dask_xgboost import dask_train, placed


def _frame(n_parts: int = 8, rows: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n_parts * rows, 4))
    y = np.abs(x[:, 0] + 0.5 * x[:, 1] ** 2 - x[:, 2] * x[:, 3]) + rng.exponential(0.3, n_parts * rows)
    # partitions that differ from each other (as sky tiles do): sorted by the first feature
    order = np.argsort(x[:, 0])
    return pd.DataFrame(
        {"a": x[order, 0], "b": x[order, 1], "c": x[order, 2], "d": x[order, 3], "_y": y[order]}
    )


def _persisted(client, frame: pd.DataFrame, layout) -> dd.DataFrame:
    """The frame as a Dask dataframe of 8 partitions, partition i computed on worker layout(i)."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    parts = dd.from_pandas(frame, npartitions=8, sort=False).to_delayed()
    futures = [
        client.compute(p, workers=[workers[layout(i)]], allow_other_workers=False)
        for i, p in enumerate(parts)
    ]
    return dd.from_delayed(futures, meta=frame.iloc[:0], verify_meta=False)


def test_placed_puts_partition_i_on_worker_i_mod_n(client):
    info = client.scheduler_info(n_workers=-1)["workers"]
    by_name = sorted(info, key=lambda a: (str(info[a].get("name", a)), a))
    frame = _persisted(client, _frame(), lambda i: 0)  # everything on one worker first
    out = placed(client, frame)
    keys = [d.key for d in out.to_delayed()]
    futures = client.compute(out.to_delayed())
    client.gather(futures)
    who = client.who_has(futures)
    assert [next(iter(who[f.key])) for f in futures] == [by_name[i % len(by_name)] for i in range(len(keys))]
    pd.testing.assert_frame_equal(out.compute(), _frame(), check_index_type=False)


def test_xgboost_trains_on_the_fixed_placement(client, monkeypatch):
    """What each xgboost worker trains on is partition i on worker i mod n (name order), whatever
    the layout before, and xgboost's own packing of the parts keeps it. Left to the scheduler,
    partitions 0, 2, 4, ... went to worker "0" on some fresh clusters and to worker "1" on others
    (so this check alone catches a lost placement only on about half of the clusters it runs on);
    the BOSS photo-z then gave sigma_NMAD 0.0189 or 0.0200 for the same seed. With the placement
    fixed, four fresh clusters gave 0.0189 four times. Recorded where xgboost trains: the matrix
    it is given (``pinned``: its packing could still move a part, see the test below)."""
    from xgboost import dask as dxgb

    seen = {}
    train = dxgb.train

    def recording(client, params, dtrain, *args, **kwargs):
        seen.update(
            {
                w: sorted(dtrain.partition_order[p.key] for p in parts)
                for w, parts in dtrain.worker_map.items()
            }
        )
        return train(client, params, dtrain, *args, **kwargs)

    monkeypatch.setattr(dxgb, "train", recording)
    info = client.scheduler_info(n_workers=-1)["workers"]
    by_name = sorted(info, key=lambda a: (str(info[a].get("name", a)), a))
    params = {
        "objective": "reg:absoluteerror",
        "tree_method": "hist",
        "max_depth": 3,
        "seed": 7,
        "nthread": 1,
        "verbosity": 0,
    }
    for layout in (
        lambda i: i % 2,
        lambda i: 1 - i % 2,
        lambda i: 0,
    ):  # wherever the partitions were computed first
        seen.clear()
        dask_train(client, _persisted(client, _frame(), layout), ["a", "b", "c", "d"], params, 2)
        assert seen == {by_name[0]: [0, 2, 4, 6], by_name[1]: [1, 3, 5, 7]}


def test_pinned_trains_partition_i_on_worker_i_mod_n_wherever_the_packed_parts_are(client):
    """xgboost.dask trains each worker on the packed parts it holds; a packing task moved to the
    other worker (seen on BOSS: partitions [0, 1, 2, 3] and [4]) changed the model for the same
    seed. ``pinned`` assigns them by partition number, and training on it works."""
    from xgboost import dask as dxgb

    from survey_engine.ml.dask_xgboost import pinned

    info = client.scheduler_info(n_workers=-1)["workers"]
    by_name = sorted(info, key=lambda a: (str(info[a].get("name", a)), a))
    frame = _persisted(client, _frame(), lambda i: 0)  # everything held by one worker
    dmatrix = dxgb.DaskDMatrix(client, frame[["a", "b", "c", "d"]], frame["_y"])
    # where xgboost's packing put the parts varies from run to run (all on the one worker, or spread)
    pinned(client, dmatrix)
    got = {w: [dmatrix.partition_order[p.key] for p in parts] for w, parts in dmatrix.worker_map.items()}
    assert got == {by_name[0]: [0, 2, 4, 6], by_name[1]: [1, 3, 5, 7]}
    params = {"tree_method": "hist", "max_depth": 2, "nthread": 1, "verbosity": 0}
    booster = dxgb.train(client, params, dmatrix, num_boost_round=3)["booster"]
    assert booster.num_boosted_rounds() == 3


# -- the rotated-view ensemble -------------------------------------------------------------------


def test_views_are_fitted_on_training_rows_and_rotate_orthogonally(client):
    from survey_engine.ml.supervised import fit_views, member_matrix

    frame = _frame(2, 2000)
    views = fit_views(dd.from_pandas(frame, npartitions=4), ["a", "b", "c", "d"], 3, seed=1)
    assert len(views["rotations"]) == 3
    X = frame[["a", "b", "c", "d"]].to_numpy(np.float64, copy=True)
    assert np.allclose(views["mean"], X.mean(axis=0)) and np.allclose(views["scale"], X.std(axis=0, ddof=1))
    z = (X - X.mean(axis=0)) / X.std(axis=0, ddof=1)
    for r in map(np.asarray, views["rotations"]):
        assert np.allclose(r @ r.T, np.eye(4), atol=1e-9)
    # member 0 sees the principal axes: its rotated features are uncorrelated, variances descending
    m0 = member_matrix(X, views, 0)
    assert m0.shape == (len(X), 8) and np.array_equal(m0[:, :4], X.astype(np.float32))
    cov = np.cov(m0[:, 4:].astype(np.float64).T)
    assert np.allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-3) and (np.diff(np.diag(cov)) <= 1e-9).all()
    assert np.allclose(m0[:, 4:], z @ np.asarray(views["rotations"][0]), atol=1e-4)
    # a NaN feature (missing photometry) leaves the row's rotated features missing for XGBoost, not 0
    X[0, 1] = np.nan
    assert (
        np.isnan(member_matrix(X, views, 2)[0, 4:]).all() and np.isfinite(member_matrix(X, views, 2)[1]).all()
    )
    assert (
        fit_views(dd.from_pandas(frame, npartitions=2), ["a", "b"], 1, seed=1) is None
    )  # one member: plain features
    sparse = frame.assign(b=np.where(np.arange(len(frame)) < 4, frame.b, np.nan))  # 4 rows with every feature
    assert (
        fit_views(dd.from_pandas(sparse, npartitions=2), ["a", "b", "c", "d"], 3, seed=1) is None
    )  # too few to fit axes
    assert member_matrix(X, None, 0).shape == (len(X), 4)


@pytest.mark.slow
def test_ensemble_and_single_booster_models_train_save_and_predict(client, tmp_path):
    """ensemble="members" with members=4 saves four boosters and the views and predicts their
    mean; "stacked" and "distilled" save one booster that sees the features and all four
    rotations; members=1 is one booster on the plain features; a model folder written before the
    ensemble (no "views") still predicts."""
    import json

    from survey_engine.ml.artifact import MODEL_FILE, load_model
    from survey_engine.ml.supervised import TrainOptions, predict_frame, train

    rng = np.random.default_rng(3)
    n = 6000
    mags = 18 + rng.normal(0, 1, (n, 3))
    z = np.clip(
        0.3 * (mags[:, 0] - mags[:, 1]) + 0.1 * (mags[:, 1] - mags[:, 2]) + 0.4 + rng.normal(0, 0.02, n),
        0.01,
        None,
    )
    path = tmp_path / "t.parquet"
    pd.DataFrame({"g": mags[:, 0], "r": mags[:, 1], "i": mags[:, 2], "z_spec": z}).to_parquet(path)
    params = {"rounds": 40}
    r4 = train(
        str(path),
        TrainOptions("photoz", ["g-r", "r-i", "r"], target="z_spec", params=params, ensemble="members"),
        str(tmp_path / "m4"),
        client=client,
    )
    rs = train(
        str(path),
        TrainOptions("photoz", ["g-r", "r-i", "r"], target="z_spec", params=params, ensemble="stacked"),
        str(tmp_path / "ms"),
        client=client,
    )
    rd = train(
        str(path),
        TrainOptions("photoz", ["g-r", "r-i", "r"], target="z_spec", params=params, ensemble="distilled"),
        str(tmp_path / "md"),
        client=client,
    )
    r1 = train(
        str(path),
        TrainOptions("photoz", ["g-r", "r-i", "r"], target="z_spec", params=params, members=1),
        str(tmp_path / "m1"),
        client=client,
    )
    assert r4["test"]["n"] == r1["test"]["n"] == rs["test"]["n"] == rd["test"]["n"]
    assert max(r["test"]["sigma_nmad"] for r in (r4, r1, rs, rd)) < 0.1
    # importances: the rotated features' gain handed back to the features they mix; z depends
    # mostly on g-r, whichever axes the trees split on
    for r in (r4, r1, rs, rd):
        imp = r["importance"]
        assert set(imp) == {"g-r", "r-i", "r"} and sum(imp.values()) == pytest.approx(1.0)
        assert imp["g-r"] > 0.5, imp
    meta4, models4 = load_model(tmp_path / "m4")
    meta1, models1 = load_model(tmp_path / "m1")
    assert (
        set(models4) == {"median", "median_1", "median_2", "median_3", "quantiles"}
        and len(meta4["views"]["rotations"]) == 4
    )
    assert set(models1) == {"median", "quantiles"} and meta1["views"] is None
    meta_s, models_s = load_model(tmp_path / "ms")
    for one in ("ms", "md"):
        meta_one, models_one = load_model(tmp_path / one)
        assert (
            set(models_one) == {"median", "quantiles"}
            and meta_one["views"]["stacked"]
            and len(meta_one["views"]["rotations"]) == 4
        )
        assert models_one["median"].num_features() == 3 * 5  # the features and their four rotations
    df = pd.read_parquet(path).head(500)
    from survey_engine.ml.supervised import member_matrix

    X = df.assign(**{"g-r": df.g - df.r, "r-i": df.r - df.i})[["g-r", "r-i", "r"]].to_numpy(np.float32)
    each = [
        models4[k].inplace_predict(member_matrix(X, meta4["views"], m))
        for m, k in enumerate(["median", "median_1", "median_2", "median_3"])
    ]
    got = predict_frame(df, meta4, models4)
    assert np.allclose(got.z_phot, np.expm1(np.mean(each, axis=0, dtype=np.float64)), rtol=1e-6)
    stacked = models_s["median"].inplace_predict(member_matrix(X, meta_s["views"], 0))
    assert np.allclose(
        predict_frame(df, meta_s, models_s).z_phot, np.expm1(stacked.astype(np.float64)), rtol=1e-6
    )
    # an artifact from before the ensemble has no "views" key: one booster on the plain features
    old = json.loads((tmp_path / "m1" / MODEL_FILE).read_text())
    old.pop("views")
    (tmp_path / "m1" / MODEL_FILE).write_text(json.dumps(old))
    meta_old, models_old = load_model(tmp_path / "m1")
    assert np.allclose(
        predict_frame(df, meta_old, models_old).z_phot, predict_frame(df, meta1, models1).z_phot
    )
    assert np.allclose(
        predict_frame(df, meta_old, models_old).z_phot,
        np.expm1(models1["median"].inplace_predict(X)),
        rtol=1e-6,
    )
    # a frame that holds prediction columns already (a catalog predicted before) gets them replaced
    once = predict_frame(df, meta1, models1)
    again = predict_frame(once, meta1, models1)
    assert list(once.columns[: df.shape[1]]) == list(df.columns) and once.columns.is_unique
    pd.testing.assert_frame_equal(again, once)


@pytest.mark.slow
def test_classifier_stacked_by_default_stops_early_and_members_stay_selectable(client, tmp_path):
    """The default classifier is one booster on the features and their four rotations, stopped
    early on the inner held-out fold and then trained on every row for the rounds it kept: fewer
    than the cap, and as accurate as the four members; ``ensemble="members"`` still saves four."""
    from survey_engine.ml.artifact import load_model
    from survey_engine.ml.ensemble import ensemble_proba, member_matrix
    from survey_engine.ml.options import CLASSIFY_ENSEMBLE
    from survey_engine.ml.supervised import TrainingError, TrainOptions, predict_frame, train

    rng = np.random.default_rng(11)
    n = 4000
    X = rng.normal(size=(n, 3))
    score = X[:, 0] + X[:, 1] - 0.5 * X[:, 2] + rng.normal(0, 0.6, n)  # a diagonal boundary
    label = np.where(score < -0.7, "STAR", np.where(score < 0.9, "GALAXY", "QSO"))
    path = tmp_path / "c.parquet"
    pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "cls": label}).to_parquet(path)
    cap = {"rounds": 400, "eta": 0.3}
    stacked = train(
        str(path),
        TrainOptions("classify", ["a", "b", "c"], label="cls", params=cap),
        str(tmp_path / "s"),
        client=client,
    )
    members = train(
        str(path),
        TrainOptions(
            "classify", ["a", "b", "c"], label="cls", params={"rounds": 40, "eta": 0.3}, ensemble="members"
        ),
        str(tmp_path / "m"),
        client=client,
    )
    assert CLASSIFY_ENSEMBLE == "stacked"
    meta, models = load_model(tmp_path / "s")
    assert set(models) == {"classifier"} and meta["views"]["stacked"] and len(meta["views"]["rotations"]) == 4
    assert models["classifier"].num_features() == 3 * 5
    assert models["classifier"].num_boosted_rounds() < cap["rounds"]  # stopped early on held-out rows
    assert stacked["test"]["accuracy"] >= members["test"]["accuracy"] - 0.01 > 0.7
    assert set(load_model(tmp_path / "m")[1]) == {
        "classifier",
        "classifier_1",
        "classifier_2",
        "classifier_3",
    }
    # predict_frame gives the booster's softmax after the saved temperature
    df = pd.read_parquet(path).head(300)
    got = predict_frame(df, meta, models)
    want = ensemble_proba(
        models, df[["a", "b", "c"]].to_numpy(np.float32), meta["views"], meta["temperature"]
    )
    assert np.allclose(got[["prob_GALAXY", "prob_QSO", "prob_STAR"]].to_numpy(), want, atol=1e-6)
    assert member_matrix(df[["a", "b", "c"]].to_numpy(np.float32), meta["views"], 0).shape == (300, 15)
    # one member (the demo's and the jobs' classifiers): plain features and the members' fixed
    # rounds and depth, as before the stacked default
    train(
        str(path),
        TrainOptions("classify", ["a", "b", "c"], label="cls", members=1, params={"rounds": 20}),
        str(tmp_path / "one"),
        client=client,
    )
    one_meta, one = load_model(tmp_path / "one")
    assert one_meta["views"] is None and one["classifier"].num_boosted_rounds() == 20
    deepest = max(
        len(line) - len(line.lstrip("\t"))
        for tree in one["classifier"].get_dump()
        for line in tree.splitlines()
    )
    assert deepest == 4  # a leaf's indentation is its depth: the members' depth 4, not the stacked 6
    with pytest.raises(TrainingError, match="'distilled' is for photoz"):
        TrainOptions("classify", ["a"], label="cls", ensemble="distilled")


def test_members_out_of_range_is_a_clear_error():
    from survey_engine.ml.supervised import TrainingError, TrainOptions

    with pytest.raises(TrainingError, match="--members"):
        TrainOptions("photoz", ["g-r"], target="z", members=0)


def test_stacked_views_are_the_members_views_side_by_side(client):
    """One stacked booster sees exactly what the members see, side by side: the features once,
    then each member's rotated features in member order."""
    from survey_engine.ml.ensemble import fit_views, member_count, member_matrix, member_rotations

    frame = _frame(2, 2000)
    feats = ["a", "b", "c", "d"]
    members = fit_views(dd.from_pandas(frame, npartitions=4), feats, 3, seed=1)
    stacked = fit_views(dd.from_pandas(frame, npartitions=4), feats, 3, seed=1, stacked=True)
    assert (
        member_count(members) == 3
        and member_count(stacked) == 1
        and member_rotations(stacked, 0) == [0, 1, 2]
    )
    X = frame[feats].to_numpy(np.float32)
    side_by_side = np.hstack([X] + [member_matrix(X, members, m)[:, 4:] for m in range(3)])
    assert np.array_equal(member_matrix(X, stacked, 0), side_by_side)
