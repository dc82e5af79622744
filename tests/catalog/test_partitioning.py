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


def test_partitions_equal_hats_import_alignment():
    """The plan is hats-import's (generate_alignment with drop_empty_siblings=True, its default):
    the same (order, pixel, rows) on clumpy random skies."""
    from hats.pixel_math.partition_stats import generate_alignment

    rng = np.random.default_rng(8)
    for trial in range(6):
        order = int(rng.integers(2, 6))
        hist = np.zeros(12 * 4**order, dtype=np.int64)
        for _ in range(int(rng.integers(1, 6))):  # a few clumps of various sizes
            centre = int(rng.integers(len(hist)))
            spread = int(rng.integers(0, 3))
            lo = (centre >> (2 * spread)) << (2 * spread)
            hist[lo : lo + 4**spread] += rng.integers(0, 300, size=4**spread)
        for max_rows in (300, 1_000, 10**6):  # hats refuses a threshold below one pixel's rows
            plan = plan_partitions(hist, order, max_rows)
            alignment = generate_alignment(
                hist, highest_order=order, threshold=max_rows, drop_empty_siblings=True
            )
            theirs = {tuple(int(v) for v in a) for a, n in zip(alignment, hist) if n > 0 and a is not None}
            ours = set(zip(plan.orders.tolist(), plan.pixels.tolist(), plan.counts.tolist()))
            assert ours == theirs, (trial, max_rows)


def test_lone_deep_pixel_stays_at_its_order():
    hist = np.zeros(12 * 4**2, dtype=np.int64)
    hist[66] = 50
    plan = plan_partitions(hist, 2, max_rows=1_000)
    assert list(zip(plan.orders.tolist(), plan.pixels.tolist())) == [
        (2, 66)
    ]  # hats-import's; top-down gave (0, 4)
    top_down = plan_partitions(hist, 2, max_rows=1_000, drop_empty_siblings=False)
    assert list(zip(top_down.orders.tolist(), top_down.pixels.tolist())) == [(0, 4)]
