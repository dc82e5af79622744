"""Where the match tasks of ``compute()`` run: on a LocalCluster of this process, in threads here
(nothing pickled between processes); on a scheduler given by address, on its workers. Both paths
give the brute-force pairs."""

import os
import threading
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord, search_around_sky

from survey_engine import open_catalog
from survey_engine.bench.suites.common import task_profile
from survey_engine.crossmatch import crossmatch
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from tests.catalog.brute import edge_stress_sky

RADIUS = 8.0


@pytest.fixture(scope="module")
def sides(tmp_path_factory, client):
    """Left (6,000 rows at poles, RA 0 and pixel borders) and right (left jittered plus extra rows),
    several partitions each, with brute-force nearest pairs within RADIUS."""
    root = tmp_path_factory.mktemp("xm_path")
    rng = np.random.default_rng(5)
    a = edge_stress_sky(3000, seed=21).sample(n=6000, random_state=1).reset_index(drop=True)
    a["id"] = np.arange(len(a))
    b = a.sample(frac=0.8, random_state=2).reset_index(drop=True)
    b["ra"] = (b.ra + rng.normal(0, 2 / 3600, len(b)) / np.maximum(np.cos(np.radians(b.dec)), 1e-3)) % 360
    b["dec"] = np.clip(b.dec + rng.normal(0, 2 / 3600, len(b)), -90, 90)
    b["id"] = np.arange(len(b)) + 10**6
    for name, frame, margin in (("left", a, 0.0), ("right", b, 10.0)):
        frame.to_parquet(root / f"{name}.parquet")
        run_import(
            ImportArguments(
                [str(root / f"{name}.parquet")],
                str(root / name),
                id_column="id",
                max_rows=700,
                margin_arcsec=margin,
            ),
            client=client,
            progress=False,
        )
    ca, cb = (
        SkyCoord(a.ra.values * u.deg, a.dec.values * u.deg),
        SkyCoord(b.ra.values * u.deg, b.dec.values * u.deg),
    )
    ia, ib, sep, _ = search_around_sky(ca, cb, RADIUS * u.arcsec)
    truth = pd.DataFrame({"id_1": a.id.values[ia], "id_2": b.id.values[ib], "sep": sep.arcsec})
    truth = truth.sort_values(["id_1", "sep", "id_2"]).drop_duplicates("id_1")
    return open_catalog(root / "left"), open_catalog(root / "right"), set(zip(truth.id_1, truth.id_2))


def _profiled_match(left, right, client):
    profile: list = []
    with task_profile(client, profile):
        got = crossmatch(
            left, right, RADIUS, left_columns=["id"], right_columns=["id"], client=client
        ).compute()
    assert profile[0]["tasks"] >= len(left.partitions)  # each task timed, wherever it ran
    return got, profile[0]["worker_tasks"]


def test_a_local_cluster_matches_in_threads_here_with_the_brute_force_pairs(sides, client, monkeypatch):
    import survey_engine.crossmatch.match as xm

    left, right, truth = sides
    where: list = []
    original = xm.match_task

    def recorded(*args):
        where.append((os.getpid(), threading.current_thread().name))
        result = original(*args)
        written.append(isinstance(result, int))
        return result

    written: list = []

    monkeypatch.setattr(xm, "match_task", recorded)
    got, worker_tasks = _profiled_match(left, right, client)
    assert len(truth) > 4000 and set(zip(got.id_1, got.id_2)) == truth and len(got) == len(truth)
    assert np.all(np.diff(got.index.to_numpy()) >= 0)  # sorted like the left catalog
    assert worker_tasks == 0  # no task reached the workers
    assert len(where) == len(left.partitions) > 4
    assert {pid for pid, _ in where} == {os.getpid()}
    assert all(name.startswith("se-crossmatch") for _, name in where)
    # a task whose rows are in output order writes them into the result's columns itself (the
    # others return a frame that is copied there); the address test below compares both paths
    assert sum(written) >= len(written) // 2 > 0, written


def test_a_scheduler_given_by_address_matches_on_its_workers_with_the_same_pairs(sides, client):
    from distributed import Client

    left, right, truth = sides
    local, _ = _profiled_match(left, right, client)
    with Client(client.scheduler.address, set_as_default=False) as remote:
        with remote.as_current():
            got, worker_tasks = _profiled_match(left, right, remote)
    assert worker_tasks == len(left.partitions)  # every match task ran on a worker
    assert set(zip(got.id_1, got.id_2)) == truth
    pd.testing.assert_frame_equal(got, local)  # identical rows, order and dtypes on both paths


