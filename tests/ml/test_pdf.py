"""The photo-z p(z): calibration on held-out rows restores coverage of intervals that are too narrow,
PIT and CRPS agree with their definitions (checked against a known Gaussian truth)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from survey_engine.ml import metrics as M
from survey_engine.ml.pdf import LEVELS, PDF_COLUMNS, crps, fit_calibration, pit, quantile_grid


def _heteroscedastic(n: int, seed: int):
    """log(1+z) truths around a median m with a spread that grows with m; the 'model' gives the
    right median but 16/84% quantiles 40% too narrow (as a quantile booster that fits its rows)."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(0.05, 0.5, n)
    sigma = 0.01 + 0.05 * m
    y = m + sigma * rng.standard_t(5, n)  # heavier tails than a Gaussian
    return m, m - 0.6 * sigma, m + 0.6 * sigma, y


def test_calibration_restores_coverage_on_unseen_rows():
    cal = fit_calibration(*_heteroscedastic(6000, 1))
    m, lo, hi, y = _heteroscedastic(40_000, 2)
    grid = quantile_grid(m, lo, hi, cal)
    z = np.expm1(y)
    raw68 = np.mean((z >= np.expm1(lo)) & (z <= np.expm1(hi)))
    assert raw68 < 0.5  # what the booster gives on its own
    i = {level: k for k, level in enumerate(LEVELS)}
    c68 = np.mean((z >= grid[:, i[0.16]]) & (z <= grid[:, i[0.84]]))
    c95 = np.mean((z >= grid[:, i[0.025]]) & (z <= grid[:, i[0.975]]))
    assert abs(c68 - 0.68) < 0.015 and abs(c95 - 0.95) < 0.01
    # normalised scores keep the intervals local: coverage holds where the spread is small and large
    for sel in (m < 0.15, m > 0.4):
        assert abs(np.mean((z[sel] >= grid[sel, i[0.16]]) & (z[sel] <= grid[sel, i[0.84]])) - 0.68) < 0.03
    assert np.all(np.diff(grid, axis=1) >= 0)  # quantiles never cross
    np.testing.assert_allclose(grid[:, i[0.5]], np.expm1(m))  # the median is the model's median
    p = pit(grid, z)
    assert stats.kstest(p, "uniform").statistic < 0.02


def test_rows_with_missing_features_get_their_own_wider_factors():
    m, lo, hi, y = _heteroscedastic(6000, 3)
    rng = np.random.default_rng(4)
    y_missing = m + 3 * (y - m) + rng.normal(0, 0.01, len(y))  # a band gone: three times the scatter
    cal = fit_calibration(m, lo, hi, y, m, lo, hi, y_missing)
    grid = quantile_grid(m, lo, hi, cal, missing=np.ones(len(m), bool))
    z = np.expm1(y_missing)
    assert abs(np.mean((z >= grid[:, 4]) & (z <= grid[:, 8])) - 0.68) < 0.03
    assert (
        grid[:, -1] - grid[:, 0] > quantile_grid(m, lo, hi, cal)[:, -1] - quantile_grid(m, lo, hi, cal)[:, 0]
    ).all()


def test_pit_and_crps_of_a_gaussian():
    mu, sd = 0.3, 0.02
    grid = np.tile(stats.norm.ppf(LEVELS, mu, sd), (5, 1))
    z = np.array([0.25, 0.29, 0.3, 0.31, 0.34])
    np.testing.assert_allclose(pit(grid, z)[1:4], stats.norm.cdf(z[1:4], mu, sd), atol=0.01)
    # the closed form CRPS of a Gaussian (Gneiting & Raftery 2007)
    w = (z - mu) / sd
    exact = sd * (w * (2 * stats.norm.cdf(w) - 1) + 2 * stats.norm.pdf(w) - 1 / np.sqrt(np.pi))
    np.testing.assert_allclose(crps(grid, z), exact, rtol=0.08, atol=2e-4)


