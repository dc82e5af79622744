"""Spatial selections: HEALPix coverage to prune partitions, exact row filters to apply after.

Coverages are sets of order-29 index ranges. They are conservative (one extra ring of pixels
around what cdshealpix reports), so pruning never drops a partition that holds a match; the
row filters then decide exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from survey_engine.catalog.healpix import (
    SPATIAL_INDEX_ORDER,
    angular_separation_deg,
    neighbours,
    pixel_range29,
    radec_to_xyz,
)


def _check_radec(ra: float, dec: float, what: str) -> None:
    if not np.isfinite(ra) or not np.isfinite(dec) or not -90 <= dec <= 90:
        raise ValueError(f"{what}: invalid position ra={ra}, dec={dec} (dec must be within [-90, 90])")


def _depth_for(size_rad: float) -> int:
    return int(np.clip(np.floor(np.log2(1.0233 / max(size_rad, 1e-9))) + 2, 0, 12))


def _coverage(ipix: np.ndarray, depth: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage from cdshealpix output, widened by one neighbour ring at the deepest order."""
    ipix = np.asarray(ipix, dtype=np.int64)
    depth = np.broadcast_to(np.asarray(depth, dtype=np.int64), ipix.shape)
    if ipix.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    d = int(depth.max())
    start, stop = pixel_range29(depth, ipix)
    # express at depth d, then add neighbours of the border cells
    deep = np.concatenate([np.arange(s >> (2 * (SPATIAL_INDEX_ORDER - d)), e >> (2 * (SPATIAL_INDEX_ORDER - d))) for s, e in zip(start, stop)])
    ring = neighbours(deep, d)
    allpix = np.union1d(deep, ring)
    return normalise_ranges(*pixel_range29(d, allpix))


