"""Aligning two partitionings for a cross-match, so that every pair at every edge is found once.

Each left partition is one task. Inside it, left rows are grouped by the right partition that
contains them, and each group is matched against that right partition plus its margin (which
holds every right row within the margin radius of it). Left rows that no right partition
contains are matched against all right partitions within the radius of the left partition.
Every left row is matched exactly once and sees every right row within the radius.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from survey_engine.catalog import layout, storage
from survey_engine.catalog.catalog import Catalog
from survey_engine.catalog.healpix import margin_order_for_radius, pixel_range29
from survey_engine.catalog.margins import margin_ring
from survey_engine.catalog.selection import normalise_ranges, ranges_overlap
from survey_engine.errors import SurveyEngineError, option


class MarginTooSmallError(SurveyEngineError, ValueError):
    """The right catalog's margin is narrower than the match radius: edge pairs would be lost."""


@dataclass(frozen=True)
class RightGroup:
    start29: int  # the left rows in [start29, stop29) are matched against ``files``
    stop29: int
    files: tuple[str, ...]  # a right partition and its margin partition (if it has one); a UPath where remote


@dataclass(frozen=True, eq=False, repr=False)
class RightPartitions:
    """The right partitions that overlap one left partition, as arrays: a left partition over a
    dense right catalog overlaps thousands of them (a sparse target list over 10^5 partitions), and
    a task makes file names only for the few that hold its left rows (``MatchTask.right_jobs``)."""

    catalog: object  # the right catalog's folder (a string; a UPath where remote)
    margin: object | None  # its margin catalog's folder
    suffix: str  # hats_npix_suffix of each
    margin_suffix: str
    start29: np.ndarray  # each partition's order-29 range, clipped to the left partition
    stop29: np.ndarray
    orders: np.ndarray
    pixels: np.ndarray
    rows: np.ndarray  # rows the catalog's metadata gives each partition (-1: unknown)
    margin_rows: np.ndarray  # rows of its margin partition (-2: it has none; -1: unknown)

    def __len__(self) -> int:
        return len(self.start29)

    def __repr__(self) -> str:
        """Complete and stable (a written result's fingerprint holds it): the folders and a digest
        of the arrays."""
        import hashlib

        digest = hashlib.sha256()
        for a in (self.start29, self.stop29, self.orders, self.pixels, self.rows, self.margin_rows):
            digest.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return (
            f"RightPartitions({self.catalog!s}, {self.margin!s}, {len(self)} partitions, "
            f"{digest.hexdigest()[:16]})"
        )

    def group(self, i: int) -> tuple[RightGroup, dict]:
        """Partition ``i`` as a ``RightGroup`` (its file and its margin's) and those files' rows."""
        order, pix = int(self.orders[i]), int(self.pixels[i])
        files, rows = [_file_of(self.catalog, layout.partition_relpath(order, pix, self.suffix))], {}
        if self.rows[i] >= 0:
            rows[files[0]] = int(self.rows[i])
        if self.margin is not None and self.margin_rows[i] != -2:
            files.append(_file_of(self.margin, layout.partition_relpath(order, pix, self.margin_suffix)))
            if self.margin_rows[i] >= 0:
                rows[files[1]] = int(self.margin_rows[i])
        return RightGroup(int(self.start29[i]), int(self.stop29[i]), tuple(files)), rows


def _file_of(catalog_dir, relpath: str):
    if storage.is_remote(catalog_dir):
        return storage.portable(catalog_dir.joinpath(f"{layout.DATASET_DIR}/{relpath}"))
    return f"{catalog_dir}/{layout.DATASET_DIR}/{relpath}"


@dataclass(frozen=True)
class MatchTask:
    """One task: the rows of a left partition (all of them, or rows ``row_start`` to ``row_stop``
    of its file when a large partition is split: ``tasks.split_large_tasks``) against the right
    partitions that overlap it."""

    left_file: str
    left_order: int
    left_pix: int
    right: RightPartitions
    orphan_files: tuple[str, ...] = field(default=())  # right partitions near uncovered left rows
    file_rows: tuple[tuple[str, int], ...] = field(
        default=()
    )  # rows the left file and the orphan files hold, by the catalogs' metadata
    row_start: int | None = None  # a piece of a split partition: its rows [row_start, row_stop)
    row_stop: int | None = None

    @property
    def groups(self) -> tuple[RightGroup, ...]:
        """Every overlapping right partition as a ``RightGroup`` (files named)."""
        return tuple(self.right.group(i)[0] for i in range(len(self.right)))

    def right_jobs(self, hp29: np.ndarray) -> tuple[list[tuple[np.ndarray, tuple]], dict]:
        """(left row indices, right files) for each right partition that holds some of the left
        rows with these ``_healpix_29`` values, and those files' rows by the metadata: only those
        partitions are ever opened."""
        r = self.right
        if len(r) == 0 or len(hp29) == 0:
            return [], {}
        if bool(np.all(hp29[1:] >= hp29[:-1])):  # partitions are sorted by _healpix_29
            lo = np.searchsorted(hp29, r.start29, side="left")
            hi = np.searchsorted(hp29, r.stop29, side="left")
            hits = np.flatnonzero(hi > lo)
            spans = [np.arange(lo[i], hi[i]) for i in hits.tolist()]
        else:
            which = np.searchsorted(r.stop29, hp29, side="right")
            inside = (which < len(r)) & (hp29 >= r.start29[np.minimum(which, len(r) - 1)])
            hits = np.unique(which[inside])
            spans = [np.flatnonzero(inside & (which == i)) for i in hits.tolist()]
        jobs, rows = [], {}
        for i, span in zip(hits.tolist(), spans):
            group, group_rows = r.group(i)
            jobs.append((span, group.files))
            rows.update(group_rows)
        return jobs, rows


