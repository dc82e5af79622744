"""The NumPy Lomb-Scargle refinement and Baluev false-alarm probability in ``period_search`` equal
astropy's on real (cesium's ASAS) and mock light curves; the coarse power (finufft, single precision)
equals Schuster's power summed directly in double precision, and the search with it finds the periods
that the exact coarse power with astropy's refinement finds."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from survey_engine.features.variability import (
    PEAKS,
    REFINE_POINTS,
    TWO_PI,
    ZOOM_POINTS,
    VariabilitySpec,
    _weights,
    baluev_fap,
    coarse_grid,
    coarse_power,
    fourier_terms,
    lomb_scargle_power,
    period_search,
)


def _clean(t, m, e) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, m, e = (np.asarray(x, dtype=np.float64) for x in (t, m, e))
    ok = np.isfinite(t) & np.isfinite(m) & np.isfinite(e) & (e > 0)
    order = np.argsort(t[ok], kind="stable")
    return t[ok][order], m[ok][order], e[ok][order]


def _asas_curves() -> list[tuple]:
    """cesium's labelled ASAS light curves (V band: Miras, Cepheids, W UMa), read in place."""
    import cesium

    data = Path(cesium.__file__).parent / "tests" / "data" / "asas_training_subset.tar.gz"
    with tarfile.open(data) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".dat")), key=lambda m: m.name)
        return [_clean(*np.loadtxt(tar.extractfile(m), delimiter=",", unpack=True)[:3]) for m in members]


def _mock_curves(objects: int = 40) -> list[tuple]:
    from survey_engine.mock.lightcurves import generate_block

    _, det = generate_block(5, 0, objects, "dense")
    det = det[det["band"] == "r"].sort_values(["object_id", "time"])
    return [_clean(d["time"], d["mag"], d["mag_err"]) for _, d in det.groupby("object_id")]


@pytest.fixture(scope="module")
def curves() -> list[tuple]:
    found = _asas_curves() + _mock_curves()
    assert len(found) >= 40
    return found


def test_power_equals_astropy(curves):
    from astropy.timeseries import LombScargle

    for t, m, e in curves:
        grid = np.stack([np.linspace(f, f + 0.004, REFINE_POINTS) for f in (0.0031, 0.27, 1.6, 9.5, 19.9)])
        ours = lomb_scargle_power(t, m, e, grid)
        theirs = LombScargle(t, m, e).power(grid.ravel(), method="cython").reshape(grid.shape)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


def test_baluev_fap_equals_astropy(curves):
    """Equal to astropy's Baluev formula to rounding; its ``false_alarm_probability`` method first moves
    the maximum frequency onto its own frequency grid (20 -> 20.00001 here), which moves the FAP ~1e-6."""
    from astropy.timeseries import LombScargle
    from astropy.timeseries.periodograms.lombscargle._statistics import fap_baluev

    checked = 0
    for t, m, e in curves:
        ls = LombScargle(t, m, e)
        for power in (0.02, 0.1, 0.3, 0.6, 0.9):
            ours = baluev_fap(power, 20.0, t, e)
            assert ours == pytest.approx(float(fap_baluev(power, 20.0, t, m, e)), rel=1e-9, abs=1e-300)
            method = float(ls.false_alarm_probability(power, maximum_frequency=20.0, method="baluev"))
            assert ours == pytest.approx(method, rel=1e-4, abs=1e-300)
            checked += ours > 1e-300
    assert checked > 100


def _exact_schuster(t: np.ndarray, m: np.ndarray, e: np.ndarray, modes: int, step: float) -> np.ndarray:
    """``|sum w y exp(2 pi i k step t)|**2`` for ``k < modes``, summed directly in double precision
    (``exp(2 pi i (k0 + j) step t)`` as the product of its two factors, each from its own phase)."""
    w = 1.0 / e**2
    w /= w.sum()
    wy = w * (m - np.dot(w, m))

    def phasor(k: np.ndarray) -> np.ndarray:
        cycles = np.multiply.outer(k * step, t - t[0])
        return np.exp(TWO_PI * 1j * (cycles - np.round(cycles)))

    block = 256
    starts = phasor(np.arange(0, modes, block)) * wy  # (modes / block, n)
    sums = phasor(np.arange(block)) @ starts.T  # (block, modes / block): k = start + j
    return (np.abs(sums.T.ravel()) ** 2)[:modes]


