"""Features declared by name, so that training and application compute exactly the same thing.

A feature is one of:

* a column name (``r``, ``MAGERR_R``, ``BP-RP`` if that is a column);
* a colour ``a-b`` of two columns (``u-g``, ``MAG_G-MAG_R``), dereddened when an E(B-V) column is set;
* ``dered(col)``: the magnitude corrected for extinction, ``col - R(col) * E(B-V)``;
* ``snr(err)``: signal-to-noise from a magnitude error, ``2.5 / ln(10) / err``;
* ``absmag(col)``: absolute magnitude from the parallax, ``col + 5 log10(parallax / 100 mas)``;
* ``distance``: ``1000 / parallax`` in pc; ``pm_total``: ``hypot(pmra, pmdec)`` in mas/yr;
  ``v_tan``: ``4.74047 * pm_total / parallax`` in km/s; ``gal_l`` / ``gal_b``: Galactic coordinates;
  ``pos_x`` / ``pos_y`` / ``pos_z``: the position as a unit vector scaled to degrees (distances
  between nearby rows in degrees, with no jump at RA 0/360 or at the poles: for clustering).

Parallax-based features are NaN where ``parallax / parallax_error`` is below the quality cut (or
the parallax is not positive). Sentinel values in the input columns (e.g. 99, -9999, as SDSS and
many catalogs use for "no measurement") and infinities become NaN first. Missing values then
follow ``missing``: ``nan`` passes NaN to the model (XGBoost learns a direction for it; the
default), ``impute`` replaces them by the training medians (learned by ``fit``), ``drop`` drops
training rows with any missing feature (at application such rows get NaN predictions).
Text in a numeric input column (``"n/a"``, ``"abc"``) is an error naming the column and the first
bad row, unless ``text_as_missing`` (the CLI's explicit ``--missing``) makes it a missing value.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from survey_engine.errors import SurveyEngineError

# R = A / E(B-V) for R_V = 3.1 (SDSS ugriz: Schlafly & Finkbeiner 2011, table 6; Gaia: Casagrande
# & VandenBerg 2018, mean values). Matched on the column name, case-insensitively.
EXTINCTION_R = {
    "u": 4.239,
    "g": 3.303,
    "r": 2.285,
    "i": 1.698,
    "z": 1.263,
    "phot_g_mean_mag": 2.740,
    "phot_bp_mean_mag": 3.374,
    "phot_rp_mean_mag": 2.035,
}
_BAND = re.compile(
    r"^(?:mag_?|dered_?|model_?mag_?|psf_?mag_?|cmodel_?mag_?|petro_?mag_?)?([ugriz])(?:_?mag)?$", re.I
)
DEFAULT_SENTINELS = (99.0, -99.0, 999.0, -999.0, 9999.0, -9999.0, 99999.0, -99999.0)
MISSING_POLICIES = ("nan", "impute", "drop")
_FUNC = re.compile(r"^(dered|snr|absmag)\((.+)\)$")
_NAMED = ("distance", "pm_total", "v_tan", "gal_l", "gal_b", "pos_x", "pos_y", "pos_z")
LOG10_E_2_5 = 2.5 / math.log(10)


class FeatureError(SurveyEngineError, ValueError):
    """A feature that cannot be computed from the given columns (the message names the column)."""


def extinction_coefficient(column: str) -> float | None:
    key = column.lower()
    if key in EXTINCTION_R:
        return EXTINCTION_R[key]
    m = _BAND.match(column)
    return EXTINCTION_R[m.group(1).lower()] if m else None


@dataclass
class FeatureSpec:
    features: list[str]
    ebv_column: str | None = None
    ra_column: str = "ra"
    dec_column: str = "dec"
    parallax_column: str = "parallax"
    parallax_error_column: str = "parallax_error"
    pmra_column: str = "pmra"
    pmdec_column: str = "pmdec"
    min_parallax_over_error: float = 5.0
    sentinels: tuple[float, ...] = DEFAULT_SENTINELS
    missing: str = "nan"
    impute_values: dict[str, float] = field(default_factory=dict)
    text_as_missing: bool = False  # text in a numeric input column: an error (default) or a missing value

    def __post_init__(self) -> None:
        if isinstance(self.features, str):
            self.features = [f.strip() for f in self.features.split(",") if f.strip()]
        if not self.features:
            raise FeatureError("no features given")
        if len(set(self.features)) != len(self.features):
            raise FeatureError(f"a feature is listed twice: {self.features}")
        if self.missing not in MISSING_POLICIES:
            raise FeatureError(
                f"missing-value policy must be one of {MISSING_POLICIES}, got {self.missing!r}"
            )
        self.sentinels = tuple(float(s) for s in self.sentinels)

    # -- what is needed ----------------------------------------------------------------------
    def plan(self, columns: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
        """(feature, kind, input columns) for each feature, checked against ``columns``."""
        have = set(columns)
        out = []
        for feat in self.features:
            kind, inputs = self._parse(feat, have)
            missing = [c for c in inputs if c not in have]
            if missing:
                raise FeatureError(
                    f"feature {feat!r} needs column(s) {missing}, which the data do not have (columns: {sorted(have)[:40]})"
                )
            out.append((feat, kind, inputs))
        return out

    def required_columns(self, columns: list[str]) -> list[str]:
        need: list[str] = []
        for _, _, inputs in self.plan(columns):
            need += [c for c in inputs if c not in need]
        return need

    def _parse(self, feat: str, have: set[str]) -> tuple[str, tuple[str, ...]]:
        ebv = (self.ebv_column,) if self.ebv_column else ()
        if feat in have:
            return "column", (feat,)
        m = _FUNC.match(feat)
        if m:
            func, arg = m.group(1), m.group(2).strip()
            if func == "dered":
                if not self.ebv_column:
                    raise FeatureError(f"feature {feat!r} needs an E(B-V) column (ebv_column / --ebv)")
                return "dered", (arg,) + ebv
            if func == "snr":
                return "snr", (arg,)
            return "absmag", (arg, self.parallax_column, self.parallax_error_column)
        if feat in ("distance",):
            return feat, (self.parallax_column, self.parallax_error_column)
        if feat == "pm_total":
            return feat, (self.pmra_column, self.pmdec_column)
        if feat == "v_tan":
            return feat, (
                self.pmra_column,
                self.pmdec_column,
                self.parallax_column,
                self.parallax_error_column,
            )
        if feat in ("gal_l", "gal_b", "pos_x", "pos_y", "pos_z"):
            return feat, (self.ra_column, self.dec_column)
        # a colour: the one split at a '-' where both sides are columns
        for i, ch in enumerate(feat):
            if ch == "-" and feat[:i].strip() in have and feat[i + 1 :].strip() in have:
                return "colour", (feat[:i].strip(), feat[i + 1 :].strip()) + (ebv if self.ebv_column else ())
        if "-" in feat:
            a, _, b = feat.partition("-")
            missing = [c for c in (a.strip(), b.strip()) if c not in have]
            raise FeatureError(f"colour {feat!r}: column(s) {missing} not in the data")
        raise FeatureError(
            f"feature {feat!r}: no such column, and not a known feature (a-b, dered(), snr(), absmag(), {', '.join(_NAMED)})"
        )

    # -- computing ---------------------------------------------------------------------------
    def compute(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The feature matrix (float64, one column per feature, same index) of a pandas frame."""
        return self.impute(self.compute_raw(frame))

    def impute(self, features: pd.DataFrame) -> pd.DataFrame:
        """Missing values filled with the training medians under ``missing='impute'``; else as they are."""
        if self.missing == "impute" and self.impute_values:
            features = features.fillna({k: v for k, v in self.impute_values.items() if k in features.columns})
        return features

    def inputs_by_feature(self, columns: list[str]) -> dict[str, list[str]]:
        """Each feature's input columns (which features one missing column takes away)."""
        return {feat: list(inputs) for feat, _, inputs in self.plan(columns)}

    def compute_raw(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The features before imputation (NaN where an input is missing, a sentinel or not finite).
        Text in a numeric input column is a FeatureError naming the column and the first bad row,
        unless ``text_as_missing``."""
        plan = self.plan(list(frame.columns))
        clean: dict[str, np.ndarray] = {}

        def col(name: str) -> np.ndarray:
            if name not in clean:
                clean[name] = self._clean_column(frame[name], name)
            return clean[name]

        with np.errstate(invalid="ignore", divide="ignore"):
            out = {feat: self._feature(kind, inputs, col) for feat, kind, inputs in plan}
        return pd.DataFrame(out, index=frame.index)

    def _clean_column(self, raw: pd.Series, name: str) -> np.ndarray:
        """A numeric input as float64, NaN where missing, a sentinel or not finite; text is an error
        naming the column and its first bad row (unless ``text_as_missing``)."""
        numeric = pd.to_numeric(raw, errors="coerce")
        if not self.text_as_missing and not pd.api.types.is_numeric_dtype(raw.dtype):
            text = numeric.isna().to_numpy() & raw.notna().to_numpy()
            if text.any():
                text &= raw.astype("string").str.strip().fillna("").ne("").to_numpy(dtype=bool)
            if text.any():
                first = int(np.argmax(text))
                raise FeatureError(
                    f"column {name!r} holds text where numbers are expected: {raw.iloc[first]!r} in row {first} of this "
                    f"partition (index {raw.index[first]!r}), {int(text.sum())} such rows; fix the data, or pass "
                    f"--missing nan (or impute / drop) to treat them as missing values"
                )
        values = numeric.to_numpy(dtype=np.float64, na_value=np.nan).copy()
        bad = ~np.isfinite(values)
        if self.sentinels:
            bad |= np.isin(values, self.sentinels)
        values[bad] = np.nan
        return values

    def _dered(self, name: str, col) -> np.ndarray:
        """A magnitude corrected for extinction (as read when there is no E(B-V) column)."""
        values = col(name)
        if not self.ebv_column:
            return values
        r = extinction_coefficient(name)
        if r is None:
            raise FeatureError(
                f"no extinction coefficient known for column {name!r} (known: ugriz and Gaia G/BP/RP names)"
            )
        return values - r * col(self.ebv_column)

    def _good_parallax(self, col) -> np.ndarray:
        plx, err = col(self.parallax_column), col(self.parallax_error_column)
        return (plx > 0) & (plx / err >= self.min_parallax_over_error)

    def _feature(self, kind: str, inputs: list[str], col) -> np.ndarray:
        """One feature's values from its kind and input columns (``col`` gives a cleaned column)."""
        if kind == "column":
            return col(inputs[0])
        if kind == "colour":
            return self._dered(inputs[0], col) - self._dered(inputs[1], col)
        if kind == "dered":
            return self._dered(inputs[0], col)
        if kind == "snr":
            err = col(inputs[0])
            return np.where(err > 0, LOG10_E_2_5 / err, np.nan)
        if kind == "absmag":
            plx = col(self.parallax_column)
            return np.where(self._good_parallax(col), col(inputs[0]) + 5 * np.log10(plx / 100.0), np.nan)
        if kind == "distance":
            return np.where(self._good_parallax(col), 1000.0 / col(self.parallax_column), np.nan)
        if kind == "pm_total":
            return np.hypot(col(self.pmra_column), col(self.pmdec_column))
        if kind == "v_tan":
            pm = np.hypot(col(self.pmra_column), col(self.pmdec_column))
            return np.where(self._good_parallax(col), 4.74047 * pm / col(self.parallax_column), np.nan)
        if kind in ("pos_x", "pos_y", "pos_z"):
            ra_r, dec_r = np.radians(col(self.ra_column)), np.radians(col(self.dec_column))
            xyz = {
                "pos_x": np.cos(dec_r) * np.cos(ra_r),
                "pos_y": np.cos(dec_r) * np.sin(ra_r),
                "pos_z": np.sin(dec_r),
            }
            return np.degrees(xyz[kind])
        if kind in ("gal_l", "gal_b"):
            l, b = galactic(col(self.ra_column), col(self.dec_column))
            return l if kind == "gal_l" else b
        raise AssertionError(kind)  # pragma: no cover - _parse knows every kind

    def fit(self, features: pd.DataFrame) -> None:
        """Learn what ``missing='impute'`` fills in (training medians); check no feature is all-NaN."""
        empty = [c for c in features.columns if not features[c].notna().any()]
        if empty:
            raise FeatureError(f"feature(s) {empty} are missing (NaN or a sentinel) in every training row")
        if self.missing == "impute":
            self.impute_values = {c: float(features[c].median()) for c in features.columns}

    def to_json(self) -> dict:
        d = asdict(self)
        d["sentinels"] = list(self.sentinels)
        return d

    @staticmethod
    def from_json(d: dict) -> "FeatureSpec":
        return FeatureSpec(**d)


def with_columns(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """``frame`` with ``columns`` (a mapping of arrays, or a frame on the same index) added at its
    end, a column of the same name replaced: one new frame built in one step, sharing ``frame``'s
    columns (``assign`` inserts one column at a time, 10x slower for twenty columns)."""
    added = columns if isinstance(columns, pd.DataFrame) else pd.DataFrame(columns, index=frame.index)
    kept = frame.drop(columns=[c for c in added.columns if c in frame.columns])
    return pd.concat([kept, added], axis=1)


def galactic(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (l, b) in degrees from ICRS (ra, dec), with astropy's ICRS->Galactic rotation."""
    import astropy.units as u
    from astropy.coordinates import ICRS, Galactic

    ok = np.isfinite(ra_deg) & np.isfinite(dec_deg)
    l = np.full(len(ra_deg), np.nan)
    b = np.full(len(ra_deg), np.nan)
    if ok.any():
        g = ICRS(ra=ra_deg[ok] * u.deg, dec=dec_deg[ok] * u.deg).transform_to(Galactic())
        l[ok], b[ok] = g.l.deg, g.b.deg
    return l, b
