"""Per-partition matching kernels: abstract interface and the KD-tree implementation.

A kernel gets unit vectors of left and right rows and returns candidate pairs with their
separations; the partition bookkeeping (margins, alignment, joins) lives in ``plan`` and
``match``, so kernels (CPU KD-tree, GPU, ...) are interchangeable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


def chord_for(sep_arcsec: float) -> float:
    """Chord length on the unit sphere for an angular separation."""
    return 2 * np.sin(np.radians(sep_arcsec / 3600.0) / 2)


def sep_from_chord(chord: np.ndarray) -> np.ndarray:
    """Angular separation (arcsec) from chord length, accurate at small angles."""
    return np.degrees(2 * np.arcsin(np.clip(chord / 2, 0, 1))) * 3600.0


class CrossmatchAlgorithm(ABC):
    """Finds right neighbours of left points within a radius."""

    name: str = "abstract"

    @abstractmethod
    def nearest(self, left: np.ndarray, right: np.ndarray, k: int, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``k`` nearest right rows within the radius of each left row: (left idx, right idx, sep arcsec)."""

    @abstractmethod
    def all_pairs(self, left: np.ndarray, right: np.ndarray, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (left, right) pair within the radius: (left idx, right idx, sep arcsec)."""


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


def _empty():
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)


ALGORITHMS: dict[str, type[CrossmatchAlgorithm]] = {"kdtree": KDTreeAlgorithm}


def get_algorithm(name: str) -> CrossmatchAlgorithm:
    try:
        return ALGORITHMS[name]()
    except KeyError:
        raise ValueError(f"unknown cross-match algorithm {name!r}; available: {sorted(ALGORITHMS)}") from None
