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
from survey_engine.errors import SurveyEngineError


class SelectionError(SurveyEngineError, ValueError):
    """A cone, box, polygon or pixel list that does not describe a region; says what is wrong."""


def _check_radec(ra: float, dec: float, what: str) -> None:
    if not np.isfinite(ra) or not np.isfinite(dec) or not -90 <= dec <= 90:
        raise SelectionError(f"{what}: invalid position ra={ra}, dec={dec} (dec must be within [-90, 90])")


def _cdshealpix(func, *args, what: str):
    """Call a cdshealpix search; its Rust panics (``PanicException`` derives from BaseException,
    not Exception) become a ``SelectionError`` instead of escaping every ``except Exception``."""
    try:
        return func(*args)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - pyo3's PanicException
        raise SelectionError(
            f"{what}: cdshealpix cannot compute this region ({type(exc).__name__}: {exc})"
        ) from None


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
    deep = np.concatenate(
        [
            np.arange(s >> (2 * (SPATIAL_INDEX_ORDER - d)), e >> (2 * (SPATIAL_INDEX_ORDER - d)))
            for s, e in zip(start, stop)
        ]
    )
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
        raise SelectionError(f"cone radius must be positive, got {radius_arcsec}")
    radius_deg = min(radius_arcsec / 3600.0, 180.0)
    depth = _depth_for(np.radians(radius_deg))
    ipix, d, _ = _cdshealpix(
        cdsn.cone_search, Longitude(ra, u.deg), Latitude(dec, u.deg), radius_deg * u.deg, depth, what="cone"
    )
    return _coverage(ipix, d)


def cone_filter(ra_col: str, dec_col: str, ra: float, dec: float, radius_arcsec: float):
    limit = radius_arcsec / 3600.0

    def _filter(df: pd.DataFrame) -> pd.DataFrame:
        sep = angular_separation_deg(df[ra_col].to_numpy(float), df[dec_col].to_numpy(float), ra, dec)
        return df[sep <= limit]

    return _filter


def box_ra_limits(ra_min: float, ra_max: float) -> tuple[float, float] | None:
    """RA limits wrapped into [0, 360], or None for the whole RA range.

    As in hats / LSDB, equal limits after wrapping (``(0, 0)``, ``(360, 0)``, ``(0, 360)``,
    ``(10, 370)``) mean the whole RA range; ``ra_min > ra_max`` wraps through 0."""
    if not (np.isfinite(ra_min) and np.isfinite(ra_max)):
        raise SelectionError(f"box: RA limits must be finite, got ra_min={ra_min}, ra_max={ra_max}")
    lo, hi = float(ra_min) % 360.0, float(ra_max) % 360.0
    if lo == hi:
        return None
    return lo, hi


def _check_box_dec(dec_min: float, dec_max: float) -> None:
    if not (np.isfinite(dec_min) and np.isfinite(dec_max) and -90 <= dec_min < dec_max <= 90):
        raise SelectionError(
            f"box: need -90 <= dec_min < dec_max <= 90, got dec_min={dec_min}, dec_max={dec_max}"
            + (" (a box of zero height holds no area; widen it or use a cone)" if dec_min == dec_max else "")
        )


def box_coverage(ra_min: float, ra_max: float, dec_min: float, dec_max: float):
    import astropy.units as u
    import cdshealpix.nested as cdsn
    from astropy.coordinates import Latitude, Longitude

    _check_box_dec(dec_min, dec_max)
    limits = box_ra_limits(ra_min, ra_max)
    if limits is None:
        spans = [(0.0, 360.0)]
    else:
        lo, hi = limits
        spans = [(lo, hi)] if lo < hi else [(lo, 360.0), (0.0, hi)]
    spans = [(lo, hi) for lo, hi in spans if hi > lo]
    width = max(min(e - s for s, e in spans), dec_max - dec_min, 1e-6)
    depth = _depth_for(np.radians(width))
    starts, stops = [], []
    for lo, hi in spans:
        ipix, d, _ = _cdshealpix(
            # Longitude(360) wraps to 0; the neighbour ring added by _coverage covers the sliver.
            cdsn.zone_search,
            Longitude(lo, u.deg),
            Latitude(dec_min, u.deg),
            Longitude(min(hi, 360.0 - 1e-9), u.deg),
            Latitude(dec_max, u.deg),
            depth,
            what="box",
        )
        s, e = _coverage(ipix, d)
        starts.append(s)
        stops.append(e)
    return normalise_ranges(np.concatenate(starts), np.concatenate(stops))