def test_coarse_power_equals_the_direct_sum(curves):
    """finufft's single-precision transform is within 1% of the highest power everywhere on the grid."""
    spec = VariabilitySpec()
    for t, m, e in curves:
        _, fmax, log2_size, step = coarse_grid(t, spec)
        exact = _exact_schuster(t, m, e, 2**log2_size, step)
        fast = coarse_power(t, _weights(m, e), log2_size, fmax)
        assert fast.shape == exact.shape
        assert np.max(np.abs(fast - exact)) < 1e-2 * exact.max()


def _astropy_period_search(t, m, e, spec: VariabilitySpec) -> dict:
    """The search with exact sums and astropy in place of the fast paths: the coarse power summed
    directly in double precision, its ``PEAKS`` highest local maxima inside [fmin, fmax], astropy's
    power on each peak's fine grid and then around the best, and astropy's Baluev FAP (the reference
    the fast path must equal)."""
    from astropy.timeseries import LombScargle

    fmin, fmax, log2_size, step = coarse_grid(t, spec)
    coarse = _exact_schuster(t, m, e, 2**log2_size, step)
    k = [j for j in range(1, len(coarse) - 1) if coarse[j - 1] < coarse[j] >= coarse[j + 1]]
    k = [j for j in k if fmin <= j * step <= fmax]
    peaks = sorted(sorted(k, key=lambda j: coarse[j])[-PEAKS:])
    peaks = [j * step for j in peaks]
    ls = LombScargle(t, m, e)
    fine = np.concatenate(
        [np.linspace(max(f - 1.5 * step, fmin), min(f + 1.5 * step, fmax), REFINE_POINTS) for f in peaks]
    )
    power = ls.power(fine, method="cython")
    i = int(np.argmax(power))
    best_f, best_p = fine[i], power[i]
    # then ZOOM_POINTS across +-1 fine spacing around the best, inside its peak's row
    row = fine[(i // REFINE_POINTS) * REFINE_POINTS : (i // REFINE_POINTS + 1) * REFINE_POINTS]
    spacing = row[1] - row[0]
    zoom = np.linspace(max(best_f - spacing, row[0]), min(best_f + spacing, row[-1]), ZOOM_POINTS)
    zoom_power = ls.power(zoom, method="cython")
    if zoom_power.max() > best_p:
        best_f, best_p = zoom[np.argmax(zoom_power)], zoom_power.max()
    fap = ls.false_alarm_probability(best_p, minimum_frequency=fmin, maximum_frequency=fmax, method="baluev")
    return {"period": 1.0 / best_f, "period_power": best_p, "period_fap": float(fap)}


def test_period_search_equals_the_astropy_search(curves):
    spec = VariabilitySpec()
    assert PEAKS == 5
    for t, m, e in curves:
        ours = period_search(t, m, e, spec)
        theirs = _astropy_period_search(t, m, e, spec)
        assert ours["period"] == pytest.approx(theirs["period"], rel=1e-9)
        assert ours["period_power"] == pytest.approx(theirs["period_power"], rel=1e-6)
        # near power 1 the FAP is (1 - power)**(n/2): a 1e-9 rounding of the power moves it ~1e-6
        assert ours["period_fap"] == pytest.approx(theirs["period_fap"], rel=1e-4, abs=1e-300)
        shape = fourier_terms(t, m, e, ours["period"], spec.harmonics)
        assert {k: ours[k] for k in shape} == pytest.approx(shape, rel=1e-12, nan_ok=True)


def _flat(curves):
    from survey_engine.features.variability import flat_curves

    flat, kept = flat_curves(curves)
    assert len(kept) == len(curves)
    return flat


def test_flat_curves_drop_bad_points_and_sort_by_time():
    from survey_engine.features.variability import flat_curves

    t = np.array([3.0, 1.0, np.nan, 2.0, 1.0])
    m = np.array([13.0, 11.0, 10.0, 12.0, 11.5])
    e = np.array([0.1, 0.1, 0.1, 0.0, 0.2])  # a zero error is dropped as NaN is
    flat, kept = flat_curves([(t, m, e), ([], [], []), ([5.0], [15.0], [0.3])])
    assert kept.tolist() == [0, 2]
    assert flat.start.tolist() == [0, 3, 4]
    assert flat.t.tolist() == [1.0, 1.0, 3.0, 5.0]
    assert flat.mag.tolist() == [11.0, 11.5, 13.0, 15.0]  # equal times keep their order


def test_segment_median_equals_numpy(curves):
    from survey_engine.features.variability import segment_median

    flat = _flat(curves)
    expected = [np.median(m) for _, m, _ in curves]
    assert segment_median(flat.mag, flat).tolist() == expected


def test_stetson_many_equals_per_curve(curves):
    from survey_engine.features.variability import stetson_jkl, stetson_jkl_many

    j, k, l_index = stetson_jkl_many(_flat(curves))
    expected = np.array([stetson_jkl(m, e) for _, m, e in curves])
    np.testing.assert_allclose(np.stack([j, k, l_index], axis=1), expected, rtol=1e-9)


def test_fourier_and_fap_many_equal_per_curve(curves):
    from survey_engine.features.variability import baluev_fap_many, fourier_terms_many

    flat = _flat(curves)
    spec = VariabilitySpec()
    found = [period_search(t, m, e, spec) for t, m, e in curves]
    period = np.array([f["period"] for f in found])
    power = np.array([f["period_power"] for f in found])
    assert np.isfinite(period).all()
    many = fourier_terms_many(flat, period, spec.harmonics)
    for name in many:
        np.testing.assert_allclose(many[name], [f[name] for f in found], rtol=1e-9)
    fap = baluev_fap_many(power, 1.0 / spec.min_period, flat)
    np.testing.assert_allclose(fap, [f["period_fap"] for f in found], rtol=1e-9, atol=1e-300)


def test_features_of_many_equal_the_per_curve_functions(curves):
    """The batched features are those of the per-curve reference (periods identical)."""
    from survey_engine.features.variability import (
        LC_FEATURE_NAMES,
        PERIOD_FEATURE_NAMES,
        features_of_many,
        stetson_jkl,
    )

    spec = VariabilitySpec()
    feats = features_of_many(curves, spec)
    for i, (t, m, e) in enumerate(curves):
        row = feats.iloc[i]
        assert row["n_obs"] == len(t)
        j, _, l_index = stetson_jkl(m, e)
        assert row["stetson_j"] == pytest.approx(j, rel=1e-9)
        assert row["stetson_l"] == pytest.approx(l_index, rel=1e-9)
        found = period_search(t, m, e, spec)
        assert row["period"] == found["period"]
        for name in PERIOD_FEATURE_NAMES:
            assert row[name] == pytest.approx(found[name], rel=1e-9, abs=1e-300, nan_ok=True)
        assert np.isfinite(row[list(LC_FEATURE_NAMES)].to_numpy(dtype=float)).all()


def test_fourier_many_equals_lstsq_on_short_and_mixed_length_curves():
    """Fewer points than terms (the minimum-norm solution) and curves of different lengths in one
    zero-padded stack give numpy lstsq's answer, curve by curve."""
    from survey_engine.features.variability import fourier_terms_many

    rng = np.random.default_rng(3)
    curves = []
    for n in (5, 6, 7, 9, 40, 131):
        t = np.sort(rng.uniform(0, 300, n))
        curves.append(
            (t, 15 + 0.3 * np.cos(TWO_PI * t / 0.7) + rng.normal(0, 0.02, n), rng.uniform(0.01, 0.03, n))
        )
    period = np.array([0.7, 0.7, 1.3, 0.7, 2.1, 0.7])
    for harmonics in (1, 3):
        many = fourier_terms_many(_flat(curves), period, harmonics)
        for i, (t, m, e) in enumerate(curves):
            one = fourier_terms(t, m, e, period[i], harmonics)
            assert {k: many[k][i] for k in one} == pytest.approx(one, rel=1e-7, nan_ok=True)
