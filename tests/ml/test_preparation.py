"""Spatial folds that hold rows on any patch of sky: a deep field of 0.36 deg^2 spans a handful of
HEALPix order-7 pixels, so folds and the photo-z calibration share came out empty (a --cv run
stopped on "only 0 calibration rows" after training four folds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_engine.ml.data import healpix_of, open_table
from survey_engine.ml.options import FOLD_MIN_PIXELS, TrainOptions
from survey_engine.ml.preparation import prepare_table


def _field(tmp_path, name: str, width_deg: float, n: int = 3000) -> str:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "ra": 150.0 + rng.uniform(0, width_deg, n),
            "dec": 2.0 + rng.uniform(0, width_deg, n),
            "g": rng.normal(20, 1, n),
            "r": rng.normal(19.5, 1, n),
            "z_spec": rng.uniform(0.05, 0.6, n),
        }
    )
    frame.loc[::10, "z_spec"] = np.nan  # unlabelled rows: not counted, not prepared
    path = tmp_path / f"{name}.parquet"
    frame.to_parquet(path)
    return str(path)


@pytest.mark.parametrize(
    ("width_deg", "kind"),
    [(40.0, "spatial (HEALPix order 7)"), (0.6, "spatial (HEALPix order 1"), (0.004, "random (by row)")],
)
def test_every_fold_and_the_calibration_share_hold_rows(client, tmp_path, width_deg, kind):
    path = _field(tmp_path, f"w{width_deg}", width_deg)
    opts = TrainOptions("photoz", ["g-r", "r"], target="z_spec")
    prepared, _, _, info = prepare_table(open_table(path), opts, client)
    rows = prepared.compute()
    assert len(rows) == 2700 and info["rows"] == 2700
    assert info["fold_kind"].startswith(kind)
    assert sorted(rows["_fold"].unique()) == [0, 1, 2, 3, 4]
    assert rows["_fold"].value_counts().min() > 300  # 540 a fold on average
    assert 0.05 < rows["_cal"].mean() < 0.3  # about 15%
    frame = pd.read_parquet(path).dropna(subset=["z_spec"])
    if kind.startswith("spatial"):  # a pixel's rows share a fold: neighbours do not leak between folds
        order = int(info["fold_kind"].split("order ")[1].rstrip(")"))
        pixel = healpix_of(frame, "ra", "dec", order)
        assert len(np.unique(pixel)) >= FOLD_MIN_PIXELS
        assert (pd.Series(rows["_fold"].to_numpy()).groupby(pixel).nunique() == 1).all()
    else:  # 14" across: too few pixels even at order 12, and the report says so
        assert "span only" in info["fold_kind"] and info["positions"]
