"""Features declared by name: each kind against a direct computation, and the errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_engine.features.spec import EXTINCTION_R, FeatureError, FeatureSpec


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "u": [19.0, 20.5, 99.0, 18.0],
            "g": [18.0, 19.0, 18.5, -9999.0],
            "r": [17.5, 18.2, 18.0, 17.0],
            "MAGERR_R": [0.05, 0.1, 0.0, 0.2],
            "ebv": [0.1, 0.0, 0.05, 0.2],
            "parallax": [10.0, 1.0, -0.5, 2.0],
            "parallax_error": [0.1, 0.5, 0.1, 0.1],
            "pmra": [3.0, -4.0, 0.0, 1.0],
            "pmdec": [4.0, 3.0, 1.0, 0.0],
            "ra": [0.0, 180.0, 359.9, 266.40498],
            "dec": [0.0, 45.0, -30.0, -28.93617],
            "BP-RP": [0.5, 1.0, 1.5, 2.0],
        }
    )


def test_columns_colours_and_sentinels():
    df = frame()
    f = FeatureSpec(["u-g", "g-r", "r", "BP-RP"]).compute(df)
    assert np.allclose(f["u-g"][:2], [1.0, 1.5])
    assert np.isnan(f["u-g"][2]) and np.isnan(f["g-r"][3])  # 99 and -9999 are "no measurement"
    assert list(f["BP-RP"]) == [0.5, 1.0, 1.5, 2.0]  # a column whose name has a '-' stays a column


def test_dereddening():
    df = frame()
    f = FeatureSpec(["u-g", "dered(r)"], ebv_column="ebv").compute(df)
    assert np.isclose(f["u-g"][0], 1.0 - (EXTINCTION_R["u"] - EXTINCTION_R["g"]) * 0.1)
    assert np.isclose(f["dered(r)"][3], 17.0 - EXTINCTION_R["r"] * 0.2)


def test_snr_parallax_motion_and_galactic():
    df = frame()
    f = FeatureSpec(
        ["snr(MAGERR_R)", "absmag(r)", "distance", "pm_total", "v_tan", "gal_l", "gal_b"]
    ).compute(df)
    assert np.isclose(f["snr(MAGERR_R)"][0], 2.5 / np.log(10) / 0.05) and np.isnan(f["snr(MAGERR_R)"][2])
    assert np.isclose(f["absmag(r)"][0], 17.5 + 5 * np.log10(10.0 / 100))  # 100 pc: M = m - 5
    assert np.isclose(f["distance"][0], 100.0)
    assert np.isnan(f["distance"][1]) and np.isnan(
        f["distance"][2]
    )  # parallax/error 2 < 5; negative parallax
    assert np.isclose(f["pm_total"][0], 5.0) and np.isclose(f["v_tan"][0], 4.74047 * 5 / 10)
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    g = SkyCoord(df.ra.to_numpy() * u.deg, df.dec.to_numpy() * u.deg).galactic
    assert np.allclose(f["gal_l"], g.l.deg) and np.allclose(f["gal_b"], g.b.deg)
    assert abs(f["gal_b"][3]) < 0.05  # Sgr A* direction


def test_positions_as_unit_vectors_do_not_jump_at_ra_zero():
    df = pd.DataFrame({"ra": [359.999, 0.001], "dec": [10.0, 10.0]})
    f = FeatureSpec(["pos_x", "pos_y", "pos_z"]).compute(df)
    assert np.hypot(*(f.iloc[0] - f.iloc[1])[["pos_x", "pos_y"]]) < 0.003


def test_impute_policy_uses_training_medians():
    spec = FeatureSpec(["u-g"], missing="impute")
    train = spec.compute(frame())
    spec.fit(train)
    again = FeatureSpec.from_json(spec.to_json()).compute(frame())
    assert np.isclose(again["u-g"][2], np.nanmedian(train["u-g"]))


@pytest.mark.parametrize(
    "features, message",
    [
        (["u-x"], r"\['x'\] not in the data"),
        (["nosuch"], "no such column"),
        (["dered(r)"], "E\\(B-V\\)"),
        (["v_tan"], None),
    ],
)
def test_errors_name_the_column(features, message):
    df = frame().drop(columns=["pmra"])
    with pytest.raises(FeatureError, match=message or "pmra"):
        FeatureSpec(features).compute(df)


def test_all_nan_feature_is_refused():
    spec = FeatureSpec(["u"])
    with pytest.raises(FeatureError, match=r"\['u'\] are missing"):
        spec.fit(pd.DataFrame({"u": [np.nan, np.nan]}))