def normalise_ranges(start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort and merge half-open ranges."""
    if len(start) == 0:
        return np.asarray(start, np.int64), np.asarray(stop, np.int64)
    order = np.argsort(start)
    start, stop = np.asarray(start)[order], np.asarray(stop)[order]
    out_s, out_e = [int(start[0])], [int(stop[0])]
    for s, e in zip(start[1:].tolist(), stop[1:].tolist()):
        if s <= out_e[-1]:
            out_e[-1] = max(out_e[-1], e)
        else:
            out_s.append(s)
            out_e.append(e)
    return np.array(out_s, np.int64), np.array(out_e, np.int64)


def ranges_overlap(start: np.ndarray, stop: np.ndarray, cov: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """For each half-open range [start, stop), whether it meets any coverage range."""
    cstart, cstop = cov
    if len(cstart) == 0:
        return np.zeros(len(start), dtype=bool)
    i = np.searchsorted(cstop, start, side="right")
    ok = i < len(cstart)
    out = np.zeros(len(start), dtype=bool)
    out[ok] = cstart[i[ok]] < stop[ok]
    return out


def cone_coverage(ra: float, dec: float, radius_arcsec: float):
    import astropy.units as u
    import cdshealpix.nested as cdsn
    from astropy.coordinates import Latitude, Longitude
    _check_radec(ra, dec, "cone centre")
    if not radius_arcsec > 0:
        raise ValueError(f"cone radius must be positive, got {radius_arcsec}")
    radius_deg = min(radius_arcsec / 3600.0, 180.0)
    depth = _depth_for(np.radians(radius_deg))
    ipix, d, _ = cdsn.cone_search(Longitude(ra, u.deg), Latitude(dec, u.deg), radius_deg * u.deg, depth)
    return _coverage(ipix, d)


def cone_filter(ra_col: str, dec_col: str, ra: float, dec: float, radius_arcsec: float):
    limit = radius_arcsec / 3600.0

    def _filter(df: pd.DataFrame) -> pd.DataFrame:
        sep = angular_separation_deg(df[ra_col].to_numpy(float), df[dec_col].to_numpy(float), ra, dec)
        return df[sep <= limit]

    return _filter


def box_coverage(ra_min: float, ra_max: float, dec_min: float, dec_max: float):
    import astropy.units as u
    import cdshealpix.nested as cdsn
    from astropy.coordinates import Latitude, Longitude
    if not -90 <= dec_min <= dec_max <= 90:
        raise ValueError(f"box: need -90 <= dec_min <= dec_max <= 90, got dec_min={dec_min}, dec_max={dec_max}")
    ra_min, ra_max = ra_min % 360.0, ra_max % 360.0 if ra_max != 360 else 360.0
    spans = [(ra_min, ra_max)] if ra_min <= ra_max else [(ra_min, 360.0), (0.0, ra_max)]
    width = max(min(e - s for s, e in spans), dec_max - dec_min, 1e-6)
    depth = _depth_for(np.radians(width))
    starts, stops = [], []
    for lo, hi in spans:
        ipix, d, _ = cdsn.zone_search(
            # Longitude(360) wraps to 0; the neighbour ring added by _coverage covers the sliver.
            Longitude(lo, u.deg), Latitude(dec_min, u.deg), Longitude(min(hi, 360.0 - 1e-9), u.deg), Latitude(dec_max, u.deg), depth
        )
        s, e = _coverage(ipix, d)
        starts.append(s)
        stops.append(e)
    return normalise_ranges(np.concatenate(starts), np.concatenate(stops))


def box_filter(ra_col: str, dec_col: str, ra_min: float, ra_max: float, dec_min: float, dec_max: float):
    lo, hi = ra_min % 360.0, (ra_max % 360.0 if ra_max != 360 else 360.0)

    def _filter(df: pd.DataFrame) -> pd.DataFrame:
        ra = df[ra_col].to_numpy(float)
        dec = df[dec_col].to_numpy(float)
        in_ra = (ra >= lo) & (ra <= hi) if lo <= hi else (ra >= lo) | (ra <= hi)
        return df[in_ra & (dec >= dec_min) & (dec <= dec_max)]

    return _filter


def polygon_coverage(vertices):
    import astropy.units as u
    import cdshealpix.nested as cdsn
    from astropy.coordinates import Latitude, Longitude
    ra, dec = _polygon_arrays(vertices)
    size = np.radians(max(np.ptp(dec), 1e-6))
    ipix, d, _ = cdsn.polygon_search(Longitude(ra, u.deg), Latitude(dec, u.deg), _depth_for(size))
    return _coverage(ipix, d)


def _polygon_arrays(vertices):
    arr = np.asarray(vertices, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3:
        raise ValueError("polygon: give at least 3 (ra, dec) vertices")
    for r, d in arr:
        _check_radec(r, d, "polygon vertex")
    return arr[:, 0], arr[:, 1]


def polygon_filter(ra_col: str, dec_col: str, vertices):
    """Exact inside test for great-circle polygons smaller than a hemisphere.

    Points are projected gnomonically about the polygon's centre, where great circles are
    straight lines, and tested with the even-odd rule.
    """
    vra, vdec = _polygon_arrays(vertices)
    vxyz = radec_to_xyz(vra, vdec)
    centre = vxyz.sum(axis=0)
    centre /= np.linalg.norm(centre)
    if np.any(vxyz @ centre <= 0):
        raise ValueError("polygon: must be smaller than a hemisphere")
    east = np.cross([0.0, 0.0, 1.0], centre)
    if np.linalg.norm(east) < 1e-12:
        east = np.array([1.0, 0.0, 0.0])
    east /= np.linalg.norm(east)
    north = np.cross(centre, east)

    def project(xyz):
        w = xyz @ centre
        return (xyz @ east) / w, (xyz @ north) / w, w

    px, py, _ = project(vxyz)

    def _filter(df: pd.DataFrame) -> pd.DataFrame:
        xyz = radec_to_xyz(df[ra_col].to_numpy(float), df[dec_col].to_numpy(float))
        x, y, w = project(xyz)
        inside = np.zeros(len(x), dtype=bool)
        n = len(px)
        for i in range(n):
            x1, y1, x2, y2 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
            crosses = (y1 > y) != (y2 > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (x < xint)
        return df[inside & (w > 0)]

    return _filter


def range_filter(cov):
    cstart, cstop = cov

    def _filter(df: pd.DataFrame) -> pd.DataFrame:
        idx = df.index.to_numpy(np.int64) if df.index.name == "_healpix_29" else df["_healpix_29"].to_numpy(np.int64)
        i = np.searchsorted(cstop, idx, side="right")
        ok = i < len(cstart)
        inside = np.zeros(len(idx), dtype=bool)
        inside[ok] = cstart[i[ok]] <= idx[ok]
        return df[inside]

    return _filter
