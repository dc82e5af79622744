"""Skew in the cross-match: a sparse target list against a dense catalog opens only the right
partitions holding targets, and a straggler left partition is split into several tasks with the
same pairs in the same order, written and resumed with --out."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from survey_engine import open_catalog
from survey_engine.bench.suites.skew import (
    QUICK_BASE_PIXELS,
    QUICK_ORDER,
    dense_catalog,
    dense_rows,
    target_list,
)
from survey_engine.catalog.healpix import chord_for, radec_to_xyz
from survey_engine.crossmatch import crossmatch
from survey_engine.crossmatch import output as xm_output
from survey_engine.crossmatch import tasks as xm_tasks
from survey_engine.crossmatch.plan import plan_crossmatch
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import

RADIUS = 2.0


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    """2,048 partitions of ~100 rows (order 5 over two base pixels) with a 2" margin."""
    return dense_catalog(
        tmp_path_factory.mktemp("skew") / "dense", order=QUICK_ORDER, base_pixels=QUICK_BASE_PIXELS
    )


def _import(frame: pd.DataFrame, out: Path, client, max_rows: int, highest_order: int = 10) -> Path:
    src = out.with_suffix(".parquet")
    frame.to_parquet(src)
    run_import(
        ImportArguments(
            [str(src)],
            str(out),
            id_column="id",
            max_rows=max_rows,
            margin_arcsec=0,
            highest_order=highest_order,
        ),
        client=client,
        progress=False,
    )
    return out


def _truth(left: pd.DataFrame, right: pd.DataFrame, radius: float) -> set[tuple[int, int]]:
    """Nearest right row within ``radius`` of each left row, by one global cKDTree."""
    tree = cKDTree(radec_to_xyz(right.ra.to_numpy(), right.dec.to_numpy()))
    dist, idx = tree.query(
        radec_to_xyz(left.ra.to_numpy(), left.dec.to_numpy()), distance_upper_bound=chord_for(radius)
    )
    ok = np.isfinite(dist)
    return set(zip(left.id.to_numpy()[ok].tolist(), right.id.to_numpy()[idx[ok]].tolist()))


def test_sparse_targets_open_only_the_partitions_holding_them(dense, tmp_path, threads, monkeypatch):
    right_rows = dense_rows(QUICK_ORDER, QUICK_BASE_PIXELS)  # the catalog's rows, made again
    targets = target_list(
        right_rows, n=4_000, fields=6, base_pixels=QUICK_BASE_PIXELS, field_radius_deg=0.5, seed=5
    )
    left = open_catalog(_import(targets, tmp_path / "targets", threads, max_rows=10_000))
    right = open_catalog(dense)
    assert right.npartitions == 2048

    t0 = time.perf_counter()
    tasks = plan_crossmatch(left, right, RADIUS)
    assert time.perf_counter() - t0 < 5
    assert len(tasks) == left.npartitions
    overlapping = sum(len(t.right) for t in tasks)
    assert overlapping >= 2048 * 0.9  # the left partitions cover most of the right catalog

    opened = []
    real = xm_tasks.read_partition
    monkeypatch.setattr(
        xm_tasks, "read_partition", lambda f, *a, **k: (opened.append(str(f)), real(f, *a, **k))[1]
    )
    pairs = crossmatch(left, right, RADIUS).compute()
    right_files = {f for f in opened if f.startswith(str(right.path) + "/")}
    margin_files = {f for f in opened if f.startswith(str(right.margin.path) + "/")}
    # the right partitions holding targets, from the rows themselves
    from survey_engine.catalog.healpix import SPATIAL_INDEX_ORDER

    needed = np.unique(
        targets_hp := left.compute().index.to_numpy() >> (2 * (SPATIAL_INDEX_ORDER - QUICK_ORDER))
    )
    inside = needed[needed < QUICK_BASE_PIXELS * 4**QUICK_ORDER]
    assert len(right_files) == len(inside) and len(inside) < 2048 * 0.1, (len(right_files), len(inside))
    assert len(margin_files) <= len(right_files)
    assert len(opened) == len(right_files) + len(margin_files) + left.npartitions
    del targets_hp
    got = set(zip(pairs.id_1.tolist(), pairs.id_2.tolist()))
    truth = _truth(targets, right_rows, RADIUS)
    assert len(truth) > 100
    assert got == truth


