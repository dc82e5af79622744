"""Photo-z as a distribution: a calibrated grid of quantiles per object.

The models give, in log(1 + z), a median ``m`` (the ensemble) and the 16% / 84% quantiles of a
quantile-loss booster. On their own those intervals are too narrow on unseen data (the quantile
booster fits its training rows: 53-63% coverage on independent SDSS / BOSS for a nominal 68%).
They are calibrated on rows the models did not train on (the calibration rows) with normalised
conformal scores, a form of conformalised quantile regression:

* each row's scale is its own predicted half-width, ``d_lo = m - q16`` below the median and
  ``d_hi = q84 - m`` above it, so the intervals stay wide where the model is unsure and narrow
  where it is sure (a constant widening under-covers faint and high-redshift objects);
* the score of a row is its standardised residual t = (y - m) / d_lo below the median, (y - m) / d_hi
  above it; for every quantile level tau of ``LEVELS`` the offset s_tau is the empirical tau
  quantile of t (moved outwards by the finite-sample correction), so that on the calibration rows
  a fraction tau of the truths lies below ``m + s_tau d`` (d = d_lo where s_tau < 0, else d_hi);
* the offsets are fitted separately in groups of equal counts of predicted redshift (Mondrian
  conformal prediction): the model's miscalibration differs between redshift ranges, and one set
  of offsets over- and under-covers there by up to 0.1; groups by predicted redshift brought the
  worst redshift bin within 0.04 at 95% on SDSS;
* rows with missing features (a band not measured, a sentinel such as 99) get offsets of their own,
  fitted on the calibration rows with that input column removed (one table per column, keyed by
  which features go missing with it), so their intervals widen as much as losing that band costs:
  on SDSS, losing r costs far more than losing z, and one pooled table gave 0.50-0.85 coverage
  at 68% depending on the band. Other patterns (two bands gone) use a table fitted on the
  calibration rows with one column removed at random. Their median moves too: without a band
  the boosters' median is biased (on SDSS without r, a p(z) held at it covered 83% for a nominal 68%).

The grid is the calibrated quantiles at ``LEVELS``: ``z_phot`` is the median (level 0.5),
``z_phot_lo`` / ``z_phot_hi`` the 16% / 84% ones (68% interval) and ``z_phot_lo95`` / ``z_phot_hi95``
the 2.5% / 97.5% ones (95% interval). PIT and CRPS follow Rubin's RAIL / qp: the CDF is linear
between the grid's quantiles.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from survey_engine.errors import UsageError

LEVELS = (0.01, 0.025, 0.05, 0.1, 0.16, 0.25, 0.5, 0.75, 0.84, 0.9, 0.95, 0.975, 0.99)
PDF_COLUMNS = tuple(f"z_pdf_q{round(level * 1000):03d}" for level in LEVELS)
# the interval columns and their levels, in photoz_summary's order (68% low, high; 95% low, high)
INTERVAL_COLUMNS = MappingProxyType(
    {"z_phot_lo": 0.16, "z_phot_hi": 0.84, "z_phot_lo95": 0.025, "z_phot_hi95": 0.975}
)
MIN_HALF_WIDTH = 1e-3  # in log(1 + z): a floor on a row's scale, where the quantile booster gives none
ROWS_PER_GROUP = 400  # calibration rows per redshift group (95% offsets need a few hundred)
MAX_GROUPS = 10
PIT_BINS = 100
CRPS_LEVELS = np.linspace(0.02, 0.98, 25)


def _half_widths(
    m: np.ndarray, lo: np.ndarray, hi: np.ndarray, normalised: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's scale below and above the median (1 for plain, additive scores)."""
    if not normalised:
        return np.ones_like(m), np.ones_like(m)
    return np.maximum(m - lo, MIN_HALF_WIDTH), np.maximum(hi - m, MIN_HALF_WIDTH)


