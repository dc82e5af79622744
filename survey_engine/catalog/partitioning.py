"""Adaptive HEALPix partitioning: split a pixel until it holds at most ``max_rows`` rows.

The plan is computed from a histogram of row counts at a fine order (the histogram pass of an
import), so the data never has to be in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from survey_engine.catalog.healpix import SPATIAL_INDEX_ORDER
from survey_engine.errors import UsageError


@dataclass(frozen=True)
class PartitionPlan:
    """Partitions sorted by their nested range, and a lookup from order-29 index to partition."""

    orders: np.ndarray  # int64, one per partition
    pixels: np.ndarray  # int64
    counts: np.ndarray  # rows expected in each partition
    starts29: np.ndarray  # first order-29 index of each partition (sorted)

    def __len__(self) -> int:
        return len(self.orders)

    def partition_of(self, hp29: np.ndarray) -> np.ndarray:
        """Index of the partition holding each order-29 index (rows must be in planned pixels)."""
        return np.searchsorted(self.starts29, hp29, side="right") - 1

    @classmethod
    def from_arrays(cls, orders, pixels, counts) -> "PartitionPlan":
        orders = np.asarray(orders, dtype=np.int64)
        pixels = np.asarray(pixels, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        starts = pixels << (2 * (SPATIAL_INDEX_ORDER - orders))
        order = np.argsort(starts, kind="stable")
        return cls(orders[order], pixels[order], counts[order], starts[order])


def plan_partitions(
    histogram: np.ndarray,
    histogram_order: int,
    max_rows: int,
    min_order: int = 0,
    drop_empty_siblings: bool = True,
) -> PartitionPlan:
    """Adaptive partitions from a dense row-count histogram at ``histogram_order``."""
    histogram = np.asarray(histogram)
    if len(histogram) != 12 * 4**histogram_order:
        raise UsageError(
            f"histogram has {len(histogram)} bins, expected {12 * 4**histogram_order} for order {histogram_order}"
        )
    pixels = np.flatnonzero(histogram)
    return plan_partitions_sparse(
        pixels, histogram[pixels], histogram_order, max_rows, min_order, drop_empty_siblings
    )


def plan_partitions_sparse(
    pixels: np.ndarray,
    counts: np.ndarray,
    histogram_order: int,
    max_rows: int,
    min_order: int = 0,
    drop_empty_siblings: bool = True,
) -> PartitionPlan:
    """Adaptive partitions from sparse counts (sorted unique ``pixels`` at ``histogram_order``).

    With ``drop_empty_siblings`` (the default, as hats-import's): hats' bottom-up rule
    (``generate_alignment(..., drop_empty_siblings=True)``): a pixel's rows are merged into its
    parent at order k when that parent holds at most ``max_rows`` rows in at least two non-empty
    children; the coarsest such parent wins. A lone clump therefore stays at the deep order where
    it is alone (an isolated order-2 pixel stays (2, 66), not (0, 4)). Without it: top-down, a
    pixel is kept whole when it holds at most ``max_rows`` rows. Either way a pixel at
    ``histogram_order`` is never split and empty pixels get no partition. Memory is
    proportional to the occupied pixels, not to the 12 * 4**order pixels of the sphere.
    """
    if max_rows < 1:
        raise UsageError(f"max_rows must be at least 1, got {max_rows}")
    if not 0 <= min_order <= histogram_order:
        raise UsageError(f"min_order must be within [0, {histogram_order}], got {min_order}")
    pixels = np.asarray(pixels, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    by_order = {histogram_order: (pixels, counts)}
    for order in range(histogram_order - 1, min_order - 1, -1):
        fine_pix, fine_cnt = by_order[order + 1]
        parent = fine_pix >> 2
        uniq, first = np.unique(parent, return_index=True)
        by_order[order] = (uniq, np.add.reduceat(fine_cnt, first) if len(fine_cnt) else fine_cnt)
    if drop_empty_siblings:
        return _plan_bottom_up(by_order, histogram_order, max_rows, min_order)

    out_orders, out_pixels, out_counts = [], [], []
    split_parents = None  # pixels at the previous order that were split
    for order in range(min_order, histogram_order + 1):
        pix, cnt = by_order[order]
        if split_parents is not None:
            inside = np.isin(pix >> 2, split_parents)
            pix, cnt = pix[inside], cnt[inside]
        last = order == histogram_order
        keep = np.ones(len(pix), dtype=bool) if last else cnt <= max_rows
        out_orders.append(np.full(int(keep.sum()), order, dtype=np.int64))
        out_pixels.append(pix[keep])
        out_counts.append(cnt[keep])
        split_parents = pix[~keep]
        if len(split_parents) == 0:
            break
    return PartitionPlan.from_arrays(
        np.concatenate(out_orders), np.concatenate(out_pixels), np.concatenate(out_counts)
    )


def _plan_bottom_up(by_order: dict, highest: int, max_rows: int, min_order: int) -> PartitionPlan:
    """hats' ``_get_alignment_dropping_siblings`` on sparse counts (see ``plan_partitions_sparse``)."""
    pix_h, cnt_h = by_order[highest]
    dest = np.full(len(pix_h), highest, dtype=np.int64)
    for order in range(highest - 1, min_order - 1, -1):
        fine_pix, fine_cnt = by_order[order + 1]
        cells, cell_cnt = by_order[order]
        if len(fine_pix) == 0:
            continue
        first = np.flatnonzero(np.r_[True, np.diff(fine_pix >> 2) != 0])
        children = np.diff(np.r_[first, len(fine_pix)])
        collapse = cells[(children >= 2) & (cell_cnt <= max_rows)]
        if len(collapse):
            dest[np.isin(pix_h >> (2 * (highest - order)), collapse)] = order
    out_pix = pix_h >> (2 * (highest - dest))
    keys = np.unique(np.stack([dest, out_pix], axis=1), axis=0, return_inverse=True)
    (uniq, inverse) = keys
    counts = np.bincount(inverse.ravel(), weights=cnt_h, minlength=len(uniq)).astype(np.int64)
    return PartitionPlan.from_arrays(uniq[:, 0], uniq[:, 1], counts)
