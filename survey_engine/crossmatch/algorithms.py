"""The cross-match algorithm: objects that carry and check the match parameters, and the kernels
that find the pairs.

A cross-match algorithm object (``ZonesCrossmatch``, ``KDTreeCrossmatch``, ``GridCrossmatch``,
``GPUCrossmatch``; LSDB's ``KdTreeCrossmatch`` is the model) holds ``radius_arcsec``, ``how``,
``k``, ``min_radius_arcsec`` and ``exclude_self``, refuses bad values when it is made,
``validate(left, right)`` checks the catalogs against them (coordinates present, right margin
wide enough) and ``match`` finds one task's pairs. What is not the algorithm's business (join,
suffixes, columns, epochs) stays in ``tasks.MatchParams``.

A kernel gets the positions of left and right rows and returns candidate pairs with their
separations; the partition bookkeeping (margins, alignment, joins) lives in ``plan`` and
``match``, so kernels are interchangeable: ``zones`` (the default: a compiled declination-zone
sweep, ``zones.py``), ``kdtree`` (scipy cKDTree on unit vectors), ``grid`` (a sorted 3D grid in
array operations) and ``gpu`` (the grid kernel on CuPy).
"""

from __future__ import annotations

import dataclasses
import numbers
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from survey_engine.catalog.healpix import chord_for
from survey_engine.errors import MissingColumnError, UsageError, option

if TYPE_CHECKING:
    import pandas as pd

    from survey_engine.catalog.catalog import Catalog
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


# -- the algorithm objects: parameters, their checks and one task's match ---------------------

HOWS = ("nearest", "knn", "all", "one-to-one")


