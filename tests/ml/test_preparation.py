"""Spatial folds that hold rows on any patch of sky: a deep field of 0.36 deg^2 spans a handful of
HEALPix order-7 pixels, so folds and the photo-z calibration share came out empty (a --cv run
stopped on "only 0 calibration rows" after training four folds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_engine.ml.data import healpix_of, open_table
from survey_engine.ml.options import FOLD_MIN_PIXELS, TrainingError, TrainOptions
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
        assert "too crowded" in info["fold_kind"] and info["positions"]


def test_a_dense_deep_field_in_a_sparse_survey_is_split_finer(client, tmp_path):
    """300 rows over 1,600 deg^2 (about 300 order-7 pixels) and 2,700 in a 0.36 deg^2 deep field: a
    count of pixels says order 7, but then the deep field's few pixels are whole folds."""
    wide = pd.read_parquet(_field(tmp_path, "wide", 40.0, n=300))
    deep = pd.read_parquet(_field(tmp_path, "deep", 0.6, n=2700))
    path = tmp_path / "both.parquet"
    pd.concat([wide, deep], ignore_index=True).to_parquet(path)
    opts = TrainOptions("photoz", ["g-r", "r"], target="z_spec")
    prepared, _, _, info = prepare_table(open_table(str(path)), opts, client)
    rows = prepared.compute()
    assert info["fold_kind"] not in ("spatial (HEALPix order 7)",) and info["fold_kind"].startswith("spatial")
    assert len(rows) == 2700 and rows["_fold"].value_counts().min() > 300
    frame = pd.read_parquet(path).dropna(subset=["z_spec"])
    assert len(np.unique(healpix_of(frame, "ra", "dec", 7))) >= FOLD_MIN_PIXELS  # what a plain count saw


def test_rows_without_a_usable_target_are_not_counted(client, tmp_path):
    """20,000 rows over a wide field whose target is text or infinite (the preparation drops them)
    and 500 labelled rows in a deep field: counted with the unusable rows, order 7 would be taken
    and the labelled rows would fall in a few whole pixels."""
    wide = pd.read_parquet(_field(tmp_path, "wide", 40.0, n=20_000)).astype({"z_spec": object})
    wide["z_spec"] = np.where(np.arange(len(wide)) % 2, "-", "inf")
    deep = pd.read_parquet(_field(tmp_path, "deep", 0.6, n=500)).dropna(subset=["z_spec"])
    path = tmp_path / "mixed_targets.parquet"
    pd.concat([wide, deep.astype({"z_spec": object})]).astype({"z_spec": str}).to_parquet(path)
    opts = TrainOptions("photoz", ["g-r", "r"], target="z_spec")
    prepared, _, _, info = prepare_table(open_table(str(path)), opts, client)
    rows = prepared.compute()
    assert len(rows) == info["rows"] == 450
    assert info["fold_kind"].startswith("spatial") and info["fold_kind"] != "spatial (HEALPix order 7)"
    assert rows["_fold"].value_counts().min() > 40  # 90 a fold on average


def test_rows_without_a_position_are_split_by_row(client, tmp_path):
    """A NaN Dec made cdshealpix panic (a BaseException, not an error naming anything) and every
    NaN-RA row shared one pixel, so one fold; now such rows are split by row, the rest by pixel."""
    frame = pd.read_parquet(_field(tmp_path, "holes", 40.0))
    frame.loc[frame.index[:200], "dec"] = np.nan
    frame.loc[frame.index[200:400], "ra"] = np.nan
    path = tmp_path / "holes_nan.parquet"
    frame.to_parquet(path)
    opts = TrainOptions("photoz", ["g-r", "r"], target="z_spec")
    prepared, _, _, info = prepare_table(open_table(str(path)), opts, client)
    rows = prepared.compute()
    assert len(rows) == info["rows"] == 2700 and info["fold_kind"] == "spatial (HEALPix order 7)"
    unplaced = rows.loc[rows.index < 400, "_fold"]
    assert len(unplaced) == 360 and unplaced.value_counts().min() > 36  # 72 a fold on average


def test_rows_that_missing_drop_removes_are_not_counted(client, tmp_path):
    """With --missing drop, 20,000 wide-field rows without g are dropped; the 450 complete ones lie
    in a deep field, which must be split finer than order 7."""
    wide = pd.read_parquet(_field(tmp_path, "wide", 40.0, n=20_000)).assign(g=np.nan)
    deep = pd.read_parquet(_field(tmp_path, "deep", 0.6, n=500))
    path = tmp_path / "wide_without_g.parquet"
    pd.concat([wide, deep], ignore_index=True).to_parquet(path)
    opts = TrainOptions("photoz", ["g-r", "r"], target="z_spec", missing="drop")
    prepared, _, _, info = prepare_table(open_table(str(path)), opts, client)
    rows = prepared.compute()
    assert len(rows) == info["rows"] == 450
    assert info["fold_kind"].startswith("spatial") and info["fold_kind"] != "spatial (HEALPix order 7)"
    assert rows["_fold"].value_counts().min() > 40


def test_the_held_out_share_leaves_the_training_rows_an_inner_fold():
    assert TrainOptions("photoz", ["g-r"], target="z", test_fraction=0.35).folds == 3
    with pytest.raises(TrainingError, match=r"must be within 0.05..0.35"):
        TrainOptions("photoz", ["g-r"], target="z", test_fraction=0.4)  # two folds: no inner fold


def test_a_job_spec_with_too_large_a_held_out_share_is_refused_before_it_runs(tmp_path):
    from pathlib import Path

    from survey_engine.jobs.spec import JobSpecError, load_spec

    text = (Path(__file__).parents[2] / "jobs" / "photoz.yaml").read_text()
    (tmp_path / "job.yaml").write_text(
        text.replace("      target: redshift\n", "      target: redshift\n      test_fraction: 0.4\n")
    )
    with pytest.raises(JobSpecError, match=r"test_fraction.*0\.05\.\.0\.35"):
        load_spec(tmp_path / "job.yaml", base=tmp_path)


def test_rows_none_of_which_has_a_position_are_split_by_row(client, tmp_path):
    frame = pd.read_parquet(_field(tmp_path, "nowhere", 40.0)).assign(dec=np.nan)
    path = tmp_path / "nowhere_nan.parquet"
    frame.to_parquet(path)
    opts = TrainOptions("photoz", ["g-r", "r"], target="z_spec")
    prepared, _, _, info = prepare_table(open_table(str(path)), opts, client)
    rows = prepared.compute()
    assert info["fold_kind"] == "random (by row)" and not info["positions"]
    assert len(rows) == 2700 and rows["_fold"].value_counts().min() > 400