def test_threads_here_read_each_right_partition_once(sides, client, monkeypatch, tmp_path):
    """Left partitions finer than the right ones (several beside each right partition): on the
    threads path each right partition and margin file is read once per run (``tasks.shared_reads``,
    where each task read its own copy before), with the same pairs; each task still reads its own
    left partition."""
    from contextlib import nullcontext

    import survey_engine.crossmatch.match as xm
    import survey_engine.crossmatch.tasks as xt

    _, right, truth = sides
    fine = tmp_path / "left_fine"
    source = next(d / "left.parquet" for d in Path(right.path).parents if (d / "left.parquet").is_file())
    run_import(
        ImportArguments([str(source)], str(fine), id_column="id", max_rows=150),
        client=client,
        progress=False,
    )
    left = open_catalog(fine)
    right_files = {str(f) for f in right.partition_files()} | {str(f) for f in right.margin.partition_files()}
    reads: list = []
    original = xt.read_partition

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(xt, "read_partition", counted)

    def matched() -> list:
        reads.clear()
        got = crossmatch(
            left, right, RADIUS, left_columns=["id"], right_columns=["id"], client=client
        ).compute()
        assert set(zip(got.id_1, got.id_2)) == truth and len(got) == len(truth)
        assert len(reads) - sum(r in right_files for r in reads) == len(left.partitions)
        return [r for r in reads if r in right_files]

    shared = matched()
    assert len(shared) == len(set(shared)) > 1  # each right partition and margin file read once
    assert xt._SHARED_READS is None  # nothing kept after the run
    monkeypatch.setattr(xm, "shared_reads", nullcontext)
    assert len(matched()) > len(shared)  # without: a right file read by every left partition beside it


def test_shared_reads_waits_for_a_read_under_way_and_drops_the_least_recent():
    import time
    from concurrent.futures import ThreadPoolExecutor

    from survey_engine.crossmatch.tasks import SharedReads

    shared = SharedReads(max_bytes=3 * (8 * 1000 + 200))  # three 1,000-row float columns (and indexes)
    calls: list = []

    def slow_read(key):
        def read():
            calls.append(key)
            time.sleep(0.2)
            return pd.DataFrame({"x": np.full(1000, float(key))}, index=pd.RangeIndex(1000))

        return read

    with ThreadPoolExecutor(4) as pool:
        frames = list(pool.map(lambda _: shared.get(1, slow_read(1)), range(4)))
    assert calls == [1] and all(f is frames[0] for f in frames)  # one read, waited for by the others
    for key in (2, 3, 4):
        shared.get(key, slow_read(key))
    assert list(shared.held) == [2, 3, 4] and shared.bytes <= shared.max_bytes  # 1 dropped first
    shared.get(2, slow_read(2))  # held: no read
    assert calls == [1, 2, 3, 4] and shared.hits == 4

    def failing():
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        shared.get(9, failing)
    assert 9 not in shared.reading and 9 not in shared.held  # a failed read leaves nothing behind


def test_runs_at_the_same_time_share_one_set_of_reads_dropped_when_the_last_ends():
    import survey_engine.crossmatch.tasks as xt

    first = xt.shared_reads()
    a = first.__enter__()
    with xt.shared_reads() as b:  # a second compute() while the first runs
        assert b is a and xt._SHARED_READS is a
        first.__exit__(None, None, None)  # the first run ends before the second
        assert xt._SHARED_READS is b
    assert xt._SHARED_READS is None  # nothing left behind, whatever order they ended in


def test_the_bytes_a_shared_read_is_counted_at_are_pandas_own():
    from survey_engine.crossmatch.tasks import frame_bytes

    frame = pd.DataFrame(
        {"ra": np.zeros(1000), "id": np.arange(1000), "flag": np.zeros(1000, np.int8)},
        index=pd.Index(np.arange(1000, dtype=np.int64), name="_healpix_29"),
    )
    assert frame_bytes(frame) == int(frame.memory_usage(index=True, deep=False).sum()) == 1000 * 25
