"""A cross-match written with --out resumes from the partitions an interrupted write finished (the
fault tests in tests/test_faults.py do this with real processes, signals and a full tmpfs)."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_engine import open_catalog
from survey_engine.crossmatch import crossmatch
from survey_engine.crossmatch import output as xm_output
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from tests.conftest import LateTask

RADIUS = 300.0


@pytest.fixture(scope="module")
def sky(tmp_path_factory, threads) -> Path:
    root = tmp_path_factory.mktemp("xm_output")
    src = root / "sky.parquet"
    rng = np.random.default_rng(11)  # 40,000 rows on 100 deg^2: a neighbour within 5' for most
    n = 40_000
    frame = pd.DataFrame({"id": np.arange(n), "ra": rng.uniform(10, 20, n), "dec": rng.uniform(-5, 5, n)})
    frame.to_parquet(src)
    out = root / "sky"
    run_import(
        ImportArguments([str(src)], str(out), id_column="id", max_rows=1_000, margin_arcsec=RADIUS),
        client=threads,
        progress=False,
    )
    return out


def _settle(client, timeout: float = 120) -> None:
    """Until the tasks of a failed write that were already running have finished (threads here; a
    killed process's tasks end with it): they must not write into the next run's staging folder."""
    workers = list(client.cluster.workers.values())  # in this process: their state is at hand
    scheduler = client.cluster.scheduler
    deadline, quiet_since = time.time() + timeout, None
    while time.time() < deadline:  # quiet for half a second: a cancelled task that was queued, not
        # running, when the write failed may still start before the cancel reaches its worker
        busy = any(w.state.executing_count or w.state.ready for w in workers) or any(
            t.state in ("processing", "waiting", "queued") for t in list(scheduler.tasks.values())
        )
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 0.5:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the failed write's tasks still ran after {timeout} s")


def _rows(path: Path) -> pd.DataFrame:
    frame = open_catalog(path).compute().reset_index()
    return frame.sort_values(["id_1", "id_2"]).reset_index(drop=True)


def _files(folder: Path) -> dict[str, int]:
    return {
        str(Path(*p.relative_to(folder).parts[1:])): p.stat().st_ino  # below the catalog's folder
        for p in folder.rglob("Npix=*.parquet")
        if not p.name.startswith(".")
    }


def test_an_interrupted_write_resumes_from_its_finished_partitions(sky, tmp_path, threads, monkeypatch):
    result = crossmatch(open_catalog(sky), open_catalog(sky), RADIUS, how="knn", k=2, exclude_self=True)
    whole = result.write(tmp_path / "whole", client=threads)
    assert len(result.tasks) >= 20

    real = xm_output.write_frame_partition
    calls = []

    def disk_fills_up(frame, catalog_dir, order, pix, owner=None):
        calls.append((order, pix))
        if len(calls) > 8:
            raise OSError(errno.ENOSPC, "No space left on device", str(catalog_dir))
        return real(frame, catalog_dir, order, pix, owner)

    monkeypatch.setattr(xm_output, "write_frame_partition", disk_fills_up)
    out = tmp_path / "pairs"
    with pytest.raises(OSError, match="No space left"):
        result.write(out, client=threads)
    _settle(threads)
    assert not out.exists()
    partial = out.with_name("pairs.partial")
    finished = _files(partial)
    assert 0 < len(finished) <= 8
    (partial / "pairs" / "dataset" / ".Npix=1.parquet.tmp-1").write_bytes(b"half")  # a killed writer's

    monkeypatch.setattr(xm_output, "write_frame_partition", real)
    again = crossmatch(open_catalog(sky), open_catalog(sky), RADIUS, how="knn", k=2, exclude_self=True)
    calls.clear()
    again.write(out, client=threads)
    published = _files(out)
    assert {k: published[k] for k in finished} == finished  # kept, not matched again
    pd.testing.assert_frame_equal(_rows(out), _rows(whole))
    assert sorted(published) == sorted(_files(whole))
    assert not partial.exists() and not list(out.rglob(".*tmp-*")) and not list(out.rglob(".done"))
    assert not (out / ".resume").exists() and not (out / ".owner").exists()


@pytest.mark.slow
def test_a_different_match_into_the_same_out_starts_over(sky, tmp_path, threads, monkeypatch):
    """A failed write's task that is still running when the next write (other radius) starts over in
    the same ``OUT.partial`` writes nothing there: without the staging folder's owner check its file
    and done-marker, left there before the new write looks for finished tasks, were taken as done
    (the first radius's rows published under the second's)."""
    real = xm_output.write_frame_partition
    late = LateTask(real, lambda args: OSError(errno.ENOSPC, "No space left on device", str(args[1])))
    monkeypatch.setattr(xm_output, "write_frame_partition", late)
    out = tmp_path / "pairs"
    first = crossmatch(open_catalog(sky), open_catalog(sky), RADIUS, how="knn", k=2, exclude_self=True)
    with pytest.raises(OSError, match="No space left"):
        first.write(out, client=threads)
    assert not late.ended.is_set()  # still running on its worker thread

    monkeypatch.setattr(xm_output, "write_frame_partition", real)
    real_resumable = xm_output._match_resumable

    def late_task_writes_first(*args):
        late.let_go()  # staging started over and claimed; nothing of this write done yet
        return real_resumable(*args)

    monkeypatch.setattr(xm_output, "_match_resumable", late_task_writes_first)
    # a quarter of the radius: in every partition some second neighbours are farther, so the rows differ
    other = crossmatch(open_catalog(sky), open_catalog(sky), RADIUS / 4, how="knn", k=2, exclude_self=True)
    other.write(out, client=threads)
    assert len(late.raised) == 1 and "now belongs to another write" in str(late.raised[0])
    monkeypatch.setattr(xm_output, "_match_resumable", real_resumable)
    fresh = other.write(tmp_path / "fresh", client=threads)
    pd.testing.assert_frame_equal(_rows(out), _rows(fresh))  # nothing of the first match kept
    assert sorted(_files(out)) == sorted(_files(fresh))
