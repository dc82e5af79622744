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
    neighbours,
    pixel_boundary_xyz,
    radec_to_xyz,
)
from survey_engine.catalog.partitioning import PartitionPlan


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
    def build(cls, plan: PartitionPlan, radius_arcsec: float) -> "MarginPlan":
        if not radius_arcsec > 0:
            raise ValueError(f"margin radius must be positive, got {radius_arcsec}")
        m = margin_order_for_radius(radius_arcsec)
        pix_chunks, part_chunks = [], []
        for idx, (k, p) in enumerate(zip(plan.orders.tolist(), plan.pixels.tolist())):
            if k <= m:
                ring = neighbours(border_descendants(k, p, m), m)
                ring = ring[degrade(ring, m, k) != p]
            else:
                ancestor = p >> (2 * (k - m))
                ring = np.union1d(neighbours(np.array([ancestor]), m), [ancestor])
            pix_chunks.append(ring)
            part_chunks.append(np.full(len(ring), idx, dtype=np.int64))
        pixels = np.concatenate(pix_chunks) if pix_chunks else np.empty(0, np.int64)
        parts = np.concatenate(part_chunks) if part_chunks else np.empty(0, np.int64)
        order = np.lexsort((parts, pixels))
        pixels, parts = pixels[order], parts[order]
        uniq, first = np.unique(pixels, return_index=True)
        offsets = np.append(first, len(pixels)).astype(np.int64)
        return cls(float(radius_arcsec), m, uniq, offsets, parts, plan.orders.copy(), plan.pixels.copy())

    def assign(self, hp29: np.ndarray, ra: np.ndarray, dec: np.ndarray, own_part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, partition indices) of every row that belongs to another partition's margin."""
        rows, parts = self.candidates(hp29, own_part)
        if len(rows) == 0:
            return rows, parts
        keep = np.zeros(len(rows), dtype=bool)
        radius_rad = np.radians(self.radius_arcsec / 3600.0)
        xyz = radec_to_xyz(ra[rows], dec[rows])
        order = np.argsort(parts, kind="stable")
        bounds = np.flatnonzero(np.diff(parts[order])) + 1
        for group in np.split(order, bounds):
            part = int(parts[group[0]])
            ring, tree = _boundary(int(self.part_orders[part]), int(self.part_pixels[part]))
            keep[group] = distance_to_polyline_rad(xyz[group], ring, tree, radius_rad) <= radius_rad
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


@lru_cache(maxsize=512)
def _boundary(order: int, pix: int):
    from scipy.spatial import cKDTree

    ring = pixel_boundary_xyz(order, pix)
    return ring, cKDTree(ring)


def margin_catalog_name(main_name: str, radius_arcsec: float) -> str:
    """Folder name of a margin catalog, e.g. ``gaia_5arcsec``."""
    value = f"{radius_arcsec:g}".replace(".", "p")
    return f"{main_name}_{value}arcsec"