def _offsets(
    m: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    y: np.ndarray,
    normalised: bool = True,
    centred: bool = True,
) -> list[float]:
    """One group's signed offset per level, in units of the row's half-width on that side:
    quantile tau is ``m + s_tau * d`` (d = d_lo where s < 0, else d_hi). ``centred`` keeps the
    median at ``m`` (s = 0 at 0.5); otherwise the median moves too (rows with missing features,
    whose boosters' median is biased)."""
    n = len(y)
    d_lo, d_hi = _half_widths(m, lo, hi, normalised)
    t = np.where(y < m, (y - m) / d_lo, (y - m) / d_hi)  # monotone in y for each row
    out = []
    for tau in LEVELS:
        if tau < 0.5:  # the finite-sample correction of split conformal prediction, outwards
            out.append(float(np.quantile(t, max(0.0, tau - (1 - tau) / n), method="lower")))
        elif tau > 0.5:
            out.append(float(np.quantile(t, min(1.0, tau + tau / n), method="higher")))
        else:
            out.append(float(np.quantile(t, 0.5)))
    s = np.asarray(out)
    mid = LEVELS.index(0.5)
    if centred:
        s[mid] = 0.0
        s[:mid], s[mid + 1 :] = np.minimum(s[:mid], 0.0), np.maximum(s[mid + 1 :], 0.0)
    return np.maximum.accumulate(s).tolist()  # quantiles never cross


