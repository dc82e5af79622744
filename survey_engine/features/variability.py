"""Variability features of light curves, per object and band, declared once for training and application.

The feature set (``VARIABILITY_FEATURES``, stored with a model so that application computes the same):

* from the ``light-curve`` package (Rust; Malanchev et al. 2021): amplitude, beyond_1_std, eta (the von
  Neumann ratio), kurtosis, skew, standard_deviation, stetson_K, weighted_mean, chi2 (reduced),
  inter_percentile_range_25, median_absolute_deviation, linear_trend, n_obs;
* what it lacks: Stetson J and L (``stetson_j``, ``stetson_l``), with cesium's single-band definitions:
  deltas from the iteratively reweighted Stetson mean, ``J = mean(sign(P) sqrt|P|)`` with
  ``P = delta**2 - 1`` and ``L = J K / 0.798`` (feets' L, with K from the same deltas);
* a Lomb-Scargle period search (astropy, generalised floating-mean periodogram, errors as weights):
  ``period`` (days), ``period_power``, ``period_fap`` (Baluev false-alarm probability), and a
  three-harmonic Fourier fit at the best period in the OGLE convention
  ``m(t) = A0 + sum_k A_k cos(2 pi k t / P + phi_k)``: ``fourier_a1``, ``fourier_r21 = A2/A1``,
  ``fourier_phi21 = phi2 - 2 phi1``, ``fourier_r31``, ``fourier_phi31 = phi3 - 3 phi1`` (phases in
  [0, 2 pi)), so they compare with the OGLE-III catalogue's R21, phi21, R31, phi31.

A light curve with fewer than ``min_epochs`` points gets NaN features (counted in ``n_obs``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from survey_engine.errors import SurveyEngineError

LC_FEATURE_NAMES = (
    "amplitude",
    "beyond_1_std",
    "eta",
    "kurtosis",
    "skew",
    "standard_deviation",
    "stetson_K",
    "weighted_mean",
    "chi2",
    "inter_percentile_range_25",
    "median_absolute_deviation",
    "linear_trend",
)
OWN_FEATURE_NAMES = ("stetson_j", "stetson_l")
PERIOD_FEATURE_NAMES = (
    "period",
    "period_power",
    "period_fap",
    "fourier_a1",
    "fourier_r21",
    "fourier_phi21",
    "fourier_r31",
    "fourier_phi31",
)
VARIABILITY_FEATURES = ("n_obs", *LC_FEATURE_NAMES, *OWN_FEATURE_NAMES, *PERIOD_FEATURE_NAMES)
TWO_PI = 2.0 * math.pi
PEAKS = 5  # periodogram peaks refined before the best is chosen (aliases can outrank the true peak coarsely)
REFINE_POINTS = 61  # astropy frequencies across +-1.5 coarse steps around each peak: 20 per coarse step


class VariabilityError(SurveyEngineError, ValueError):
    """Light curves that cannot be turned into features (the message names the column or option)."""


@dataclass
class VariabilitySpec:
    """How features are computed; stored with a model (``asdict``) so application matches training."""

    time_field: str = "time"
    mag_field: str = "mag"
    err_field: str = "mag_err"
    band_field: str | None = "band"
    bands: list[str] = field(default_factory=list)  # empty: every band found, or one unnamed band
    min_epochs: int = 10
    min_period: float = 0.05  # days
    max_period: float | None = None  # days; default: the light curve's time span
    samples_per_peak: int = 3  # of the coarse FFT grid; the best peaks are refined 20x finer
    harmonics: int = 3

    def __post_init__(self) -> None:
        if self.min_epochs < 5:
            raise VariabilityError(f"--min-epochs must be at least 5 (got {self.min_epochs})")
        if self.min_period <= 0:
            raise VariabilityError(f"--min-period must be positive (got {self.min_period})")
        if self.max_period is not None and self.max_period <= self.min_period:
            raise VariabilityError(
                f"--max-period ({self.max_period}) must exceed --min-period ({self.min_period})"
            )
        if isinstance(self.bands, str):
            self.bands = [b.strip() for b in self.bands.split(",") if b.strip()]

    def to_dict(self) -> dict:
        return asdict(self)


def lc_extractor():
    import light_curve as lc

    return lc.Extractor(
        lc.Amplitude(),
        lc.BeyondNStd(1.0),
        lc.Eta(),
        lc.Kurtosis(),
        lc.Skew(),
        lc.StandardDeviation(),
        lc.StetsonK(),
        lc.WeightedMean(),
        lc.ReducedChi2(),
        lc.InterPercentileRange(0.25),
        lc.MedianAbsoluteDeviation(),
        lc.LinearTrend(),
    )


def stetson_mean(
    x: np.ndarray,
    weight: np.ndarray,
    alpha: float = 2.0,
    beta: float = 2.0,
    tol: float = 1e-6,
    nmax: int = 20,
) -> float:
    """Stetson's iteratively reweighted mean (as cesium computes it): outliers lose weight.

    ``mean(x * w / mean(w))`` is written ``dot(x, w) / sum(w)``: the same number, fewer array passes."""
    mu = float(np.median(x))
    sqrt_weight = np.sqrt(weight)
    for _ in range(nmax):
        resid_err = np.abs(x - mu) * sqrt_weight
        w = weight / (1.0 + (resid_err / alpha) ** beta)
        diff = float(np.dot(x, w) / w.sum()) - mu
        mu += diff
        if abs(diff) < tol * abs(mu) or abs(diff) < tol:
            break
    return mu


def stetson_jkl(mag: np.ndarray, err: np.ndarray) -> tuple[float, float, float]:
    """Stetson J, K and L of one band: J and K as cesium defines them, L = J K / 0.798 (feets)."""
    n = len(mag)
    mean = stetson_mean(mag, 1.0 / err**2)
    delta = math.sqrt(n / (n - 1.0)) * (mag - mean) / err
    p = delta**2 - 1.0
    j = float(np.dot(np.sign(p), np.sqrt(np.abs(p)))) / n
    k = float(np.abs(delta).sum() / n / math.sqrt(float(np.dot(delta, delta)) / n) / 0.798)
    return j, k, j * k / 0.798


def fourier_terms(t: np.ndarray, mag: np.ndarray, err: np.ndarray, period: float, harmonics: int = 3) -> dict:
    """Weighted least-squares fit of ``A0 + sum_k A_k cos(2 pi k t / P + phi_k)``; OGLE-style ratios."""
    angle = np.multiply.outer(TWO_PI / period * t, np.arange(1, harmonics + 1))  # (epochs, harmonics)
    design = np.empty((len(t), 1 + 2 * harmonics))
    design[:, 0] = 1.0
    design[:, 1::2] = np.cos(angle)
    design[:, 2::2] = np.sin(angle)
    design /= err[:, None]
    coef, *_ = np.linalg.lstsq(design, mag / err, rcond=None)
    a, b = coef[1::2], coef[2::2]
    amp = np.hypot(a, b)
    phase = np.arctan2(-b, a)  # a cos x + b sin x = A cos(x + phi)
    out = {"fourier_a1": float(amp[0])}
    for k in (2, 3):
        if k <= harmonics and amp[0] > 0:
            out[f"fourier_r{k}1"] = float(amp[k - 1] / amp[0])
            out[f"fourier_phi{k}1"] = float((phase[k - 1] - k * phase[0]) % TWO_PI)
        else:
            out[f"fourier_r{k}1"] = out[f"fourier_phi{k}1"] = float("nan")
    return out


@functools.lru_cache(maxsize=16)
def _periodogram(log2_size: int, max_angular_frequency: float):
    """light-curve's FFT Lomb-Scargle on the grid ``linspace(0, max, 2**k + 1)`` (reused: planning costs)."""
    import light_curve as lc

    grid = np.linspace(0.0, max_angular_frequency, 2**log2_size + 1)
    return lc.Periodogram(peaks=PEAKS, freqs=grid, fast=True)


