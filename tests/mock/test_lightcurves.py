"""Mock light curves: deterministic, drawn from the real OGLE-III catalogue, periods recoverable."""

from __future__ import annotations

import numpy as np
import pytest

from survey_engine.features.variability import features_of_many
from survey_engine.mock.lightcurves import CLASS_FRACTIONS, generate_block, ogle3_table, ogle_parameters


def test_ogle3_table_is_the_real_catalogue():
    table = ogle3_table()
    assert len(table) == 399_679
    counts = table["Type"].value_counts()
    assert counts["RRLyr"] == 44_217 and counts["Cep"] == 8_037 and counts["LPV"] == 343_785
    lmc = table[table["ID"].str.startswith("OGLE-LMC")]
    assert lmc["ra"].between(60, 100).mean() > 0.99  # RA converted from hours to degrees
    params = ogle_parameters()
    assert set(params["mock_class"]) == {"RRAB", "RRC", "CEP", "DSCT", "LPV"}


def test_deterministic_and_consistent():
    a_obj, a_det = generate_block(7, 3, 120, "sparse")
    b_obj, b_det = generate_block(7, 3, 120, "sparse")
    assert a_obj.equals(b_obj) and a_det.equals(b_det)
    c_obj, _ = generate_block(8, 3, 120, "sparse")
    assert not np.allclose(a_obj["ra"], c_obj["ra"])
    assert a_obj["object_id"].is_unique
    assert (
        a_det.groupby("object_id").size().reindex(a_obj["object_id"]).to_numpy()
        == a_obj["n_epochs"].to_numpy()
    ).all()
    assert set(a_obj["var_class"]) <= set(CLASS_FRACTIONS)
    # variables' parameters are OGLE-III rows
    params = ogle_parameters()
    rr = a_obj[a_obj["var_class"] == "RRAB"]
    assert np.isin(rr["period"], params["P_1"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("cadence", ["dense", "sparse"])
def test_rr_lyrae_periods_recovered(cadence):
    """>= 95% of RR Lyrae with >= 50 epochs get their period to 0.1%."""
    objects, detections = generate_block(42, 0, 400, cadence)
    rr = objects[objects["var_class"].isin(["RRAB", "RRC"])]
    band = "r" if cadence == "dense" else "G"
    curves = []
    for oid in rr["object_id"]:
        d = detections[(detections["object_id"] == oid) & (detections["band"] == band)]
        curves.append((d["time"].to_numpy(), d["mag"].to_numpy(), d["mag_err"].to_numpy()))
    feats = features_of_many(curves)
    enough = feats["n_obs"].to_numpy() >= 50
    rel = np.abs(feats["period"].to_numpy() - rr["period"].to_numpy()) / rr["period"].to_numpy()
    assert enough.sum() >= 40
    assert (rel[enough] < 1e-3).mean() >= 0.95


def test_a_second_write_of_other_light_curves_is_refused_and_the_same_one_resumes(tmp_path, client):
    """Before, a write of fewer objects into the same folder silently left the first write's later
    blocks beside its own (a mixed catalogue); now the folder says what it holds."""
    import pandas as pd

    from survey_engine.mock.lightcurves import BLOCK_OBJECTS, write_mock_lightcurves

    out = tmp_path / "lc"
    n = BLOCK_OBJECTS + 10  # two blocks
    counts = write_mock_lightcurves(n, out, seed=3, cadence="sparse", client=client, progress=False)
    objects = pd.read_parquet(out / "objects")
    assert counts["objects"] == len(objects) == n and objects["object_id"].is_unique
    assert counts["detections"] == len(pd.read_parquet(out / "detections")) == objects["n_epochs"].sum()
    with pytest.raises(FileExistsError, match="other arguments"):
        write_mock_lightcurves(10, out, seed=3, cadence="sparse", client=client, progress=False)
    first = (out / "detections" / "block-00001.parquet").stat().st_mtime_ns
    (out / "objects" / "block-00000.parquet").unlink()  # as if killed before that block was whole
    again = write_mock_lightcurves(n, out, seed=3, cadence="sparse", client=client, progress=False)
    assert again == counts and (out / "detections" / "block-00001.parquet").stat().st_mtime_ns == first
    pd.testing.assert_frame_equal(pd.read_parquet(out / "objects"), objects)