@pytest.fixture(scope="module")
def straggler(tmp_path_factory, threads) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    """A left catalog of 24 partitions of ~1,000 rows and one of ~40,000 (a clump at the deepest
    order allowed), and a right catalog of the same sky jittered, with a 5" margin."""
    root = tmp_path_factory.mktemp("straggler")
    rng = np.random.default_rng(8)
    n = 24_000
    ra, dec = rng.uniform(30, 40, n), rng.uniform(0, 10, n)
    clump = 40_000
    ra = np.concatenate([ra, 35 + rng.normal(0, 0.02, clump)])
    dec = np.concatenate([dec, 5 + rng.normal(0, 0.02, clump)])
    ra = np.concatenate([ra, ra[:100]])  # duplicated positions: equal _healpix_29 values
    dec = np.concatenate([dec, dec[:100]])
    left = pd.DataFrame({"id": np.arange(len(ra)), "ra": ra, "dec": dec})
    sigma = 0.5 / 3600
    right = pd.DataFrame(
        {
            "id": np.arange(len(ra)) + 10**9,
            "ra": ra + rng.normal(0, sigma, len(ra)),
            "dec": dec + rng.normal(0, sigma, len(ra)),
        }
    )
    lpath = _import(left, root / "left", threads, max_rows=2_000, highest_order=6)
    src = root / "right.parquet"
    right.to_parquet(src)
    rpath = root / "right"
    run_import(
        ImportArguments([str(src)], str(rpath), id_column="id", max_rows=5_000, margin_arcsec=5.0),
        client=threads,
        progress=False,
    )
    return lpath, rpath, left, right


def test_a_straggler_partition_is_split_with_the_same_pairs_in_the_same_order(straggler, threads):
    lpath, rpath, left_rows, right_rows = straggler
    left, right = open_catalog(lpath), open_catalog(rpath)
    rows = left.partition_rows()
    assert max(rows) >= 10 * np.median(rows)
    whole = crossmatch(left, right, 3.0, how="knn", k=2, split_rows=0)
    split = crossmatch(left, right, 3.0, how="knn", k=2)
    assert len(whole.tasks) == left.npartitions
    pieces = [t for t in split.tasks if t.row_stop is not None]
    assert len(split.tasks) > left.npartitions and len({(t.left_order, t.left_pix) for t in pieces}) == 1
    assert sum(t.row_stop - t.row_start for t in pieces) == max(rows)
    assert (
        max(t.row_stop - t.row_start for t in pieces) <= max(np.median(rows), xm_tasks.MIN_PIECE_ROWS) + 100
    )
    a, b = whole.compute(), split.compute()
    pd.testing.assert_frame_equal(a, b)
    assert len(a) > 50_000
    nearest = crossmatch(left, right, 3.0).compute()
    assert set(zip(nearest.id_1.tolist(), nearest.id_2.tolist())) == _truth(left_rows, right_rows, 3.0)


def test_an_automatic_split_is_not_joined_again_when_written(straggler, threads, tmp_path, monkeypatch):
    lpath, rpath, _, _ = straggler
    left, right = open_catalog(lpath), open_catalog(rpath)
    result = crossmatch(left, right, 3.0)
    assert any(t.row_stop is not None for t in result.tasks)
    ran = []
    real_match = xm_output.match_task
    monkeypatch.setattr(xm_output, "match_task", lambda t, *a: (ran.append(t), real_match(t, *a))[1])
    out = result.write(tmp_path / "auto", client=threads)
    assert len(ran) == left.npartitions and all(t.row_stop is None for t in ran)
    pd.testing.assert_frame_equal(open_catalog(out).compute(), result.compute())