BUILD_MARGIN = option("--build-margin", "build_margin=True")


def check_margin(right: Catalog, radius_arcsec: float) -> None:
    if right.margin is None:
        raise MarginTooSmallError(
            f"{right.path}: the right catalog has no margin, so matches across its partition edges would be lost; "
            f"build one with `survey-engine margin {right.path} --radius {radius_arcsec:g}`, or add {BUILD_MARGIN} to the crossmatch"
        )
    if right.margin_radius_arcsec < radius_arcsec:
        raise MarginTooSmallError(
            f"{right.path}: its margin is {right.margin_radius_arcsec:g} arcsec, smaller than the match radius {radius_arcsec:g} arcsec "
            f"(radius plus the largest proper-motion shift, when propagating epochs); "
            f"build a wider one with `survey-engine margin {right.path} --radius {radius_arcsec:g}`, or add {BUILD_MARGIN} to the crossmatch"
        )


def plan_crossmatch(left: Catalog, right: Catalog, radius_arcsec: float) -> list[MatchTask]:
    """One task per left partition, with the right partitions that overlap it (as arrays: no
    per-partition Python work over the right catalog, whose partitions may number 10^5) and, for
    left rows no right partition covers, the right partitions within the radius of them."""
    check_margin(right, radius_arcsec)
    r_orders = right.partitions.Norder.to_numpy(dtype=np.int64)
    r_pixels = right.partitions.Npix.to_numpy(dtype=np.int64)
    r_start, r_stop = (np.asarray(a, dtype=np.int64) for a in pixel_range29(r_orders, r_pixels))
    r_rows = _rows_array(right._expected_rows())
    m_uniq = _uniq(right.margin.partitions.Norder.to_numpy(), right.margin.partitions.Npix.to_numpy())
    m_rows = _rows_array(right.margin._expected_rows())
    by_uniq = np.argsort(m_uniq, kind="stable")
    m_uniq, m_rows = m_uniq[by_uniq], m_rows[by_uniq]
    where = np.minimum(np.searchsorted(m_uniq, _uniq(r_orders, r_pixels)), max(len(m_uniq) - 1, 0))
    has_margin = (
        (m_uniq[where] == _uniq(r_orders, r_pixels)) if len(m_uniq) else np.zeros(len(r_orders), bool)
    )
    r_margin_rows = np.where(has_margin, m_rows[where] if len(m_uniq) else -2, -2)

    l_orders = left.partitions.Norder.to_numpy(dtype=np.int64)
    l_pixels = left.partitions.Npix.to_numpy(dtype=np.int64)
    l_start, l_stop = (np.asarray(a, dtype=np.int64) for a in pixel_range29(l_orders, l_pixels))
    # right partitions are disjoint and sorted: those overlapping a left one are a contiguous run
    first = np.searchsorted(r_stop, l_start, side="right")
    last = np.maximum(np.searchsorted(r_start, l_stop, side="left"), first)
    counts = last - first
    owner = np.repeat(np.arange(len(l_start)), counts)
    index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(first, counts)
    clip_start = np.maximum(r_start[index], l_start[owner])
    clip_stop = np.minimum(r_stop[index], l_stop[owner])
    covered = np.concatenate([[0], np.cumsum(clip_stop - clip_start)])
    ends = np.cumsum(counts)
    covered = covered[ends] - covered[ends - counts]

    right_dir, margin_dir = storage.portable(right.path), storage.portable(right.margin.path)
    suffix, margin_suffix = layout.npix_suffix(right.path), layout.npix_suffix(right.margin.path)
    l_rows = left._expected_rows()
    m = margin_order_for_radius(radius_arcsec)
    tasks = []
    for i, l_file in enumerate(left.partition_files()):
        lo, hi = int(ends[i] - counts[i]), int(ends[i])
        run = index[lo:hi]
        overlapping = RightPartitions(
            right_dir,
            margin_dir,
            suffix,
            margin_suffix,
            clip_start[lo:hi],
            clip_stop[lo:hi],
            r_orders[run],
            r_pixels[run],
            r_rows[run],
            r_margin_rows[run],
        )
        l_file = storage.portable(l_file)
        file_rows = [(l_file, l_rows[i])] if l_rows[i] is not None else []
        orphans: tuple[str, ...] = ()
        if covered[i] < l_stop[i] - l_start[i]:
            ring = margin_ring(int(l_orders[i]), int(l_pixels[i]), m)
            cov = normalise_ranges(*pixel_range29(np.full(len(ring), m), ring))
            cov = normalise_ranges(np.append(cov[0], l_start[i]), np.append(cov[1], l_stop[i]))
            near = np.flatnonzero(ranges_overlap(r_start, r_stop, cov))
            orphans = tuple(
                _file_of(right_dir, layout.partition_relpath(int(r_orders[j]), int(r_pixels[j]), suffix))
                for j in near
            )
            file_rows += [(f, int(r_rows[j])) for f, j in zip(orphans, near) if r_rows[j] >= 0]
        tasks.append(
            MatchTask(
                l_file,
                int(l_orders[i]),
                int(l_pixels[i]),
                overlapping,
                orphans,
                tuple(dict(file_rows).items()),
            )
        )
    return tasks


def _rows_array(rows: list) -> np.ndarray:
    return np.array([-1 if r is None else int(r) for r in rows], dtype=np.int64)


def _uniq(orders, pixels) -> np.ndarray:
    """HEALPix NUNIQ numbers (4 * 4**order + pixel): one integer per (order, pixel)."""
    orders = np.asarray(orders, dtype=np.int64)
    return (np.int64(4) << (2 * orders)) + np.asarray(pixels, dtype=np.int64)