def box_filter(ra_col: str, dec_col: str, ra_min: float, ra_max: float, dec_min: float, dec_max: float):
    _check_box_dec(dec_min, dec_max)
    limits = box_ra_limits(ra_min, ra_max)

    def _filter(df: pd.DataFrame) -> pd.DataFrame:
        ra = df[ra_col].to_numpy(float) % 360.0
        dec = df[dec_col].to_numpy(float)
        if limits is None:
            in_ra = np.ones(len(ra), dtype=bool)
        else:
            lo, hi = limits
            in_ra = (ra >= lo) & (ra <= hi) if lo < hi else (ra >= lo) | (ra <= hi)
        return df[in_ra & (dec >= dec_min) & (dec <= dec_max)]

    return _filter


def polygon_coverage(vertices):
    import astropy.units as u
    import cdshealpix.nested as cdsn
    from astropy.coordinates import Latitude, Longitude

    ra, dec = _polygon_arrays(vertices)
    size = np.radians(max(np.ptp(dec), 1e-6))
    ipix, d, _ = _cdshealpix(
        cdsn.polygon_search, Longitude(ra, u.deg), Latitude(dec, u.deg), _depth_for(size), what="polygon"
    )
    return _coverage(ipix, d)


# Vertices closer than this (radians, ~0.2 milliarcsecond) are the same point.
_SAME_VERTEX_RAD = 1e-9


def _polygon_arrays(vertices):
    """(ra, dec) arrays of a valid polygon: at least 3 distinct vertices, convex, no three
    consecutive vertices on one great circle (hats / LSDB refuse the same polygons)."""
    arr = np.asarray(vertices, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3:
        raise SelectionError("polygon: give at least 3 (ra, dec) vertices")
    for r, d in arr:
        _check_radec(r, d, "polygon vertex")
    xyz = radec_to_xyz(arr[:, 0], arr[:, 1])
    for i in range(len(arr)):
        for j in range(i + 1, len(arr)):
            if np.linalg.norm(xyz[i] - xyz[j]) < _SAME_VERTEX_RAD:
                closing = (
                    " (the polygon closes itself: do not repeat the first vertex at the end)"
                    if (i, j) == (0, len(arr) - 1)
                    else ""
                )
                raise SelectionError(
                    f"polygon: vertex {j} ({arr[j, 0]:g}, {arr[j, 1]:g}) is the same point as vertex {i} ({arr[i, 0]:g}, {arr[i, 1]:g}); "
                    f"give each vertex once{closing}"
                )
    turns = np.einsum("ij,ij->i", np.cross(xyz, np.roll(xyz, -1, axis=0)), np.roll(xyz, -2, axis=0))
    scale = np.linalg.norm(np.cross(xyz, np.roll(xyz, -1, axis=0)), axis=1) * np.linalg.norm(
        np.cross(np.roll(xyz, -1, axis=0), np.roll(xyz, -2, axis=0)), axis=1
    )
    flat = np.abs(turns) <= 1e-12 + 1e-9 * scale
    if flat.any():
        k = int(np.flatnonzero(flat)[0])
        idx = [k, (k + 1) % len(arr), (k + 2) % len(arr)]
        raise SelectionError(
            f"polygon: vertices {idx} lie on one great circle (a degenerate corner); drop the middle one"
        )
    if not (np.all(turns > 0) or np.all(turns < 0)):
        raise SelectionError(
            "polygon: must be convex (as in hats and LSDB); split a concave region into convex polygons"
        )
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
        raise SelectionError("polygon: must be smaller than a hemisphere")
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
        idx = (
            df.index.to_numpy(np.int64)
            if df.index.name == "_healpix_29"
            else df["_healpix_29"].to_numpy(np.int64)
        )
        i = np.searchsorted(cstop, idx, side="right")
        ok = i < len(cstart)
        inside = np.zeros(len(idx), dtype=bool)
        inside[ok] = cstart[i[ok]] <= idx[ok]
        return df[inside]

    return _filter


def pixel_coverage(pixels) -> tuple[np.ndarray, np.ndarray]:
    """Order-29 ranges of a non-empty list of (order, nested pixel) pairs, each checked."""
    pairs = list(pixels)
    if not pairs:
        raise SelectionError(
            "pixel_search: give at least one (order, pixel) pair; an empty list selects nothing"
        )
    for item in pairs:
        try:
            order, pix = (int(v) for v in item)
        except (TypeError, ValueError):
            raise SelectionError(f"pixel_search: {item!r} is not an (order, pixel) pair") from None
        if not 0 <= order <= SPATIAL_INDEX_ORDER or not 0 <= pix < 12 * 4**order:
            raise SelectionError(
                f"pixel_search: ({order}, {pix}) is not a HEALPix pixel (order 0..29, pixel 0..12*4**order-1)"
            )
    orders = np.array([int(o) for o, _ in pairs], dtype=np.int64)
    pix = np.array([int(p) for _, p in pairs], dtype=np.int64)
    return normalise_ranges(*pixel_range29(orders, pix))