def test_split_tasks_write_and_resume(straggler, threads, tmp_path, monkeypatch):
    lpath, rpath, _, _ = straggler
    left, right = open_catalog(lpath), open_catalog(rpath)
    whole = crossmatch(left, right, 3.0, how="all", split_rows=0).write(tmp_path / "whole", client=threads)
    result = crossmatch(left, right, 3.0, how="all", split_rows=3_000)
    n_pieces = sum(t.row_stop is not None for t in result.tasks)
    assert n_pieces >= 10

    real_join = xm_output._join_pieces
    monkeypatch.setattr(xm_output, "_join_pieces", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        result.write(tmp_path / "split", client=threads)
    staging = tmp_path / "split.partial"
    assert len(list((staging / ".done").glob("task-*"))) == len(result.tasks)  # every piece has its marker
    monkeypatch.setattr(xm_output, "_join_pieces", real_join)

    ran = []
    real_match = xm_output.match_task
    monkeypatch.setattr(xm_output, "match_task", lambda t, *a: (ran.append(t), real_match(t, *a))[1])
    out = result.write(tmp_path / "split", client=threads)
    assert ran == []  # every task was done: only the pieces were joined
    a = open_catalog(whole).compute()
    b = open_catalog(out).compute()
    pd.testing.assert_frame_equal(a, b)
    assert not (out / ".done").exists() and not list(out.rglob("task-*"))


def test_a_catalog_of_many_partitions_opens_without_listing_its_files(dense, tmp_path, monkeypatch):
    """Above ``FILES_CHECKED_AT_OPEN`` partitions the files are not listed or stat-ed at open (the
    metadata is checked against itself); a missing file is still an error naming it, when read."""
    import shutil

    from survey_engine.catalog import integrity

    copy = tmp_path / "dense"
    shutil.copytree(dense, copy)
    monkeypatch.setattr(integrity, "FILES_CHECKED_AT_OPEN", 1_000)
    listed = []
    real_listing = integrity.files_on_disk
    monkeypatch.setattr(integrity, "files_on_disk", lambda d: (listed.append(d), real_listing(d))[1])
    catalog = open_catalog(copy)
    assert catalog.npartitions == 2048 and catalog.margin.npartitions > 1000 and listed == []
    victim = catalog.partition_files()[700]
    victim.unlink()
    assert open_catalog(copy).npartitions == 2048  # not seen at open
    with pytest.raises(integrity.CatalogIntegrityError, match=f"{victim}: partition file missing"):
        open_catalog(copy).compute()
    monkeypatch.setattr(integrity, "FILES_CHECKED_AT_OPEN", 100_000)  # below it: found at open
    with pytest.raises(integrity.CatalogIntegrityError, match="partition file missing"):
        open_catalog(copy)


@pytest.mark.parametrize(
    "how, join",
    [
        ("all", "left"),
        ("knn", "outer"),
        pytest.param("one-to-one", "inner", marks=pytest.mark.slow),  # 20 s: the greedy choice
        ("nearest", "left"),
    ],
)
def test_split_tasks_give_the_whole_partition_result_for_every_join(straggler, threads, how, join):
    lpath, rpath, _, _ = straggler
    left, right = open_catalog(lpath), open_catalog(rpath)
    kwargs = {"how": how, "join": join, "k": 2} if how == "knn" else {"how": how, "join": join}
    whole = crossmatch(left, right, 3.0, split_rows=0, **kwargs)
    split = crossmatch(left, right, 3.0, split_rows=5_000, **kwargs)
    assert len(split.tasks) > len(whole.tasks)
    pd.testing.assert_frame_equal(whole.compute(), split.compute())
