"""Margins: the rows within ``radius`` of each partition's border that live in other partitions.

Candidates come from a lookup table of HEALPix pixels at a "margin order" fine enough that a
point within the radius of a partition always falls in an 8-neighbour of one of the partition's
border pixels; each candidate is then kept only if its exact angular distance to the partition's
boundary is at most the radius. The result equals a brute-force selection (to well under a
milliarcsecond), at the poles, across RA 0/360 and between partitions of different orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from survey_engine.catalog.healpix import (
    SPATIAL_INDEX_ORDER,
    border_descendants,
    degrade,
    distance_to_polyline_rad,
    margin_order_for_radius,
    mean_pixel_size_rad,
    neighbours,
    pixel_boundary_xyz,
    point_arc_distance,
    radec_to_xyz,
)
from survey_engine.catalog.partitioning import PartitionPlan
from survey_engine.errors import UsageError


def margin_ring(order: int, pix: int, m: int) -> np.ndarray:
    """Pixels at margin order ``m`` outside (order, pix) that hold every point within the radius of it.

    For a partition coarser than ``m``: the 8-neighbours of its border pixels; for a finer one:
    its order-m ancestor and the ancestor's neighbours.
    """
    if order <= m:
        ring = neighbours(border_descendants(order, pix, m), m)
        return ring[degrade(ring, m, order) != pix]
    ancestor = pix >> (2 * (order - m))
    return np.union1d(neighbours(np.array([ancestor]), m), [ancestor])


def uncovered_pixels(orders: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fewest pixels that cover the sky the partitions (orders, pixels) leave empty: every
    sibling of a partition or of one of its ancestors that holds no partition, and each empty
    order-0 pixel (hats' ``compute_negative_tree_pixels``)."""
    covered = set(zip(np.asarray(orders).tolist(), np.asarray(pixels).tolist()))
    ancestors = {(k, p >> (2 * (o - k))) for o, p in covered for k in range(o)}
    taken = covered | ancestors
    out = [(0, p) for p in range(12) if (0, p) not in taken]
    for k, p in sorted(ancestors):
        out.extend((k + 1, c) for c in range(4 * p, 4 * p + 4) if (k + 1, c) not in taken)
    out.sort(key=lambda op: op[1] << (2 * (SPATIAL_INDEX_ORDER - op[0])))
    return np.array([o for o, _ in out], dtype=np.int64), np.array([p for _, p in out], dtype=np.int64)


