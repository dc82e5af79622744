"""HEALPix (nested) helpers built on cdshealpix, the library hats uses for ``_healpix_29``.

Everything here works on numpy arrays and is vectorised; indices are int64 nested indices.
"""

from __future__ import annotations

import numpy as np

SPATIAL_INDEX_ORDER = 29
SPATIAL_INDEX_COLUMN = "_healpix_29"
# Mean pixel size at order 0 in radians: sqrt(4 pi / 12).
_ORDER0_SIZE_RAD = float(np.sqrt(4 * np.pi / 12))


def radec_to_healpix(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int = SPATIAL_INDEX_ORDER) -> np.ndarray:
    """Nested HEALPix index at ``order`` for each (ra, dec) in degrees (same function as hats)."""
    import astropy.units as u
    import cdshealpix.nested as cdsn
    from astropy.coordinates import Latitude, Longitude

    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    if ra.size == 0:
        return np.empty(0, dtype=np.int64)
    pix = cdsn.lonlat_to_healpix(Longitude(ra, unit=u.deg), Latitude(dec, unit=u.deg), order)
    return pix.astype(np.int64, copy=False)


def degrade(pix: np.ndarray | int, from_order: int, to_order: int) -> np.ndarray | int:
    """Parent index at ``to_order`` (<= from_order) of nested pixels at ``from_order``."""
    return np.right_shift(pix, 2 * (from_order - to_order))


def pixel_range29(order: int | np.ndarray, pix: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-open range [start, stop) of order-29 indices covered by nested pixel(s)."""
    shift = 2 * (SPATIAL_INDEX_ORDER - np.asarray(order, dtype=np.int64))
    pix = np.asarray(pix, dtype=np.int64)
    return np.left_shift(pix, shift), np.left_shift(pix + 1, shift)


def mean_pixel_size_rad(order: int) -> float:
    """Mean side of a HEALPix pixel at ``order``, in radians."""
    return _ORDER0_SIZE_RAD / (2**order)


def margin_order_for_radius(radius_arcsec: float, max_order: int = SPATIAL_INDEX_ORDER) -> int:
    """Highest order whose smallest pixels are still comfortably wider than the radius.

    Pixel widths vary over the sphere; 0.3 of the mean side bounds the narrowest pixels, so a
    point within ``radius`` of a pixel set always lies in an 8-neighbour of its border pixels.
    """
    radius_rad = np.radians(radius_arcsec / 3600.0)
    order = 0
    while order < max_order and 0.3 * mean_pixel_size_rad(order + 1) >= radius_rad:
        order += 1
    return order


def border_descendants(order: int, pix: int, depth: int) -> np.ndarray:
    """The descendants of pixel (order, pix) at ``depth`` that touch its border."""
    delta = depth - order
    if delta <= 0:
        return np.array([pix], dtype=np.int64)
    side = 1 << delta
    edge = np.arange(side, dtype=np.int64)
    zero = np.zeros(side, dtype=np.int64)
    last = np.full(side, side - 1, dtype=np.int64)
    xs = np.concatenate([edge, edge, zero, last])
    ys = np.concatenate([zero, last, edge, edge])
    return sorted_unique((np.int64(pix) << (2 * delta)) + _interleave(xs, ys))


def _interleave(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Morton code (x bits at even positions, y bits at odd): the nested sub-pixel index."""
    out = np.zeros_like(x)
    for bit in range(31):
        out |= ((x >> bit) & 1) << (2 * bit)
        out |= ((y >> bit) & 1) << (2 * bit + 1)
    return out


def neighbours(pix: np.ndarray, order: int) -> np.ndarray:
    """All distinct 8-neighbours (edge and corner) of the given pixels, excluding missing ones."""
    import cdshealpix.nested as cdsn

    pix = np.asarray(pix, dtype=np.uint64)
    if pix.size == 0:
        return np.empty(0, dtype=np.int64)
    nb = cdsn.neighbours(pix, order).astype(np.int64)
    nb = nb[nb >= 0]
    return sorted_unique(nb)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by one sort: numpy 2's default unique hashes first and then sorts
    anyway, about 6x slower on the millions of pixels a fine margin order gives (a margin plan
    for a 2" margin: 4.5 s of driver CPU in every import and verify)."""
    ordered = np.sort(np.asarray(values))
    if len(ordered) == 0:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def radec_to_xyz(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Unit vectors (N, 3) for (ra, dec) in degrees."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cos_dec = np.cos(dec)
    return np.column_stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)])