@dataclasses.dataclass(frozen=True)
class CrossmatchMethod:
    """A cross-match algorithm with its parameters; use a subclass, which names the kernel.

    ``how``: ``nearest`` (the closest right row within ``radius_arcsec``), ``knn`` (up to ``k``
    closest), ``all`` (every pair) or ``one-to-one`` (all pairs here; the global choice is made
    on the driver). ``min_radius_arcsec`` drops closer pairs; ``exclude_self`` drops a row
    matched with itself (same ``_healpix_29`` and coordinates). Frozen and small, so it pickles
    to every task; bad values raise ``UsageError`` naming the CLI flag and the keyword.
    """

    radius_arcsec: float
    how: str = "nearest"
    k: int = 1
    min_radius_arcsec: float = 0.0
    exclude_self: bool = False

    kernel_name: ClassVar[str] = ""

    def __post_init__(self):
        if not self.kernel_name:
            raise TypeError(
                f"CrossmatchMethod is abstract; use one of {', '.join(c.__name__ for c in METHODS.values())}"
            )
        radius = self.radius_arcsec
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real):
            raise UsageError(f"{option('--radius', 'radius_arcsec')} must be a number, got {radius!r}")
        if not radius > 0:
            raise UsageError(f"{option('--radius', 'radius_arcsec')} must be positive, got {radius}")
        if self.how not in HOWS:
            raise UsageError(f"{option('--how', 'how')} must be one of {HOWS}, got {self.how!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral):
            raise UsageError(f"{option('--k', 'k')} must be a whole number, got {self.k!r}")
        if self.k < 1:
            raise UsageError(f"{option('--k', 'k')} must be at least 1, got {self.k}")
        low = self.min_radius_arcsec
        if isinstance(low, bool) or not isinstance(low, numbers.Real) or not 0 <= low < radius:
            raise UsageError(
                f"{option('--min-radius', 'min_radius_arcsec')} must be within [0, --radius), got {low}"
            )
        if not isinstance(self.exclude_self, (bool, np.bool_)):
            raise UsageError(
                f"{option('--self', 'exclude_self')} must be True or False, got {self.exclude_self!r}"
            )
        # plain Python values: equal objects hash, compare and print alike whatever numbers made them
        for name, kind in (
            ("radius_arcsec", float),
            ("k", int),
            ("min_radius_arcsec", float),
            ("exclude_self", bool),
        ):
            object.__setattr__(self, name, kind(getattr(self, name)))

    @property
    def name(self) -> str:
        """The kernel's name, as ``--algorithm`` spells it."""
        return self.kernel_name

    def parameters(self) -> dict:
        """The match parameters as keywords (``radius_arcsec``, ``how``, ``k``, ...)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def on_kernel(self, name: str) -> CrossmatchMethod:
        """The same parameters on another kernel (e.g. ``grid`` where no GPU is usable)."""
        return method_for(name, **self.parameters())

    def kernel(self) -> CrossmatchAlgorithm:
        return get_algorithm(self.kernel_name)

    def prepare(self) -> None:
        """Called on the driver before the match tasks start (e.g. to compile a kernel once)."""
        self.kernel().prepare()

    def reach_arcsec(self, motion_arcsec: float = 0.0) -> float:
        """How far a right row can be from its left partner in the stored positions: the radius
        plus the largest proper-motion shift of either side when epochs are propagated."""
        return self.radius_arcsec + motion_arcsec

    def validate(self, left: Catalog, right: Catalog, motion_arcsec: float = 0.0) -> None:
        """Check the catalogs against the parameters before any task runs: both have their
        coordinate columns, and the right margin covers ``reach_arcsec(motion_arcsec)``
        (``plan.MarginTooSmallError`` otherwise, which says how to build one)."""
        from survey_engine.crossmatch.plan import check_margin

        for side, catalog in (("left", left), ("right", right)):
            names = set(catalog.schema.names)
            missing = [c for c in (catalog.ra_column, catalog.dec_column) if c not in names]
            if missing:
                raise MissingColumnError(
                    f"{catalog.path}: the {side} catalog has no coordinate column(s) {missing} to match on"
                )
        check_margin(right, self.reach_arcsec(motion_arcsec))

    def match(
        self, left: pd.DataFrame, right: pd.DataFrame, lpos, rpos, lcoords, rcoords
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One task's pairs (left row, right row, separation arcsec) after the radius, minimum
        radius, self and ``k`` rules, ranked by separation within each left row.

        ``left`` / ``right`` are indexed by ``_healpix_29`` (the tie-break: equal separations go
        to the smaller right ``_healpix_29``, then the earlier right row); ``lpos`` / ``rpos`` are
        (RA, Dec) arrays in degrees at the common epoch; ``lcoords`` / ``rcoords`` name the stored
        coordinate columns, which identify a row itself for ``exclude_self``. The frames are only
        to be read: right ones are shared by the tasks of a run, and numeric columns are read-only
        views of the Parquet reads (copy one before changing it).
        """
        if len(left) == 0 or len(right) == 0:
            return _empty()
        algo = self.kernel()
        k = 1 if self.how == "nearest" else self.k
        ties = 0
        if self.how in ("all", "one-to-one") or self.min_radius_arcsec > 0:
            li, ri, sep = algo.all_pairs_radec(*lpos, *rpos, self.radius_arcsec)
        else:
            # a KD-tree returns one of several right rows at the same distance at random; asking
            # for as many extra candidates as the right side has duplicated positions lets the
            # documented tie-break (right _healpix_29, then order) choose. The zones kernel applies
            # that tie-break itself; it still needs them with exclude_self, which drops every
            # duplicate of a row's own position.
            if not algo.breaks_ties or self.exclude_self:
                ties = 0 if right.index.is_unique else int(right.index.value_counts().max()) - 1
            li, ri, sep = algo.nearest_radec(
                *lpos,
                *rpos,
                k + ties + (1 if self.exclude_self else 0),
                self.radius_arcsec,
                right.index.to_numpy(),
            )
        keep = sep >= self.min_radius_arcsec
        if self.exclude_self:
            lhp, rhp = left.index.to_numpy(), right.index.to_numpy()
            same = (
                (lhp[li] == rhp[ri])
                & (left[lcoords[0]].to_numpy()[li] == right[rcoords[0]].to_numpy()[ri])
                & (left[lcoords[1]].to_numpy()[li] == right[rcoords[1]].to_numpy()[ri])
            )
            keep &= ~same
        li, ri, sep = li[keep], ri[keep], sep[keep]
        if (
            k == 1
            and self.how == "nearest"
            and not self.exclude_self
            and self.min_radius_arcsec == 0
            and ties == 0
        ):
            return li, ri, sep  # one candidate per left row, in left order: nothing to rank
        rhp = right.index.to_numpy()
        order = np.lexsort((ri, rhp[ri], sep, li))
        li, ri, sep = li[order], ri[order], sep[order]
        if self.how in ("nearest", "knn"):
            keep = _rank_within(li) < k
            li, ri, sep = li[keep], ri[keep], sep[keep]
        return li, ri, sep


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within runs of equal values of a sorted array."""
    if len(groups) == 0:
        return np.empty(0, np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    counts = np.diff(np.r_[starts, len(groups)])
    return np.arange(len(groups)) - np.repeat(starts, counts)


@dataclasses.dataclass(frozen=True)
class ZonesCrossmatch(CrossmatchMethod):
    """The compiled declination-zone sweep (the default kernel, ``--algorithm zones``)."""

    kernel_name: ClassVar[str] = "zones"


@dataclasses.dataclass(frozen=True)
class KDTreeCrossmatch(CrossmatchMethod):
    """scipy cKDTree on unit vectors (``--algorithm kdtree``)."""

    kernel_name: ClassVar[str] = "kdtree"


@dataclasses.dataclass(frozen=True)
class GridCrossmatch(CrossmatchMethod):
    """The sorted-grid kernel in NumPy (``--algorithm grid``)."""

    kernel_name: ClassVar[str] = "grid"


@dataclasses.dataclass(frozen=True)
class GPUCrossmatch(CrossmatchMethod):
    """The sorted-grid kernel on a CUDA GPU through CuPy (``--algorithm gpu`` / ``--gpu``)."""

    kernel_name: ClassVar[str] = "gpu"


METHODS: dict[str, type[CrossmatchMethod]] = {
    "zones": ZonesCrossmatch,
    "kdtree": KDTreeCrossmatch,
    "grid": GridCrossmatch,
    "gpu": GPUCrossmatch,
}


def method_for(name: str, **parameters) -> CrossmatchMethod:
    """The algorithm object for a kernel name (``--algorithm``) and the match parameters."""
    check_algorithm(name)
    return METHODS[name](**parameters)