def test_metrics_merge_pit_coverage_and_crps_over_partitions():
    import pandas as pd

    m, lo, hi, y = _heteroscedastic(5000, 5)
    grid = quantile_grid(m, lo, hi, fit_calibration(*_heteroscedastic(4000, 6)))
    i = {level: k for k, level in enumerate(LEVELS)}
    df = pd.DataFrame(grid, columns=list(PDF_COLUMNS)).assign(
        zp=grid[:, i[0.5]],
        zs=np.expm1(y),
        lo=grid[:, i[0.16]],
        hi=grid[:, i[0.84]],
        lo95=grid[:, i[0.025]],
        hi95=grid[:, i[0.975]],
        mag=np.linspace(16, 21, len(y)),
    )
    parts = [
        M.photoz_summary(
            df.iloc[k::3], "zp", "zs", "mag", "lo", "hi", "lo95", "hi95", list(PDF_COLUMNS), list(LEVELS)
        )
        for k in range(3)
    ]
    out = M.photoz_metrics_from_summary(M.merge_summaries(parts))
    z = df.zs.to_numpy()
    assert out["n"] == 5000
    assert out["interval_coverage"] == pytest.approx(np.mean((z >= df.lo) & (z <= df.hi)))
    assert out["interval_coverage_95"] == pytest.approx(np.mean((z >= df.lo95) & (z <= df.hi95)))
    assert out["crps"] == pytest.approx(crps(grid, z).mean())
    assert sum(out["pit_histogram"]) == pytest.approx(1.0) and len(out["pit_histogram"]) == 10
    assert out["pit_ks"] == pytest.approx(stats.kstest(pit(grid, z), "uniform").statistic, abs=0.011)
    assert sum(b["n"] for b in out["by_photoz"]) == 5000 and all(
        "interval_coverage_95" in b for b in out["by_magnitude"]
    )


def test_quantiles_stay_within_the_labelled_redshifts():
    """Galaxies with a few quasars far above (z 2-6): the upper offsets are many half-widths, and
    an unbounded tail reached z ~ 1e17 (CRPS 1e10). Bounded by the labelled rows' range, the
    coverage of every truth in that range is unchanged and the CRPS is finite."""
    rng = np.random.default_rng(8)

    def rows(n):
        m = rng.uniform(0.05, 0.4, n)
        y = m + 0.02 * rng.normal(size=n)
        qso = rng.random(n) < 0.03
        y[qso] = np.log1p(rng.uniform(2, 6, qso.sum()))
        return m, m - 0.02, m + 0.02 * rng.lognormal(0, 1, n), y  # some rows' boosters see a wide upper side

    m, lo, hi, y = rows(3000)
    cal = fit_calibration(m, lo, hi, y, target_range=(0.0, float(np.log1p(6.5))))
    assert cal["range"] == [pytest.approx(min(0.0, y.min())), pytest.approx(np.log1p(6.5))]
    m, lo, hi, y = rows(20_000)
    bounded = quantile_grid(m, lo, hi, cal)
    unbounded = quantile_grid(m, lo, hi, {k: v for k, v in cal.items() if k != "range"})
    assert (
        unbounded.max() > 1e3 and bounded.max() <= 6.5 + 1e-9 and bounded.min() >= np.expm1(cal["range"][0])
    )
    z = np.expm1(y)
    in_range = (y >= cal["range"][0]) & (y <= cal["range"][1])
    for a, b in ((0, -1), (4, 8), (1, 11)):
        inside = (z >= bounded[:, a]) & (z <= bounded[:, b])
        assert (inside == ((z >= unbounded[:, a]) & (z <= unbounded[:, b])))[in_range].all()
    assert np.isfinite(crps(bounded, z)).all() and crps(bounded, z).mean() < 0.3
    assert crps(bounded, z).mean() < crps(unbounded, z).mean()
