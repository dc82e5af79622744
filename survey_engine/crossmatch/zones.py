"""The zones kernel: a compiled sweep over right rows sorted by declination zone, then RA.

The zones algorithm (Gray, Nieto-Santisteban & Szalay 2006, "The Zones Algorithm for Finding
Points-Near-a-Point or Cross-Matching Spatial Datasets"): right rows are bucketed into horizontal
declination strips (a counting sort, O(n)) and sorted by RA inside each strip. For a left row,
only the strips its radius touches are visited, and in each only the RA window
``asin(sin r / cos |dec|max)`` wide (the exact RA half-width of a circle, taken at the band's
highest |dec|, so a superset; computed once per strip), found by binary search; strips whose
rows' circles reach a pole are searched whole, windows that cross RA 0/360 are searched on both
sides. Left rows are visited by strip (a counting sort), not in their stored HEALPix order, so the
strips and candidates they read stay in cache: the sweep took 0.042 s instead of 0.076 s on a
415k x 499k partition pair. Every candidate's chord on the unit
sphere is then compared with the radius, so the pairs are those of a brute-force search, with
the KD-tree's separations.

Compiled with numba (``cache=True``: the machine code is written beside this file on first use
and loaded from there after, so a fresh worker pays no compilation); ``nogil`` lets several
worker threads match at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from survey_engine.catalog.healpix import chord_for

EPS_DEG = 1e-8  # 36 micro-arcsec of slack on every window: rounding never drops a true pair


@njit(cache=True, nogil=True)
def _unit_vectors(ra, dec, rows):
    """Unit vectors of ``rows`` (in that order)."""
    n = len(rows)
    out = np.empty((n, 3))
    for j in range(n):
        i = rows[j]
        r = np.radians(ra[i])
        d = np.radians(dec[i])
        cd = np.cos(d)
        out[j, 0] = cd * np.cos(r)
        out[j, 1] = cd * np.sin(r)
        out[j, 2] = np.sin(d)
    return out


@njit(cache=True, nogil=True, inline="always")
def _zone_of(dec, dec0, height, nzones):
    z = int(np.floor((dec - dec0) / height))
    return min(max(z, 0), nzones - 1)


@njit(cache=True, nogil=True)
def _zone_order(dec, dec0, height, nzones):
    """Rows ordered by zone (a stable counting sort, O(n)), and each zone's start in that order."""
    n = len(dec)
    zone = np.empty(n, np.int64)
    starts = np.zeros(nzones + 1, np.int64)
    for i in range(n):
        z = _zone_of(dec[i], dec0, height, nzones)
        zone[i] = z
        starts[z + 1] += 1
    for z in range(nzones):
        starts[z + 1] += starts[z]
    fill = starts[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        order[fill[zone[i]]] = i
        fill[zone[i]] += 1
    return order, starts


@njit(cache=True, nogil=True)
def _build_zones(ra, dec, dec0, height, nzones):
    """Right rows ordered by (zone, RA): the order, each zone's start, and their RAs and Decs in
    that order. The rows are gathered once, then sorted within each zone on those contiguous
    copies (insertion sort, stable), so no comparison reads a row at random."""
    n = len(ra)
    order, starts = _zone_order(dec, dec0, height, nzones)
    sorted_ra = np.empty(n)
    sorted_dec = np.empty(n)
    for j in range(n):
        sorted_ra[j] = ra[order[j]]
        sorted_dec[j] = dec[order[j]]
    for z in range(nzones):
        s, e = starts[z], starts[z + 1]
        if e - s > 32:
            by_ra = np.argsort(sorted_ra[s:e], kind="mergesort")
            order[s:e] = order[s:e][by_ra]
            sorted_ra[s:e] = sorted_ra[s:e][by_ra]
            sorted_dec[s:e] = sorted_dec[s:e][by_ra]
        else:  # short strips (the usual case): insertion sort in place, stable
            for a in range(s + 1, e):
                row, row_ra, row_dec = order[a], sorted_ra[a], sorted_dec[a]
                b = a
                while b > s and sorted_ra[b - 1] > row_ra:
                    order[b] = order[b - 1]
                    sorted_ra[b] = sorted_ra[b - 1]
                    sorted_dec[b] = sorted_dec[b - 1]
                    b -= 1
                order[b], sorted_ra[b], sorted_dec[b] = row, row_ra, row_dec
    return order, starts, sorted_ra, sorted_dec


@njit(cache=True, nogil=True)
def _zone_half_widths(dec0, height, nzones, sin_r):
    """Per zone, the RA half-width (degrees) that holds every right row of the zone within the
    radius of any left row: ``asin(sin r / cos |dec|max)`` at the zone's highest |dec| (a right row
    at dec' sees left rows at most ``asin(sin r / cos dec')`` away in RA); -1 where the circle
    around a row of the zone can reach a pole (the whole strip is searched). Computed once per zone
    instead of once per left row: the sweep then does no trigonometry per row."""
    half = np.empty(nzones)
    for z in range(nzones):
        lo = dec0 + z * height - EPS_DEG
        hi = dec0 + (z + 1) * height + EPS_DEG
        top = max(abs(lo), abs(hi))
        s = sin_r / np.cos(np.radians(top)) if top < 90.0 else 2.0
        half[z] = -1.0 if s >= 1.0 else np.degrees(np.arcsin(s)) * (1 + 1e-9) + EPS_DEG
    return half


COUNT, FILL, NEAREST = 0, 1, 2


@njit(cache=True, nogil=True, inline="always")
def _before(d2, r, best_d2, best_r, tie):
    """Whether candidate (d2, r) ranks before the kept (best_d2, best_r); best_r < 0 is empty."""
    if best_r < 0 or d2 < best_d2:
        return True
    if d2 > best_d2:
        return False
    return tie[r] < tie[best_r] or (tie[r] == tie[best_r] and r < best_r)


@njit(cache=True, nogil=True)
def _scan(
    mode,
    lra,
    ldec,
    lorder,
    zone_half,
    rxyz,
    order,
    starts,
    sorted_ra,
    dec0,
    height,
    r_deg,
    sin_r,
    c2,
    tie,
    count,
    offset,
    li_out,
    ri_out,
    d2_out,
    best_r,
    best_d,
):
    """Visit every candidate of every left row: COUNT pairs per row, FILL them at ``offset``, or
    keep the NEAREST k per row (``best_r``/``best_d``, (n, k)), ordered by distance, then by the
    right row's ``tie`` key (its ``_healpix_29``), then by right row.

    One loop over preallocated arrays, with helpers inlined: arrays passed to a called function
    or reassigned in the loop cost numba reference counting, more than the search itself."""
    nzones = len(starts) - 1
    k = best_r.shape[1]
    bounds = np.empty(4)
    for t in range(len(lorder)):  # left rows by zone: the strips and candidates they visit stay in cache
        i = lorder[t]
        ra_i, dec_i = lra[i], ldec[i]
        rad_ra, rad_dec = np.radians(ra_i), np.radians(dec_i)
        cd = np.cos(rad_dec)
        x, y, zc = cd * np.cos(rad_ra), cd * np.sin(rad_ra), np.sin(rad_dec)  # as _unit_vectors
        z0 = _zone_of(dec_i - r_deg - EPS_DEG, dec0, height, nzones)
        z1 = _zone_of(dec_i + r_deg + EPS_DEG, dec0, height, nzones)
        n_found = 0
        for z in range(z0, z1 + 1):
            s, e = starts[z], starts[z + 1]
            if s == e:
                continue
            half = zone_half[z]
            n_windows = 1
            if half < 0.0 or half >= 180.0:  # the whole strip
                bounds[0], bounds[1] = -1.0, 1e300
            elif ra_i - half < 0.0:  # across RA 0: [lo + 360, inf) and (-inf, hi]
                bounds[0], bounds[1], bounds[2], bounds[3] = ra_i - half + 360.0, 1e300, -1e300, ra_i + half
                n_windows = 2
            elif ra_i + half >= 360.0:
                bounds[0], bounds[1], bounds[2], bounds[3] = ra_i - half, 1e300, -1e300, ra_i + half - 360.0
                n_windows = 2
            else:
                bounds[0], bounds[1] = ra_i - half, ra_i + half
            for w in range(n_windows):
                lo, hi = bounds[2 * w], bounds[2 * w + 1]
                a, b = s, e  # lower bound of lo in sorted_ra[s:e]
                while a < b:
                    mid = (a + b) >> 1
                    if sorted_ra[mid] < lo:
                        a = mid + 1
                    else:
                        b = mid
                j = a
                while j < e and sorted_ra[j] <= hi:
                    dx = x - rxyz[j, 0]
                    dy = y - rxyz[j, 1]
                    dz = zc - rxyz[j, 2]
                    d2 = dx * dx + dy * dy + dz * dz
                    if d2 <= c2:
                        if mode == FILL:
                            at = offset[i] + n_found
                            li_out[at] = i
                            ri_out[at] = order[j]
                            d2_out[at] = d2
                        elif mode == NEAREST:
                            r = order[j]
                            if _before(d2, r, best_d[i, k - 1], best_r[i, k - 1], tie):
                                m = k - 1  # insertion into the k best
                                while m > 0 and _before(d2, r, best_d[i, m - 1], best_r[i, m - 1], tie):
                                    best_d[i, m] = best_d[i, m - 1]
                                    best_r[i, m] = best_r[i, m - 1]
                                    m -= 1
                                best_d[i, m] = d2
                                best_r[i, m] = r
                        n_found += 1
                    j += 1
        count[i] = n_found


@njit(cache=True, nogil=True)
def _prepare(ldec, rra, rdec, r_deg, sin_r):
    dec0 = rdec.min()
    span = rdec.max() - dec0 + 1e-9
    height = max(
        2.0 * r_deg, span / max(len(rra), 1)
    )  # a row's band [dec - r, dec + r] meets 2 strips at most
    nzones = int(span / height) + 1
    order, starts, sorted_ra, sorted_dec = _build_zones(rra, rdec, dec0, height, nzones)
    rxyz = _unit_vectors(sorted_ra, sorted_dec, np.arange(len(order)))  # candidates are contiguous
    lorder = _zone_order(ldec, dec0, height, nzones)[0]
    half = _zone_half_widths(dec0, height, nzones, sin_r)
    return lorder, half, rxyz, order, starts, sorted_ra, dec0, height


def _read_only(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def zones_match(
    lra: np.ndarray,
    ldec: np.ndarray,
    rra: np.ndarray,
    rdec: np.ndarray,
    radius_arcsec: float,
    k: int,
    tie_key: np.ndarray | None = None,
):
    """(left idx, right idx, squared chord) of the k nearest (k >= 1) or all (k == 0) right rows
    within the radius; RA is taken modulo 360. Pairs come by left row, then (for k >= 1) by
    distance; equal distances go to the smaller ``tie_key`` (default: none), then the earlier right row."""
    lra, ldec, rra, rdec = (np.ascontiguousarray(a, dtype=np.float64) for a in (lra, ldec, rra, rdec))
    if len(lra) == 0 or len(rra) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    lok, rok = np.isfinite(lra) & np.isfinite(ldec), np.isfinite(rra) & np.isfinite(rdec)
    if not (lok.all() and rok.all()):  # rows without a position match nothing
        lrows, rrows = np.flatnonzero(lok), np.flatnonzero(rok)
        li, ri, d2 = zones_match(
            lra[lrows],
            ldec[lrows],
            rra[rrows],
            rdec[rrows],
            radius_arcsec,
            k,
            None if tie_key is None else np.asarray(tie_key)[rrows],
        )
        return lrows[li], rrows[ri], d2
    lra, rra = (a if (a.min() >= 0.0 and a.max() < 360.0) else a % 360.0 for a in (lra, rra))
    tie = np.zeros(len(rra), np.int64) if tie_key is None else np.ascontiguousarray(tie_key, dtype=np.int64)
    # the kernels only read these: read-only views (no copy) give every call the same types, so
    # one compiled specialisation serves columns from Arrow (read-only) and computed ones alike
    lra, ldec, rra, rdec, tie = (_read_only(a) for a in (lra, ldec, rra, rdec, tie))
    r_deg = radius_arcsec / 3600.0
    c2 = chord_for(radius_arcsec) ** 2
    sin_r = np.sin(np.radians(r_deg))
    lorder, zone_half, rxyz, order, starts, sorted_ra, dec0, height = _prepare(ldec, rra, rdec, r_deg, sin_r)
    geometry = (
        lra,
        ldec,
        lorder,
        zone_half,
        rxyz,
        order,
        starts,
        sorted_ra,
        dec0,
        height,
        r_deg,
        sin_r,
        c2,
        tie,
    )
    n = len(lra)
    count = np.zeros(n, np.int64)
    no_i, no_f = np.empty(0, np.int64), np.empty(0)
    if k >= 1:
        best_r = np.full((n, k), -1, np.int64)
        best_d = np.full((n, k), np.inf)
        _scan(NEAREST, *geometry, count, count, no_i, no_i, no_f, best_r, best_d)
        if k == 1:
            li = np.flatnonzero(count)
            return li, best_r[li, 0], best_d[li, 0]
        found = best_r >= 0
        li = np.broadcast_to(np.arange(n)[:, None], found.shape)[found]
        return li, best_r[found], best_d[found]
    none_r, none_d = np.empty((0, 1), np.int64), np.empty((0, 1))
    _scan(COUNT, *geometry, count, count, no_i, no_i, no_f, none_r, none_d)
    offset = np.zeros(n, np.int64)
    np.cumsum(count[:-1], out=offset[1:])
    total = int(count.sum())
    li, ri, d2 = np.empty(total, np.int64), np.empty(total, np.int64), np.empty(total)
    _scan(FILL, *geometry, count, offset, li, ri, d2, none_r, none_d)
    return li, ri, d2


# -- first use: compile once, saying so -----------------------------------------------------------

_KERNELS = (_unit_vectors, _zone_order, _build_zones, _zone_half_widths, _prepare, _scan)


def kernels_cached() -> bool:
    """True when numba's cache holds compiled code of every kernel for this source (so a worker
    loads it in a moment); False on first use after installing or changing this file. Reads the
    cache index through numba's own cache object; a numba whose internals differ counts as cached."""
    try:
        return all(bool(kernel._cache._cache_file._load_index()) for kernel in _KERNELS)
    except Exception:  # noqa: BLE001 - another numba layout: assume cached and stay silent
        return True


def compile_kernels() -> None:
    """Compile (or load) every kernel for the argument types ``zones_match`` passes, writing the cache."""
    ra = np.array([10.0, 10.0001, 200.0])
    dec = np.array([0.0, 0.0001, -30.0])
    for k in (1, 0):
        zones_match(ra, dec, ra, dec, 1.0, k, np.arange(3, dtype=np.int64))


def ensure_compiled(stream=None) -> bool:
    """Compile the kernels here, once, with a line saying so, when the cache is cold: the match
    tasks then load the cache instead of each compiling for seconds under a progress bar that
    reads as a 24-minute ETA. Returns True when it compiled."""
    import sys
    import time

    if kernels_cached():
        return False
    stream = stream or sys.stderr
    print(
        "survey-engine: compiling the cross-match kernel once (about 10 s; cached for later runs)...",
        end="",
        file=stream,
        flush=True,
    )
    t0 = time.perf_counter()
    compile_kernels()
    print(f" done ({time.perf_counter() - t0:.0f} s)", file=stream, flush=True)
    return True
