"""Aligning two partitionings for a cross-match, so that every pair at every edge is found once.

Each left partition is one task. Inside it, left rows are grouped by the right partition that
contains them, and each group is matched against that right partition plus its margin (which
holds every right row within the margin radius of it). Left rows that no right partition
contains are matched against all right partitions within the radius of the left partition.
Every left row is matched exactly once and sees every right row within the radius.
"""

from __future__ import annotations

import functools
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


@dataclass(frozen=True)
class MatchTask:
    left_file: str
    left_order: int
    left_pix: int
    groups: tuple[RightGroup, ...]
    orphan_files: tuple[str, ...] = field(default=())  # right partitions near uncovered left rows
    file_rows: tuple[tuple[str, int], ...] = field(
        default=()
    )  # rows each file holds, by the catalogs' metadata


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
    check_margin(right, radius_arcsec)
    r_orders = right.partitions.Norder.to_numpy()
    r_pixels = right.partitions.Npix.to_numpy()
    r_start, r_stop = pixel_range29(r_orders, r_pixels)
    # file names are made only for the right partitions a task uses (a remote one is a UPath,
    # slow to make by the hundred); every read checks its file's rows against the metadata
    r_rows = right._expected_rows()
    margin_rows = dict(
        zip(
            zip(right.margin.partitions.Norder.tolist(), right.margin.partitions.Npix.tolist()),
            right.margin._expected_rows(),
        )
    )
    rows_of: dict = {}

    @functools.cache
    def r_file(i: int):
        f = storage.portable(layout.partition_path(right.path, int(r_orders[i]), int(r_pixels[i])))
        rows_of[f] = r_rows[i]
        return f

    @functools.cache
    def margin_file(key: tuple[int, int]):
        f = storage.portable(layout.partition_path(right.margin.path, *key))
        rows_of[f] = margin_rows[key]
        return f

    rows_of.update(zip(map(storage.portable, left.partition_files()), left._expected_rows()))
    m = margin_order_for_radius(radius_arcsec)
    tasks = []
    for l_order, l_pix, l_file in zip(
        left.partitions.Norder.tolist(), left.partitions.Npix.tolist(), left.partition_files()
    ):
        l_start, l_stop = (int(v) for v in pixel_range29(l_order, l_pix))
        first = int(np.searchsorted(r_stop, l_start, side="right"))
        groups, covered = [], 0
        for i in range(first, len(r_start)):
            if r_start[i] >= l_stop:
                break
            s, e = max(l_start, int(r_start[i])), min(l_stop, int(r_stop[i]))
            covered += e - s
            key = (int(r_orders[i]), int(r_pixels[i]))
            files = (r_file(i),) + ((margin_file(key),) if key in margin_rows else ())
            groups.append(RightGroup(s, e, files))
        orphans: tuple[str, ...] = ()
        if covered < l_stop - l_start:
            ring = margin_ring(l_order, l_pix, m)
            cov = normalise_ranges(*pixel_range29(np.full(len(ring), m), ring))
            cov = normalise_ranges(np.append(cov[0], l_start), np.append(cov[1], l_stop))
            near = np.flatnonzero(ranges_overlap(r_start, r_stop, cov))
            orphans = tuple(r_file(int(i)) for i in near)
        used = (storage.portable(l_file), *(f for g in groups for f in g.files), *orphans)
        file_rows = tuple((f, rows_of[f]) for f in dict.fromkeys(used) if rows_of.get(f) is not None)
        tasks.append(MatchTask(storage.portable(l_file), l_order, l_pix, tuple(groups), orphans, file_rows))
    return tasks
