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
    prepared = prepared.assign(_fold=prepared["_fold"].where(prepared["_fold"] != 3, 2))  # fold 3 emptied
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