def _group_table(
    m: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    y: np.ndarray,
    max_groups: int,
    normalised: bool = True,
    centred: bool = True,
) -> dict:
    ok = np.isfinite(m) & np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    m, lo, hi, y = m[ok], lo[ok], hi[ok], y[ok]
    k = int(np.clip(len(y) // ROWS_PER_GROUP, 1, max_groups))
    edges = np.unique(np.quantile(m, np.linspace(0, 1, k + 1)[1:-1])) if k > 1 else np.zeros(0)
    group = np.searchsorted(edges, m)
    empty = np.flatnonzero(np.bincount(group, minlength=len(edges) + 1) == 0)
    while len(empty):  # ties in m (a booster with few distinct outputs) can leave a group empty: merge it
        edges = np.delete(edges, min(int(empty[0]), len(edges) - 1))
        group = np.searchsorted(edges, m)
        empty = np.flatnonzero(np.bincount(group, minlength=len(edges) + 1) == 0)
    offsets = [
        _offsets(m[group == g], lo[group == g], hi[group == g], y[group == g], normalised, centred)
        for g in range(len(edges) + 1)
    ]
    return {"edges": edges.tolist(), "offsets": offsets, "rows": int(len(y)), "normalised": normalised}


def fit_calibration(
    m: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    y: np.ndarray,
    m_missing: np.ndarray | None = None,
    lo_missing: np.ndarray | None = None,
    hi_missing: np.ndarray | None = None,
    y_missing: np.ndarray | None = None,
    patterns: dict | None = None,
    target_range: tuple[float, float] | None = None,
) -> dict:
    """Calibration offsets from rows the models did not train on (all in log(1 + z)); the
    ``*_missing`` arrays are the same rows with one input column removed at random, and
    ``patterns`` maps a missing-feature code (``missing_code``) to (m, lo, hi, y) of the rows with
    exactly those features removed. ``target_range``: the labelled rows' log(1 + z) range, which
    bounds every quantile (default: the calibration rows' own)."""
    if len(y) < 20:
        raise UsageError(f"only {len(y)} calibration rows; at least 20 are needed")
    low, high = target_range or (float(np.min(y)), float(np.max(y)))
    cal = {"levels": list(LEVELS), "complete": _group_table(m, lo, hi, y, MAX_GROUPS)}
    cal["range"] = [min(low, float(np.min(y))), max(high, float(np.max(y)))]
    if y_missing is not None and len(y_missing) >= 20:
        cal["missing"] = _group_table(m_missing, lo_missing, hi_missing, y_missing, 4, centred=False)
    cal["patterns"] = {
        str(int(code)): _group_table(*arrays, 4, centred=False)
        for code, arrays in (patterns or {}).items()
        if len(arrays[3]) >= 20
    }
    return cal


def missing_code(X: np.ndarray) -> np.ndarray:
    """Which features a row misses, as bits (feature j -> 2**j); 0 for a complete row."""
    nan = np.isnan(np.asarray(X, dtype=np.float64))
    return (
        (nan.astype(np.int64) << np.arange(nan.shape[1], dtype=np.int64)).sum(axis=1)
        if nan.shape[1]
        else np.zeros(len(X), np.int64)
    )


def quantile_grid(
    m: np.ndarray, lo: np.ndarray, hi: np.ndarray, calibration: dict, missing: np.ndarray | None = None
) -> np.ndarray:
    """Calibrated quantiles (rows x LEVELS) in z, from the models' log(1 + z) median and 16/84%
    quantiles; ``missing``: each row's ``missing_code`` (or True / False). Within the labelled
    rows' redshift range (``range``; models calibrated before it was kept are not bounded)."""
    m, lo, hi = (np.asarray(a, dtype=np.float64) for a in (m, lo, hi))
    levels = np.asarray(calibration["levels"])
    out = np.empty((len(m), len(levels)))
    code = np.zeros(len(m), np.int64) if missing is None else np.asarray(missing).astype(np.int64)
    if "missing" not in calibration:
        code[:] = 0
    rows_left = code != 0
    tables = [(calibration["complete"], code == 0)]
    for key, table in calibration.get("patterns", {}).items():
        rows = code == int(key)
        tables.append((table, rows))
        rows_left &= ~rows
    tables.append((calibration.get("missing"), rows_left))
    for table, rows in tables:
        if table is None or not rows.any():
            continue
        s = np.asarray(table["offsets"])[np.searchsorted(np.asarray(table["edges"]), m[rows])]
        d_lo, d_hi = _half_widths(m[rows], lo[rows], hi[rows], table.get("normalised", True))
        out[rows] = m[rows, None] + s * np.where(s < 0, d_lo[:, None], d_hi[:, None])
    if "range" in calibration:  # no mass beyond the labelled redshifts (a wide tail reached z ~ 1e17)
        out = np.clip(out, *calibration["range"])
    return np.expm1(out)


def pit(grid: np.ndarray, z: np.ndarray, levels=LEVELS) -> np.ndarray:
    """Probability integral transform: the CDF (linear between the grid's quantiles) at the truth.
    Beyond the first / last quantile, half-way into the tail (within the histogram's end bins)."""
    levels = np.asarray(levels)
    z = np.asarray(z, dtype=np.float64)
    k = (grid <= z[:, None]).sum(axis=1)
    inner = (k > 0) & (k < len(levels))
    out = np.where(k == 0, levels[0] / 2, 1 - (1 - levels[-1]) / 2)
    i = k[inner]
    a, b = grid[inner, i - 1], grid[inner, i]
    frac = np.where(b > a, (z[inner] - a) / np.where(b > a, b - a, 1.0), 0.5)
    out[inner] = levels[i - 1] + frac * (levels[i] - levels[i - 1])
    return out


def crps(grid: np.ndarray, z: np.ndarray, levels=LEVELS) -> np.ndarray:
    """Continuous ranked probability score per row (in z): twice the pinball loss averaged over
    quantile levels, with the quantile function linear between the grid's levels."""
    levels = np.asarray(levels)
    z = np.asarray(z, dtype=np.float64)
    total = np.zeros(len(z))
    for tau in CRPS_LEVELS:
        j = int(np.clip(np.searchsorted(levels, tau), 1, len(levels) - 1))
        w = (tau - levels[j - 1]) / (levels[j] - levels[j - 1])
        q = grid[:, j - 1] * (1 - w) + grid[:, j] * w
        total += np.where(z >= q, tau * (z - q), (1 - tau) * (q - z))
    return 2 * total / len(CRPS_LEVELS)