def lomb_scargle_power(t: np.ndarray, mag: np.ndarray, err: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """Generalised (floating-mean, ``1/err**2``-weighted) Lomb-Scargle power, astropy's "standard"
    normalisation (the fraction of chi2 about the weighted mean that a sinusoid removes), at every
    frequency (cycles per time unit) of a ``(peaks, points)`` array of evenly spaced rows.

    This is what ``LombScargle(t, mag, err).power(frequency)`` returns (Zechmeister & Kuerster 2009,
    eq. 5), as a few matrix products on the phasors ``exp(2 pi i f t)``. Those are computed with
    sine and cosine only at each row's first frequency and step, and by multiplication along the row
    (the trigonometry, not the sums, was the cost; the rounding this adds is ~1e-14 of the power)."""
    frequency = np.asarray(frequency, dtype=np.float64)
    w = 1.0 / err**2
    w /= w.sum()
    y = mag - np.dot(w, mag)
    wy = w * y
    yy = np.dot(wy, y)
    z = _phasors(frequency[:, 0], frequency[:, 1] - frequency[:, 0], t, frequency.shape[1])
    z1, z2, zy = z @ w, (z * z) @ w, z @ wy  # z**2 gives CC - SS + 2i CS, and CC + SS = 1
    c, s, yc, ys = z1.real, z1.imag, zy.real, zy.imag
    cc = 0.5 * (1.0 + z2.real) - c * c
    ss = 0.5 * (1.0 - z2.real) - s * s
    cs = 0.5 * z2.imag - c * s
    return (ss * yc * yc + cc * ys * ys - 2.0 * cs * yc * ys) / (yy * (cc * ss - cs * cs))


def _unit_phasor(cycles: np.ndarray) -> np.ndarray:
    cycles = cycles - np.round(cycles)  # whole turns off first: the phase stays accurate and trig is cheap
    return np.exp(2j * math.pi * cycles)


def _phasors(start: np.ndarray, step: np.ndarray, t: np.ndarray, points: int) -> np.ndarray:
    """``exp(2 pi i (start + j step) t)`` for ``j < points``: shape ``(len(start), points, len(t))``."""
    z = np.empty((len(start), points, len(t)), dtype=np.complex128)
    z[:, 0] = _unit_phasor(np.multiply.outer(start, t))
    rotation = _unit_phasor(np.multiply.outer(step, t))[:, None, :]
    done = 1
    while done < points:  # z[j + done] = z[j] * rotation**done: the row doubles each pass
        more = min(done, points - done)
        np.multiply(z[:, :more], rotation, out=z[:, done : done + more])
        rotation = rotation * rotation
        done += more
    return z


def baluev_fap(power: float, max_frequency: float, t: np.ndarray, err: np.ndarray) -> float:
    """False-alarm probability of the highest peak ``power`` (standard normalisation) of a search up
    to ``max_frequency``: Baluev (2008) eq. 6, alias-free, as astropy's
    ``false_alarm_probability(method="baluev")`` computes it, without building a LombScargle."""
    n = len(t)
    n_h, n_k = n - 1, n - 3
    w = 1.0 / err**2
    # astropy's weighted variance of the times, term for term (with absolute times such as JD its
    # cancellation rounds at ~1e-7; written the same way, the two agree to the last digits)
    t_var = (t**2 * w).sum() / w.sum() - ((t * w).sum() / w.sum()) ** 2
    effective_baseline = math.sqrt(4.0 * math.pi * t_var)
    gamma = math.sqrt(2.0 / n_h) * math.exp(math.lgamma(n_h / 2.0) - math.lgamma((n_h - 1) / 2.0))
    tau = (
        gamma
        * max_frequency
        * effective_baseline
        * (1.0 - power) ** (0.5 * (n_k - 1))
        * math.sqrt(0.5 * n_h * power)
    )
    fap_single = (1.0 - power) ** (0.5 * n_k)
    return float(-math.expm1(-tau) + fap_single * math.exp(-tau))


def period_search(t: np.ndarray, mag: np.ndarray, err: np.ndarray, spec: VariabilitySpec) -> dict:
    """Best Lomb-Scargle period, its power and false-alarm probability, and the Fourier terms there.

    The whole frequency range is searched with light-curve's FFT periodogram (``samples_per_peak``
    points per peak width 1/span); its ``PEAKS`` highest peaks inside [min_period, max_period] are
    refined with the generalised (floating-mean, error-weighted) Lomb-Scargle power
    (``lomb_scargle_power``, equal to astropy's) on a local grid 20x finer, and the best one is kept;
    the false-alarm probability is Baluev's (2008, ``baluev_fap``, equal to astropy's).
    The coarse grid is the cost (``2**k`` points, ``k = ceil(log2(span * samples_per_peak /
    min_period))``): 3 samples per peak with 5 peaks refined 20x recover the periods that 10 samples
    with 3 peaks refined 10x did (every class, both mock cadences, to 0.1%), at a quarter of the cost."""
    span = float(t[-1] - t[0])
    max_period = min(spec.max_period or span, span)
    if span <= 0 or max_period <= spec.min_period:
        return dict.fromkeys(PERIOD_FEATURE_NAMES, float("nan"))
    fmin, fmax = 1.0 / max_period, 1.0 / spec.min_period
    log2_size = max(10, math.ceil(math.log2(fmax * span * spec.samples_per_peak)))
    single = [np.asarray(x, dtype=np.float32) for x in (t - t[0], mag, err)]
    coarse = _periodogram(log2_size, TWO_PI * fmax)(*single, sorted=True, check=False)
    step = fmax / 2**log2_size
    periods = coarse[0::2]
    with np.errstate(divide="ignore", invalid="ignore"):
        peaks = 1.0 / periods[np.isfinite(periods) & (periods > 0)]
    peaks = np.round(peaks / step) * step  # back onto the grid, exactly: float32 rounded the periods
    peaks = peaks[(peaks >= fmin) & (peaks <= fmax)]
    if not len(peaks):
        return dict.fromkeys(PERIOD_FEATURE_NAMES, float("nan"))
    # each peak's np.linspace(lo, hi, REFINE_POINTS), all in one array (the same numbers linspace gives)
    lo = np.maximum(peaks - 1.5 * step, fmin)
    hi = np.minimum(peaks + 1.5 * step, fmax)
    fine = lo[:, None] + np.arange(REFINE_POINTS) * ((hi - lo) / (REFINE_POINTS - 1))[:, None]
    fine[:, -1] = hi
    power = lomb_scargle_power(t, mag, err, fine).ravel()
    i = int(np.argmax(power))
    best_f, best_p = float(fine.flat[i]), float(power[i])
    period = 1.0 / best_f
    return {
        "period": period,
        "period_power": best_p,
        "period_fap": baluev_fap(best_p, fmax, t, err),
        **fourier_terms(t, mag, err, period, spec.harmonics),
    }


def lightcurve_features(t, mag, err, spec: VariabilitySpec | None = None) -> dict[str, float]:
    """Every feature of one single-band light curve (NaN where it has fewer than ``min_epochs`` points)."""
    return features_of_many([(t, mag, err)], spec).iloc[0].to_dict()


def features_of_many(curves: list[tuple], spec: VariabilitySpec | None = None) -> pd.DataFrame:
    """Features of many single-band light curves ``(time, mag, err)``: one row per curve, in order."""
    spec = spec or VariabilitySpec()
    out = np.full((len(curves), len(VARIABILITY_FEATURES)), np.nan)
    good = []
    for i, (t, m, e) in enumerate(curves):
        t, m, e = (np.asarray(x, dtype=np.float64) for x in (t, m, e))
        ok = np.isfinite(t) & np.isfinite(m) & np.isfinite(e) & (e > 0)
        t, m, e = t[ok], m[ok], e[ok]
        out[i, 0] = len(t)
        if len(t) >= spec.min_epochs and np.ptp(m) > 0:
            order = np.argsort(t, kind="stable")
            good.append((i, t[order], m[order], e[order]))
    if not good:
        return pd.DataFrame(out, columns=VARIABILITY_FEATURES)
    extractor = lc_extractor()
    lc_values = extractor.many([(t, m, e) for _, t, m, e in good], sorted=True, check=False, n_jobs=1)
    names = list(extractor.names)  # LinearTrend adds linear_trend_sigma/_noise, which are not kept
    keep = [j for j, n in enumerate(names) if n in LC_FEATURE_NAMES]
    lc_cols = [1 + LC_FEATURE_NAMES.index(names[j]) for j in keep]
    rows = np.array([i for i, *_ in good])
    out[np.ix_(rows, lc_cols)] = np.asarray(lc_values)[:, keep]
    base = 1 + len(LC_FEATURE_NAMES)
    for i, t, m, e in good:
        j, _, l_index = stetson_jkl(m, e)
        out[i, base], out[i, base + 1] = j, l_index
        found = period_search(t, m, e, spec)
        out[i, base + 2 : base + 2 + len(PERIOD_FEATURE_NAMES)] = [found[n] for n in PERIOD_FEATURE_NAMES]
    return pd.DataFrame(out, columns=VARIABILITY_FEATURES)


def feature_columns(spec: VariabilitySpec, bands: list[str]) -> list[str]:
    """Output column names: ``<band>_<feature>`` per band, or plain names for one unnamed band."""
    if not bands:
        return list(VARIABILITY_FEATURES)
    return [f"{b}_{f}" for b in bands for f in VARIABILITY_FEATURES]


def partition_features(frame: pd.DataFrame, lc_column: str, spec: VariabilitySpec) -> pd.DataFrame:
    """The object rows of one partition (light curves nested in ``lc_column``) with their features."""
    if lc_column not in frame.columns:
        raise VariabilityError(
            f"no light-curve column {lc_column!r} (columns: {', '.join(map(str, frame.columns))})"
        )
    curves = frame[lc_column]
    bands = list(spec.bands)
    if isinstance(curves.dtype, pd.ArrowDtype) and pa.types.is_struct(curves.dtype.pyarrow_dtype):
        per_band = _curves_from_arrow(pa.chunked_array(curves.array._pa_array).combine_chunks(), spec, bands)
    else:
        per_band = _curves_from_records(curves, spec, bands)
    pieces = []
    for b, curves_b in per_band.items():
        feats = features_of_many(curves_b, spec)
        if b:
            feats.columns = [f"{b}_{c}" for c in feats.columns]
        pieces.append(feats)
    feats = pd.concat(pieces, axis=1)
    feats.index = frame.index
    return pd.concat([frame.drop(columns=[lc_column]), feats], axis=1)


def _curves_from_arrow(
    struct: pa.StructArray, spec: VariabilitySpec, bands: list[str]
) -> dict[str, list[tuple]]:
    """Each row's ``(time, mag, err)`` per band, sliced from the Arrow list columns' flat values: the
    light curves as Python objects (``as_py`` per row) cost about as much as their features."""
    names = [struct.type.field(i).name for i in range(struct.type.num_fields)]
    children = dict(zip(names, struct.flatten()))
    wanted = [spec.time_field, spec.mag_field, spec.err_field]
    n = len(struct)
    per_band: dict[str, list[tuple]] = {b: [] for b in bands} if bands else {"": []}
    if any(f not in children for f in wanted):
        empty = (np.empty(0),) * 3
        for curves in per_band.values():
            curves.extend([empty] * n)
        return per_band
    offsets, values = [], []
    for f in wanted:
        lists = children[f]
        offsets.append(lists.offsets.to_numpy())
        values.append(np.asarray(lists.values.to_numpy(zero_copy_only=False), dtype=np.float64))
    if not (np.array_equal(offsets[0], offsets[1]) and np.array_equal(offsets[0], offsets[2])):
        raise VariabilityError(
            f"light curve fields {spec.time_field}/{spec.mag_field}/{spec.err_field} differ in length"
        )
    start, (t_all, m_all, e_all) = offsets[0], values
    in_band = {}
    if bands:
        band_lists = children.get(spec.band_field)
        band_values = band_lists.values if band_lists is not None else None
        for b in bands:
            in_band[b] = (
                np.asarray(pc.fill_null(pc.equal(pc.cast(band_values, pa.string()), b), False))
                if band_values is not None and np.array_equal(band_lists.offsets.to_numpy(), start)
                else np.zeros(len(t_all), dtype=bool)
            )
    null = np.asarray(struct.is_null())
    for i in range(n):
        rows = slice(start[i], start[i] if null[i] else start[i + 1])
        t, m, e = t_all[rows], m_all[rows], e_all[rows]
        if bands:
            for b in bands:
                sel = in_band[b][rows]
                per_band[b].append((t[sel], m[sel], e[sel]))
        else:
            per_band[""].append((t, m, e))
    return per_band


def _curves_from_records(
    curves: pd.Series, spec: VariabilitySpec, bands: list[str]
) -> dict[str, list[tuple]]:
    """Each row's ``(time, mag, err)`` per band from Python values (dicts, nested-pandas frames)."""
    per_band: dict[str, list[tuple]] = {b: [] for b in bands} if bands else {"": []}
    for value in curves:
        record = _as_record(value)
        t = np.asarray(record.get(spec.time_field, []), dtype=np.float64)
        m = np.asarray(record.get(spec.mag_field, []), dtype=np.float64)
        e = np.asarray(record.get(spec.err_field, []), dtype=np.float64)
        if len(t) and not (len(t) == len(m) == len(e)):
            raise VariabilityError(
                f"light curve fields {spec.time_field}/{spec.mag_field}/{spec.err_field} differ in length"
            )
        if bands:
            band = np.asarray(record.get(spec.band_field, []), dtype=object)
            for b in bands:
                sel = band == b
                per_band[b].append((t[sel], m[sel], e[sel]))
        else:
            per_band[""].append((t, m, e))
    return per_band


def _as_record(value) -> dict:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    if isinstance(value, dict):
        return value
    if hasattr(value, "to_dict"):  # a nested-pandas row (a DataFrame of the object's detections)
        frame = value if isinstance(value, pd.DataFrame) else pd.DataFrame(value)
        return {c: frame[c].to_numpy() for c in frame.columns}
    raise VariabilityError(f"cannot read a light curve from a value of type {type(value).__name__}")


@dataclass
class VariabilityResult:
    out: str
    rows: int
    columns: list[str]

    def summary(self) -> str:
        return f"{len(self.columns)} variability features for {self.rows:,} objects -> {self.out}"


def variability_catalog(
    catalog,
    out: str,
    spec: VariabilitySpec | None = None,
    lc_column: str = "lc",
    client=None,
    progress: bool = True,
) -> VariabilityResult:
    """Features of every object's light curve (nested in ``lc_column``), written as a new catalog
    with the object columns and ``<band>_<feature>`` columns (the light curves themselves are left out)."""
    import functools as _ft

    from survey_engine.catalog.catalog import Catalog, open_catalog

    spec = spec or VariabilitySpec()
    cat = catalog if isinstance(catalog, Catalog) else open_catalog(catalog, margin=None)
    if lc_column not in cat.schema.names:
        raise VariabilityError(
            f"{cat.path}: no light-curve column {lc_column!r}; attach detections first "
            "(survey-engine lightcurves)"
        )
    if not spec.bands and spec.band_field:
        spec.bands = _bands_in(cat, lc_column, spec.band_field)
    derived = cat.map_partitions(_ft.partial(partition_features, lc_column=lc_column, spec=spec))
    derived.write(out, client=client, progress=progress)
    return VariabilityResult(
        out=str(out),
        rows=derived.row_count() if not derived.filtered else _rows(out),
        columns=feature_columns(spec, spec.bands),
    )


def _rows(out: str) -> int:
    from survey_engine.catalog.catalog import open_catalog

    return open_catalog(out).row_count()


def _bands_in(cat, lc_column: str, band_field: str) -> list[str]:
    """The bands present in the first partition's light curves (sorted), so every partition gets the same columns."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for f in cat.partition_files():
        col = pq.read_table(f, columns=[lc_column]).column(0).combine_chunks()
        if band_field not in [col.type.field(i).name for i in range(col.type.num_fields)]:
            return []
        values = pc.unique(pc.list_flatten(col.field(band_field))).to_pylist()
        if values:
            return sorted(str(v) for v in values if v is not None)
    return []
