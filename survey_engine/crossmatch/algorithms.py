"""Per-partition matching kernels: abstract interface and its implementations.

A kernel gets the positions of left and right rows and returns candidate pairs with their
separations; the partition bookkeeping (margins, alignment, joins) lives in ``plan`` and
``match``, so kernels are interchangeable: ``zones`` (the default: a compiled declination-zone
sweep, ``zones.py``), ``kdtree`` (scipy cKDTree on unit vectors), ``grid`` (a sorted 3D grid in
array operations) and ``gpu`` (the grid kernel on CuPy).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from survey_engine.catalog.healpix import chord_for
from survey_engine.errors import UsageError
from survey_engine.runtime import gpu_available  # noqa: F401  (the one GPU probe; imported from here too)


def sep_from_chord(chord: np.ndarray) -> np.ndarray:
    """Angular separation (arcsec) from chord length, accurate at small angles."""
    return np.degrees(2 * np.arcsin(np.clip(chord / 2, 0, 1))) * 3600.0


class CrossmatchAlgorithm(ABC):
    """Finds right neighbours of left points within a radius."""

    name: str = "abstract"
    breaks_ties: bool = False  # nearest_radec orders equal distances by tie_key itself

    def prepare(self) -> None:
        """Called on the driver before the match tasks start (e.g. to compile a kernel once)."""

    @abstractmethod
    def nearest(
        self, left: np.ndarray, right: np.ndarray, k: int, radius_arcsec: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``k`` nearest right rows within the radius of each left row: (left idx, right idx, sep arcsec)."""

    @abstractmethod
    def all_pairs(
        self, left: np.ndarray, right: np.ndarray, radius_arcsec: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (left, right) pair within the radius: (left idx, right idx, sep arcsec)."""

    # the match tasks hand over RA/Dec (degrees); kernels that work on unit vectors get them here
    def nearest_radec(self, lra, ldec, rra, rdec, k: int, radius_arcsec: float, tie_key=None):
        from survey_engine.catalog.healpix import radec_to_xyz

        return self.nearest(radec_to_xyz(lra, ldec), radec_to_xyz(rra, rdec), k, radius_arcsec)

    def all_pairs_radec(self, lra, ldec, rra, rdec, radius_arcsec: float):
        from survey_engine.catalog.healpix import radec_to_xyz

        return self.all_pairs(radec_to_xyz(lra, ldec), radec_to_xyz(rra, rdec), radius_arcsec)


class KDTreeAlgorithm(CrossmatchAlgorithm):
    """scipy cKDTree on unit vectors (chord distance is monotonic in angular distance)."""

    name = "kdtree"

    def nearest(self, left, right, k, radius_arcsec):
        from scipy.spatial import cKDTree

        if len(left) == 0 or len(right) == 0:
            return _empty()
        k = min(k, len(right))
        tree = cKDTree(right, balanced_tree=False, compact_nodes=False)
        chord, idx = tree.query(left, k=k, distance_upper_bound=chord_for(radius_arcsec))
        chord = chord.reshape(len(left), k)
        idx = idx.reshape(len(left), k)
        ok = np.isfinite(chord)
        li = np.broadcast_to(np.arange(len(left))[:, None], chord.shape)[ok]
        return li, idx[ok], sep_from_chord(chord[ok])

    def all_pairs(self, left, right, radius_arcsec):
        from scipy.spatial import cKDTree

        if len(left) == 0 or len(right) == 0:
            return _empty()
        lt = cKDTree(left, balanced_tree=False, compact_nodes=False)
        rt = cKDTree(right, balanced_tree=False, compact_nodes=False)
        found = lt.sparse_distance_matrix(rt, chord_for(radius_arcsec), output_type="ndarray")
        return found["i"].astype(np.int64), found["j"].astype(np.int64), sep_from_chord(found["v"])


class ZonesAlgorithm(CrossmatchAlgorithm):
    """Compiled zones sweep (``zones.py``): right rows by declination strip and RA, exact chords.
    Several times faster than the KD-tree on the same rows (no tree to build, a few binary
    searches per row) and with the same pairs; equal distances go to the smaller ``tie_key``
    (the right row's ``_healpix_29``), then the earlier right row."""

    name = "zones"
    breaks_ties = True

    def prepare(self) -> None:
        from survey_engine.crossmatch.zones import ensure_compiled

        ensure_compiled()

    def nearest_radec(self, lra, ldec, rra, rdec, k, radius_arcsec, tie_key=None):
        from survey_engine.crossmatch.zones import zones_match

        li, ri, d2 = zones_match(lra, ldec, rra, rdec, radius_arcsec, max(1, k), tie_key)
        return li, ri, sep_from_chord(np.sqrt(d2))

    def all_pairs_radec(self, lra, ldec, rra, rdec, radius_arcsec):
        from survey_engine.crossmatch.zones import zones_match

        li, ri, d2 = zones_match(lra, ldec, rra, rdec, radius_arcsec, 0)
        return li, ri, sep_from_chord(np.sqrt(d2))

    def nearest(self, left, right, k, radius_arcsec):
        return self.nearest_radec(*_radec(left), *_radec(right), k, radius_arcsec)

    def all_pairs(self, left, right, radius_arcsec):
        return self.all_pairs_radec(*_radec(left), *_radec(right), radius_arcsec)


def _radec(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xyz = np.asarray(xyz, dtype=np.float64)
    return np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0, np.degrees(
        np.arcsin(np.clip(xyz[:, 2], -1, 1))
    )


def _empty():
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)


# -- a sorted-grid kernel written once for NumPy and CuPy ---------------------------------------

AXIS_BITS = 21  # three cell indices packed in one int64 key
CHUNK_ROWS = 1_000_000  # left rows per pass: bounds the candidate arrays (GPU memory)


class GridAlgorithm(CrossmatchAlgorithm):
    """All pairs within the radius from a sorted grid of unit vectors, vectorised end to end.

    Right rows are binned in cubes of side s >= 2 x chord and sorted by cell key; each left row
    can only have neighbours in the 2 x 2 x 2 cells its chord-sized box touches, whose rows are
    found by binary search in the sorted keys. Every candidate's chord is then computed exactly
    and compared with the radius, so the pairs are those of a brute-force search. Only array
    operations (sort, searchsorted, cumsum, gather) are used, so the same code runs on the GPU with
    CuPy (``xp``); ``nearest`` ranks the pairs per left row (ties: the right row's position).
    """

    name = "grid"

    def __init__(self, xp=np):
        self.xp = xp

    def all_pairs(self, left, right, radius_arcsec):
        li, ri, d2 = self._pairs(left, right, chord_for(radius_arcsec))
        return self._host(li), self._host(ri), sep_from_chord(np.sqrt(self._host(d2)))

    def nearest(self, left, right, k, radius_arcsec):
        xp = self.xp
        li, ri, d2 = self._pairs(left, right, chord_for(radius_arcsec))
        order = xp.lexsort(xp.stack([ri, d2, li]))
        li, ri, d2 = li[order], ri[order], d2[order]
        keep = (xp.arange(len(li)) - xp.searchsorted(li, li, side="left")) < k  # rank within each left row
        li, ri, d2 = li[keep], ri[keep], d2[keep]
        return self._host(li), self._host(ri), sep_from_chord(np.sqrt(self._host(d2)))

    def _host(self, a):
        return a.get() if hasattr(a, "get") else np.asarray(a)

    def _pairs(self, left, right, chord):
        xp = self.xp
        if len(left) == 0 or len(right) == 0:
            return xp.empty(0, xp.int64), xp.empty(0, xp.int64), xp.empty(0, xp.float64)
        left, right = xp.asarray(left, dtype=xp.float64), xp.asarray(right, dtype=xp.float64)
        cell = max(
            2 * chord, 2.0 / (2**AXIS_BITS - 4)
        )  # >= 2 chords: a +-chord box spans <= 2 cells per axis
        shift = int(np.ceil(1.0 / cell)) + 1
        rkeys = self._keys(xp.floor(right / cell).astype(xp.int64) + shift)
        order = xp.argsort(rkeys)
        rkeys = rkeys[order]
        pieces = [
            self._chunk(left[i : i + CHUNK_ROWS], i, right, order, rkeys, chord, cell, shift)
            for i in range(0, len(left), CHUNK_ROWS)
        ]
        return tuple(xp.concatenate([p[j] for p in pieces]) for j in range(3))

    def _keys(self, cells):
        return (cells[:, 0] << (2 * AXIS_BITS)) | (cells[:, 1] << AXIS_BITS) | cells[:, 2]

    def _chunk(self, left, offset, right, order, rkeys, chord, cell, shift):
        xp = self.xp
        lo = xp.floor((left - chord) / cell).astype(xp.int64) + shift
        hi = xp.floor((left + chord) / cell).astype(xp.int64) + shift
        found_l, found_r = [], []
        for corner in range(8):
            pick = [(corner >> axis) & 1 for axis in range(3)]
            cells = xp.stack([hi[:, a] if pick[a] else lo[:, a] for a in range(3)], axis=1)
            fresh = xp.ones(len(left), dtype=bool)  # a corner equal to an earlier one is skipped
            for a in range(3):
                if pick[a]:
                    fresh &= hi[:, a] != lo[:, a]
            keys = self._keys(cells)
            start = xp.searchsorted(rkeys, keys, side="left")
            stop = xp.searchsorted(rkeys, keys, side="right")
            counts = xp.where(fresh, stop - start, 0)
            total = int(counts.sum())
            if total == 0:
                continue
            ends = xp.cumsum(counts)
            slot = xp.arange(total, dtype=xp.int64)
            row = xp.searchsorted(ends, slot, side="right")  # the left row of each candidate
            found_l.append(row)
            found_r.append(order[start[row] + slot - (ends[row] - counts[row])])
        if not found_l:
            return xp.empty(0, xp.int64), xp.empty(0, xp.int64), xp.empty(0, xp.float64)
        li, ri = xp.concatenate(found_l), xp.concatenate(found_r)
        d2 = ((left[li] - right[ri]) ** 2).sum(axis=1)
        ok = d2 <= chord * chord
        return li[ok] + offset, ri[ok], d2[ok]


class GPUAlgorithm(GridAlgorithm):
    """The grid kernel on the GPU through CuPy: the same pairs as ``grid`` (and ``kdtree``)."""

    name = "gpu"

    def __init__(self):
        import cupy

        super().__init__(cupy)


ALGORITHMS: dict[str, type[CrossmatchAlgorithm]] = {
    "zones": ZonesAlgorithm,
    "kdtree": KDTreeAlgorithm,
    "grid": GridAlgorithm,
    "gpu": GPUAlgorithm,
}
DEFAULT_ALGORITHM = "zones"


def check_algorithm(name: str) -> None:
    if name not in ALGORITHMS:
        raise UsageError(f"unknown cross-match algorithm {name!r}; available: {sorted(ALGORITHMS)}")


def get_algorithm(name: str) -> CrossmatchAlgorithm:
    check_algorithm(name)
    return ALGORITHMS[name]()