@dataclass(frozen=True)
class MarginPlan:
    """Which partitions each margin-order pixel may contribute margin rows to."""

    radius_arcsec: float
    order: int
    cand_pixels: np.ndarray  # sorted unique pixels at ``order``
    cand_offsets: np.ndarray  # CSR offsets into cand_parts, len(cand_pixels) + 1
    cand_parts: np.ndarray  # partition indices (into the PartitionPlan)
    part_orders: np.ndarray
    part_pixels: np.ndarray

    @classmethod
    def build(cls, plan: PartitionPlan, radius_arcsec: float, uncovered: bool = True) -> "MarginPlan":
        """The lookup table for ``plan``'s partitions and, with ``uncovered``, for the pixels
        of the sky no partition covers (``uncovered_pixels``, as hats-import does): their
        margins let a peer that matches a catalog of its own in those regions against ours
        find the pairs across the border. Those extra targets are numbered after the plan's
        partitions (``part_orders`` / ``part_pixels`` hold both)."""
        if not radius_arcsec > 0:
            raise UsageError(f"margin radius must be positive, got {radius_arcsec}")
        m = margin_order_for_radius(radius_arcsec)
        orders, pixels_all = plan.orders, plan.pixels
        if uncovered:
            neg_orders, neg_pixels = uncovered_pixels(plan.orders, plan.pixels)
            orders = np.concatenate([plan.orders, neg_orders]).astype(np.int64)
            pixels_all = np.concatenate([plan.pixels, neg_pixels]).astype(np.int64)
        pix_chunks, part_chunks = [], []
        for idx, (k, p) in enumerate(zip(orders.tolist(), pixels_all.tolist())):
            ring = margin_ring(k, p, m)
            pix_chunks.append(ring)
            part_chunks.append(np.full(len(ring), idx, dtype=np.int64))
        pixels = np.concatenate(pix_chunks) if pix_chunks else np.empty(0, np.int64)
        parts = np.concatenate(part_chunks) if part_chunks else np.empty(0, np.int64)
        order = np.lexsort((parts, pixels))
        pixels, parts = pixels[order], parts[order]
        uniq, first = np.unique(pixels, return_index=True)
        offsets = np.append(first, len(pixels)).astype(np.int64)
        return cls(float(radius_arcsec), m, uniq, offsets, parts, orders.copy(), pixels_all.copy())

    def assign(
        self, hp29: np.ndarray, ra: np.ndarray, dec: np.ndarray, own_part: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, partition indices) of every row that belongs to another partition's margin."""
        rows, parts = self.candidates(hp29, own_part)
        if len(rows) == 0:
            return rows, parts
        radius_rad = np.radians(self.radius_arcsec / 3600.0)
        xyz = radec_to_xyz(ra[rows], dec[rows])
        dist = np.full(len(rows), np.inf)
        orders = self.part_orders[parts]
        local = orders <= self.order
        if local.any():
            q = degrade(hp29[rows[local]], SPATIAL_INDEX_ORDER, self.order)
            dist[local] = _distance_via_border_pixels(
                xyz[local], q, self.order, orders[local], self.part_pixels[parts[local]]
            )
        for part in np.unique(parts[~local]):
            # a partition finer than the margin order (large radius): its whole, short boundary
            group = np.flatnonzero((parts == part) & ~local)
            ring, tree = _boundary(int(self.part_orders[part]), int(self.part_pixels[part]))
            dist[group] = distance_to_polyline_rad(xyz[group], ring, tree, radius_rad)
        keep = dist <= radius_rad
        return rows[keep], parts[keep]

    def candidates(self, hp29: np.ndarray, own_part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (row, partition) pairs from the lookup table, before exact trimming."""
        q = degrade(hp29, SPATIAL_INDEX_ORDER, self.order)
        pos = np.searchsorted(self.cand_pixels, q)
        pos = np.minimum(pos, len(self.cand_pixels) - 1)
        hit = np.flatnonzero(self.cand_pixels[pos] == q) if len(self.cand_pixels) else np.empty(0, np.int64)
        if len(hit) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        starts = self.cand_offsets[pos[hit]]
        counts = self.cand_offsets[pos[hit] + 1] - starts
        rows = np.repeat(hit, counts)
        flat = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        parts = self.cand_parts[flat]
        other = parts != own_part[rows]
        return rows[other], parts[other]


def _distance_via_border_pixels(
    xyz: np.ndarray, q: np.ndarray, m: int, part_order: np.ndarray, part_pix: np.ndarray
) -> np.ndarray:
    """Exact distance from points (in margin-order pixels ``q``) to partitions of order <= m.

    The nearest point of the partition lies in one of its order-m pixels adjacent to ``q``
    (the radius is below the narrowest pixel width), so the distance is the smallest distance to
    the edges of those few small pixels, each sampled every few arcseconds and measured along
    great-circle arcs. Nothing is cached, so memory does not grow with the number of partitions.
    """
    import astropy.units as u
    import cdshealpix.nested as cdsn

    nb = cdsn.neighbours(q.astype(np.uint64), m).astype(np.int64)  # (n, 9), centre included
    shift = (2 * (m - part_order))[:, None]
    inside = (nb >= 0) & (np.right_shift(np.maximum(nb, 0), shift) == part_pix[:, None])
    pair, col = np.nonzero(inside)
    out = np.full(len(q), np.inf)
    if len(pair) == 0:
        return out
    pixels, inverse = np.unique(nb[pair, col], return_inverse=True)
    points = xyz[pair]
    best = np.full(len(pair), np.inf)
    step = int(max(1, np.ceil(1.6 * mean_pixel_size_rad(m) / _EDGE_SPACING_RAD)))
    if step <= _VECTORISED_MAX_STEP:
        # small margins: few samples per edge, every arc of every candidate pixel at once
        lon, lat = cdsn.vertices(pixels.astype(np.uint64), m, step=step)
        verts = radec_to_xyz(lon.to_value(u.deg).ravel(), lat.to_value(u.deg).ravel()).reshape(
            len(pixels), 4 * step, 3
        )
        for j in range(4 * step):
            a = verts[inverse, j]
            b = verts[inverse, (j + 1) % (4 * step)]
            best = np.minimum(best, point_arc_distance(points, a, b))
    else:
        # wide margins: long, densely sampled borders; per pixel a cached KD-tree finds the nearest
        # sample and only the arcs beside it are measured (cost ~ log(samples) per point)
        by_pixel = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[by_pixel], np.arange(len(pixels) + 1))
        for k, pixel in enumerate(pixels.tolist()):
            idx = by_pixel[bounds[k] : bounds[k + 1]]
            ring, tree = _boundary(m, pixel)
            best[idx] = distance_to_polyline_rad(points[idx], ring, tree)
    np.minimum.at(out, pair, best)
    return out


# Edge samples of margin-order pixels are at most this far apart (radians, ~10"): over such a
# short arc a HEALPix edge departs from the great circle by far less than a milliarcsecond.
_EDGE_SPACING_RAD = 5e-5
# Above this many samples per edge (margins wider than ~1.5 arcmin) the per-pixel KD-tree path wins.
_VECTORISED_MAX_STEP = 16


@lru_cache(maxsize=256)
def _boundary(order: int, pix: int):
    from scipy.spatial import cKDTree

    ring = pixel_boundary_xyz(order, pix)
    return ring, cKDTree(ring)


def margin_catalog_name(main_name: str, radius_arcsec: float) -> str:
    """Folder name of a margin catalog, e.g. ``gaia_5arcsec``."""
    value = f"{radius_arcsec:g}".replace(".", "p")
    return f"{main_name}_{value}arcsec"
