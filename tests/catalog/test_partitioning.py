import numpy as np
import pytest

from survey_engine.catalog.healpix import radec_to_healpix
from survey_engine.catalog.partitioning import plan_partitions


def test_plan_covers_every_row_once_and_respects_threshold():
    rng = np.random.default_rng(0)
    ra = np.concatenate([rng.uniform(0, 360, 100_000), rng.normal(10, 0.5, 50_000) % 360])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 100_000))), rng.normal(20, 0.5, 50_000)])
    hist = np.bincount(radec_to_healpix(ra, dec, 8), minlength=12 * 4**8)
    plan = plan_partitions(hist, 8, max_rows=5_000)
    assert plan.counts.sum() == len(ra)
    assert plan.counts.max() <= 5_000
    assert len(set(plan.orders.tolist())) > 1  # the dense clump is split deeper than the rest
    part = plan.partition_of(radec_to_healpix(ra, dec))
    counts = np.bincount(part, minlength=len(plan))
    assert np.array_equal(counts, plan.counts)
    # every row's partition pixel contains it
    hp_at = radec_to_healpix(ra, dec, 8) >> (2 * (8 - plan.orders[part]))
    assert np.array_equal(hp_at, plan.pixels[part])


def test_plan_keeps_dense_pixel_at_highest_order():
    hist = np.zeros(12 * 4**2, dtype=np.int64)
    hist[7] = 10_000
    plan = plan_partitions(hist, 2, max_rows=10)
    assert plan.orders.tolist() == [2] and plan.pixels.tolist() == [7]


def test_plan_rejects_zero_threshold():
    with pytest.raises(ValueError, match="max_rows"):
        plan_partitions(np.zeros(12, dtype=np.int64), 0, 0)


def test_sparse_planner_equals_dense_planner():
    from survey_engine.catalog.partitioning import plan_partitions_sparse

    rng = np.random.default_rng(3)
    for trial in range(5):
        order = int(rng.integers(2, 7))
        hist = np.zeros(12 * 4**order, dtype=np.int64)
        occupied = rng.choice(len(hist), size=len(hist) // 3, replace=False)
        hist[occupied] = rng.integers(1, 400, size=len(occupied))
        hist[int(rng.integers(len(hist)))] = 50_000  # one dense spot
        for max_rows in (300, 5_000, 10**9):
            dense = plan_partitions(hist, order, max_rows)
            pix = np.flatnonzero(hist)
            sparse = plan_partitions_sparse(pix, hist[pix], order, max_rows)
            assert np.array_equal(dense.orders, sparse.orders) and np.array_equal(dense.pixels, sparse.pixels)
            assert np.array_equal(dense.counts, sparse.counts) and dense.counts.sum() == hist.sum()
