"""Cross-validation with a fold that holds no rows: recorded with n = 0 and left out of the means
(before, its metrics {"n": 0} raised KeyError after every other fold had been trained)."""

from __future__ import annotations

import numpy as np
import pytest

from survey_engine.ml.data import open_table
from survey_engine.ml.model_selection import cross_validate
from survey_engine.ml.options import TrainOptions
from survey_engine.ml.preparation import prepare_table
from tests.conftest import shared_path


@pytest.mark.slow
def test_a_fold_without_rows_is_left_out_of_the_means(client):
    opts = TrainOptions(
        "classify", ["u-g", "g-r", "r-i", "i-z"], label="class", cv=5, baselines=True, members=1
    )
    table = open_table(str(shared_path("classification/sdss_dr14_5k_dev.csv")))
    prepared, spec, classes, _ = prepare_table(table, opts, client)
    prepared = prepared.assign(_cvfold=prepared["_cvfold"].where(prepared["_cvfold"] != 3, 2))  # 3 emptied
    out = cross_validate(client, prepared, spec, classes, opts, {"rounds": 40}, "cpu")
    folds = {f["fold"]: f for f in out["folds"]}
    assert sorted(folds) == [0, 1, 2, 3, 4] and folds[3] == {"fold": 3, "n": 0}
    evaluated = [folds[f] for f in (0, 1, 2, 4)]
    assert sum(f["n"] for f in evaluated) == int(prepared.shape[0].compute())
    for key in ("accuracy", "macro_f1"):
        assert out["summary"][key]["mean"] == pytest.approx(np.mean([f[key] for f in evaluated]))
        for name, base in out["baselines"].items():
            assert base[key] == pytest.approx(np.mean([f["baselines"][name][key] for f in evaluated]))
    assert out["summary"]["accuracy"]["mean"] > 0.9


def test_cv_k_has_its_own_k_folds_beside_the_held_out_split(client):
    """``--cv 3`` gave five folds (as many as the held-out fifth's) and ``--cv 10`` a held-out tenth;
    now the held-out split follows --test-fraction and the cross-validation has K folds. With K = 5
    they are the same folds (the results measured before stay as they were)."""
    table = open_table(str(shared_path("classification/sdss_dr14_5k_dev.csv")))
    colours = ["u-g", "g-r", "r-i", "i-z"]
    for k in (3, 5, 10):
        opts = TrainOptions("classify", colours, label="class", cv=k)
        rows = prepare_table(table, opts, client)[0].compute()
        assert opts.folds == 5 and sorted(rows["_fold"].unique()) == [0, 1, 2, 3, 4]
        assert sorted(rows["_cvfold"].unique()) == list(range(k))
        assert rows["_cvfold"].value_counts().min() > len(rows) / k / 2
        if k == 5:
            assert (rows["_cvfold"] == rows["_fold"]).all()
