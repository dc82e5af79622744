"""Propagating positions to another epoch with proper motions, as astropy does.

The call and its conventions are those of ``SkyCoord.apply_space_motion``: ERFA ``pmsafe`` with
RA motion divided by cos(dec) (catalogs such as Gaia give ``pmra`` already multiplied by cos dec),
parallax in arcsec (0 when missing), radial velocity in km/s (0 when missing), epochs as Julian
years on the TDB scale. Rows without proper motions (NaN) keep their positions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from survey_engine.errors import MissingColumnError


def julian_year_to_jd(epoch) -> np.ndarray:
    return 2451545.0 + (np.asarray(epoch, dtype=np.float64) - 2000.0) * 365.25


def propagate(
    ra_deg, dec_deg, pmra_cosdec_mas_yr, pmdec_mas_yr, epoch_from, epoch_to, parallax_mas=None, rv_km_s=None
):
    """(ra, dec) in degrees at ``epoch_to`` (Julian years; scalars or per-row arrays)."""
    import erfa

    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    pmra = np.asarray(pmra_cosdec_mas_yr, dtype=np.float64)
    pmdec = np.asarray(pmdec_mas_yr, dtype=np.float64)
    moving = np.isfinite(pmra) & np.isfinite(pmdec)
    mas = np.pi / (180 * 3600 * 1000)
    cosd = np.cos(dec)
    pmr = np.where(moving, pmra, 0.0) * mas / np.where(cosd == 0, 1e-300, cosd)
    pmd = np.where(moving, pmdec, 0.0) * mas
    plx = (
        np.zeros_like(ra)
        if parallax_mas is None
        else np.nan_to_num(np.asarray(parallax_mas, dtype=np.float64), nan=0.0) / 1000.0
    )
    plx = np.maximum(plx, 0.0)
    rv = (
        np.zeros_like(ra)
        if rv_km_s is None
        else np.nan_to_num(np.asarray(rv_km_s, dtype=np.float64), nan=0.0)
    )
    jd1 = np.broadcast_to(julian_year_to_jd(epoch_from), ra.shape)
    jd2 = np.broadcast_to(julian_year_to_jd(epoch_to), ra.shape)
    with (
        warnings.catch_warnings()
    ):  # ERFA notes each row without a parallax, which then gets its default distance
        warnings.filterwarnings("ignore", category=erfa.ErfaWarning)
        out = erfa.pmsafe(ra, dec, pmr, pmd, plx, rv, jd1, np.zeros_like(ra), jd2, np.zeros_like(ra))
    new_ra, new_dec = np.degrees(out[0]) % 360.0, np.degrees(out[1])
    return np.where(moving, new_ra, np.asarray(ra_deg, float)), np.where(
        moving, new_dec, np.asarray(dec_deg, float)
    )


@dataclass(frozen=True)
class EpochSpec:
    """How to move one catalog's rows: its epoch (a year, or the name of a per-row epoch column)."""

    epoch: float | str
    pmra: str = "pmra"
    pmdec: str = "pmdec"
    parallax: str | None = None
    radial_velocity: str | None = None

    def columns(self) -> list[str]:
        cols = [self.pmra, self.pmdec]
        cols += [c for c in (self.parallax, self.radial_velocity) if c]
        if isinstance(self.epoch, str):
            cols.append(self.epoch)
        return cols

    def positions_at(
        self, frame: pd.DataFrame, ra: str, dec: str, target: float
    ) -> tuple[np.ndarray, np.ndarray]:
        missing = [c for c in self.columns() if c not in frame.columns]
        if missing:
            raise MissingColumnError(
                f"epoch propagation needs column(s) {missing}; the catalog has {list(frame.columns)}"
            )
        epoch = frame[self.epoch].to_numpy(float) if isinstance(self.epoch, str) else float(self.epoch)
        return propagate(
            frame[ra].to_numpy(float),
            frame[dec].to_numpy(float),
            frame[self.pmra].to_numpy(float),
            frame[self.pmdec].to_numpy(float),
            epoch,
            target,
            frame[self.parallax].to_numpy(float) if self.parallax else None,
            frame[self.radial_velocity].to_numpy(float) if self.radial_velocity else None,
        )


def max_shift_arcsec(catalog, spec: EpochSpec, target: float) -> float:
    """Largest distance any row of ``catalog`` moves to reach ``target`` (one pass over the columns)."""
    ddf = catalog.select_columns(spec.columns()).to_dask()
    pm = np.hypot(ddf[spec.pmra].abs().max().compute(), ddf[spec.pmdec].abs().max().compute())
    if isinstance(spec.epoch, str):
        col = ddf[spec.epoch]
        dt = max(abs(target - float(col.min().compute())), abs(target - float(col.max().compute())))
    else:
        dt = abs(target - float(spec.epoch))
    pm = 0.0 if not np.isfinite(pm) else float(pm)
    # proper motion over dt, plus a generous allowance for the parallax / radial-velocity terms
    return pm * dt / 1000.0 * 1.01 + 1e-3