def angular_separation_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation in degrees (Vincenty formula, stable at all separations)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    s1, c1 = np.sin(dec1), np.cos(dec1)
    s2, c2 = np.sin(dec2), np.cos(dec2)
    num = np.hypot(c2 * np.sin(dra), c1 * s2 - s1 * c2 * np.cos(dra))
    den = s1 * s2 + c1 * c2 * np.cos(dra)
    return np.degrees(np.arctan2(num, den))


# Boundary samples are at most this far apart (radians): the chord between two samples then
# departs from the true pixel edge by well under a milliarcsecond.
_MAX_BOUNDARY_SPACING_RAD = 5e-5


def pixel_boundary_xyz(order: int, pix: int) -> np.ndarray:
    """Closed polyline (M, 3) of unit vectors tracing the pixel's border, densely sampled."""
    import astropy.units as u
    import cdshealpix.nested as cdsn

    edge_len = 1.6 * mean_pixel_size_rad(order)
    step = int(max(4, np.ceil(edge_len / _MAX_BOUNDARY_SPACING_RAD)))
    lon, lat = cdsn.vertices(np.array([pix], dtype=np.uint64), order, step=step)
    return radec_to_xyz(lon.to_value(u.deg)[0], lat.to_value(u.deg)[0])


def distance_to_polyline_rad(
    points: np.ndarray, ring: np.ndarray, tree=None, max_distance_rad: float | None = None
) -> np.ndarray:
    """Angular distance (radians) from unit vectors ``points`` (N, 3) to a closed polyline.

    Segments are great-circle arcs between consecutive samples of ``ring``. The nearest sample
    is found with a KD-tree and the exact distance to its two adjacent arcs is returned.
    Points farther than ``max_distance_rad`` (plus the sample spacing) get ``inf``, which keeps
    the tree search short for far points.
    """
    from scipy.spatial import cKDTree

    if len(points) == 0:
        return np.empty(0)
    tree = tree or cKDTree(ring)
    bound = np.inf
    if max_distance_rad is not None:
        bound = 2 * np.sin(min(max_distance_rad + 2 * _MAX_BOUNDARY_SPACING_RAD, np.pi) / 2)
    _, nearest = tree.query(points, k=1, distance_upper_bound=bound)
    m = len(ring)
    found = nearest < m
    best = np.full(len(points), np.inf)
    p, near = points[found], nearest[found]
    sub = np.full(len(p), np.inf)
    for a_idx, b_idx in ((near - 1) % m, near), (near, (near + 1) % m):
        sub = np.minimum(sub, point_arc_distance(p, ring[a_idx], ring[b_idx]))
    best[found] = sub
    return best


def point_arc_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angular distance from points p to the minor great-circle arcs a-b (all (N, 3))."""
    n = np.cross(a, b)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = n / np.where(norm == 0, 1, norm)
    pn = np.einsum("ij,ij->i", p, n)
    foot = p - pn[:, None] * n
    inside = (np.einsum("ij,ij->i", np.cross(a, foot), n) >= 0) & (
        np.einsum("ij,ij->i", np.cross(foot, b), n) >= 0
    )
    to_arc = np.arcsin(np.clip(np.abs(pn), 0, 1))
    to_a = _angle(p, a)
    to_b = _angle(p, b)
    return np.where(inside & (norm[:, 0] > 0), to_arc, np.minimum(to_a, to_b))


def _angle(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Angle between unit vectors, accurate for small angles."""
    return 2 * np.arcsin(np.clip(np.linalg.norm(p - q, axis=1) / 2, 0, 1))


def chord_for(sep_arcsec: float) -> float:
    """Chord length on the unit sphere for an angular separation (arcsec)."""
    return 2 * np.sin(np.radians(sep_arcsec / 3600.0) / 2)
