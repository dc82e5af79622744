"""Faults under load (issue 21, item 5), for an import of the mock sky and a cross-match written with
--out: a worker killed (SIGKILL), the scheduler killed, the output filesystem filling up. The run
either completes with output identical to an undisturbed run, or stops with one clear line (exit 2),
leaves nothing that looks complete, and the same command resumes to identical output, reusing what
was finished. The harness is ``tests/fault_harness.py`` (also run at scale by benchmarks/bench_faults.py)."""

from __future__ import annotations

import pytest

from tests import fault_harness as fh

SIZES = fh.Sizes()  # 100,000 rows in ~60 partitions: each phase takes seconds on 2 cores


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The undisturbed runs: the mock sky, its import and its self-match, with their digests."""
    root = tmp_path_factory.mktemp("faults")
    sky = fh.make_sky(root / "sky", SIZES)
    cat = root / "ref" / "cat"
    done = fh.run(fh.cli(*fh.import_args(SIZES, sky, cat)))
    assert done.returncode == 0, done.stderr[-3000:]
    pairs = root / "ref" / "pairs"
    matched = fh.run(fh.cli(*fh.crossmatch_args(SIZES, cat, pairs)))
    assert matched.returncode == 0, matched.stderr[-3000:]
    return {
        "root": root,
        "sky": sky,
        "cat": cat,
        "pairs": pairs,
        "cat_digest": fh.digest(cat),
        "pairs_digest": fh.digest(pairs),
        "import_seconds": done.seconds,
        "crossmatch_seconds": matched.seconds,
    }


def _report(what: str, cold: float, resumed: float) -> None:
    print(f"\n{what}: cold {cold:.1f} s, resumed {resumed:.1f} s")


def _one_clear_line(done: fh.Done, words: tuple[str, ...]) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.error_lines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.slow
def test_reference_runs_are_whole(reference):
    """The undisturbed runs the others compare to: every row imported and every left row matched."""
    assert reference["cat_digest"]["rows"] == SIZES.rows
    assert len(reference["cat_digest"]["partitions"]) >= 30  # enough tasks for a fault to land mid-run
    assert reference["pairs_digest"]["rows"] == SIZES.rows  # a left join keeps every left row


# --- a worker killed -------------------------------------------------------------------------------


@pytest.mark.slow
def test_import_with_its_workers_killed_completes_identically(reference, tmp_path):
    out = tmp_path / "cat"
    running = fh.Running(fh.cli(*fh.import_args(SIZES, reference["sky"], out)))
    fh.wait_for(fh.has_file(out.with_name("cat.partial"), "*.index.npz"), running, "the first shard")
    # every worker at once: whatever one of them held (the split plan it was sent) is lost too
    victims = fh.kill_local_workers(running, count=SIZES.workers)
    done = running.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    assert not any(map(fh.pid_alive, victims)), "the workers really died (their nannies started new ones)"
    assert fh.digest(out) == reference["cat_digest"]
    assert not out.with_name("cat.partial").exists()
    assert not list(out.rglob(".*.tmp-*")), "a killed worker's half-written file was published"


@pytest.mark.slow
def test_crossmatch_with_a_worker_killed_completes_identically(reference, tmp_path):
    out = tmp_path / "pairs"
    running = fh.Running(fh.cli(*fh.crossmatch_args(SIZES, reference["cat"], out)))
    fh.wait_for(fh.has_file(out.with_name("pairs.partial"), "Npix=*.parquet"), running, "the first partition")
    fh.kill_local_workers(running, count=1)
    done = running.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    assert fh.digest(out) == reference["pairs_digest"]
    assert not list(out.rglob(".*.tmp-*")) and not list(out.rglob(".done")) and not (out / ".resume").exists()


# --- the scheduler killed --------------------------------------------------------------------------


@pytest.mark.slow
def test_import_with_the_scheduler_killed_stops_clearly_and_resumes(reference, tmp_path):
    spec = fh.job_spec(tmp_path / "job.yaml", SIZES, sky=reference["sky"])
    work = tmp_path / "work"
    with fh.dask_processes(SIZES.workers) as first:
        running = fh.Running(fh.cli(*fh.submit_args(spec, first.address, work)))
        fh.wait_for(
            lambda: any(work.glob(".tmp-cat-*/cat.partial/shards/*.index.npz")), running, "the first shard"
        )
        first.kill_scheduler()
        done = running.wait(timeout=600)
    _one_clear_line(done, ("lost the Dask scheduler", "run the same command again"))
    assert not (work / "cat").exists() and fh.looks_complete(work) == []
    assert list(work.glob(".tmp-cat-*/cat.partial/shards/*.index.npz")), "the finished shards were kept"
    with fh.dask_processes(SIZES.workers) as second:
        again = fh.run(fh.cli(*fh.submit_args(spec, second.address, work)))
    assert again.returncode == 0, again.stderr[-3000:]
    assert fh.digest(work / "cat") == reference["cat_digest"]
    _report("import, scheduler killed", reference["import_seconds"], again.seconds)


@pytest.mark.slow
def test_crossmatch_with_the_scheduler_killed_stops_clearly_and_resumes(reference, tmp_path):
    spec = fh.job_spec(tmp_path / "job.yaml", SIZES, catalog=reference["cat"])
    work = tmp_path / "work"
    with fh.dask_processes(SIZES.workers) as first:
        running = fh.Running(fh.cli(*fh.submit_args(spec, first.address, work)))
        fh.wait_for(fh.has_file(work, "Npix=*.parquet"), running, "the first partition")
        first.kill_scheduler()
        done = running.wait(timeout=600)
    _one_clear_line(done, ("lost the Dask scheduler", "run the same command again"))
    assert not (work / "pairs").exists() and fh.looks_complete(work) == []
    kept = fh.partition_inodes(work)
    assert kept, "the finished partitions were kept"
    with fh.dask_processes(SIZES.workers) as second:
        again = fh.run(fh.cli(*fh.submit_args(spec, second.address, work)))
    assert again.returncode == 0, again.stderr[-3000:]
    assert fh.digest(work / "pairs") == reference["pairs_digest"]
    published = fh.partition_inodes(work / "pairs")
    # the re-run resumed: the partitions finished before the fault were kept, not matched again
    assert {k: published.get(k) for k in kept} == kept
    _report("crossmatch, scheduler killed", reference["crossmatch_seconds"], again.seconds)


# --- the output filesystem full --------------------------------------------------------------------


@pytest.mark.slow
def test_import_on_a_full_disk_stops_clearly_and_resumes_after_making_room(reference, tmp_path):
    with fh.small_tmpfs(tmp_path / "disk", "4m") as disk:
        out = disk / "cat"
        full = fh.run(fh.cli(*fh.import_args(SIZES, reference["sky"], out)))
        _one_clear_line(full, ("no space left on", "run the same command again"))
        assert fh.looks_complete(disk) == [] and not out.exists()
        assert out.with_name("cat.partial").exists(), "finished work is kept for the re-run"
        fh.grow_tmpfs(disk, "512m")
        again = fh.run(fh.cli(*fh.import_args(SIZES, reference["sky"], out)))
        assert again.returncode == 0, again.stderr[-3000:]
        assert "resumed" in again.stdout
        assert fh.digest(out) == reference["cat_digest"]
        assert not list(out.rglob(".*.tmp-*"))


@pytest.mark.slow
def test_crossmatch_on_a_full_disk_stops_clearly_and_resumes_after_making_room(reference, tmp_path):
    with fh.small_tmpfs(tmp_path / "disk", "3m") as disk:
        out = disk / "pairs"
        full = fh.run(fh.cli(*fh.crossmatch_args(SIZES, reference["cat"], out)))
        _one_clear_line(full, ("no space left on", "run the same command again"))
        assert fh.looks_complete(disk) == [] and not out.exists()
        kept = fh.partition_inodes(disk)
        assert kept, "the partitions that fitted are kept for the re-run"
        fh.grow_tmpfs(disk, "512m")
        again = fh.run(fh.cli(*fh.crossmatch_args(SIZES, reference["cat"], out)))
        assert again.returncode == 0, again.stderr[-3000:]
        assert fh.digest(out) == reference["pairs_digest"]
        published = fh.partition_inodes(out)
        assert {k: published.get(k) for k in kept} == kept  # resumed, not redone
        assert not list(out.rglob(".*.tmp-*"))
        _report("crossmatch, disk full", reference["crossmatch_seconds"], again.seconds)


# --- a worker killed while a margin is built -------------------------------------------------------


def _margin_args(catalog, out, radius: float = 20.0) -> list[str]:
    return [
        "margin",
        str(catalog),
        "--radius",
        str(radius),
        "--out",
        str(out),
        "--workers",
        "2",
        "--no-progress",
    ]


@pytest.mark.slow
def test_margin_build_with_its_workers_killed_completes_identically(reference, tmp_path):
    """``survey-engine margin`` (also the cross-match's --build-margin): the split spec every task
    reads was scattered, and a killed worker took its one copy with it ("lost scattered data")."""
    cold = fh.run(fh.cli(*_margin_args(reference["cat"], tmp_path / "ref")))
    assert cold.returncode == 0, cold.stderr[-3000:]
    name = "cat_20arcsec"  # the margin's folder in the collection: <catalog name>_<radius>arcsec
    running = fh.Running(fh.cli(*_margin_args(reference["cat"], tmp_path / "killed")))
    fh.wait_for(fh.has_file(tmp_path / "killed", "margin_*.index.npz"), running, "the first margin shard")
    victims = fh.kill_local_workers(running, count=SIZES.workers)
    done = running.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    assert not any(map(fh.pid_alive, victims)), "the workers really died (their nannies started new ones)"
    want, got = fh.digest(tmp_path / "ref" / name), fh.digest(tmp_path / "killed" / name)
    assert got["rows"] > 0 and got == want
    assert not list((tmp_path / "killed").glob(".*.partial"))


# --- one-to-one and outer joins: finished on the driver, so they start over (cleanly) -------------
# Their result needs every partition's pairs at once (the greedy one-to-one choice, the right rows
# no left row matched), so there is no per-partition state to resume from: a re-run matches again.


@pytest.fixture(scope="module")
def one_to_one_outer(reference) -> dict:
    """The undisturbed one-to-one outer self-match of the reference catalog, with its digest."""
    out = reference["root"] / "ref" / "one_to_one"
    done = fh.run(fh.cli(*fh.crossmatch_args(SIZES, reference["cat"], out, how="one-to-one", join="outer")))
    assert done.returncode == 0, done.stderr[-3000:]
    found = fh.digest(out)
    assert found["rows"] >= SIZES.rows  # outer: every left row, plus any right row left unmatched
    return found


@pytest.mark.slow
def test_one_to_one_with_the_scheduler_killed_stops_clearly_and_starts_over(
    reference, one_to_one_outer, tmp_path
):
    spec = fh.job_spec(tmp_path / "job.yaml", SIZES, catalog=reference["cat"], how="one-to-one", join="outer")
    work = tmp_path / "work"
    with fh.dask_processes(SIZES.workers) as first:
        running = fh.Running(fh.cli(*fh.submit_args(spec, first.address, work)))
        matching = fh.scheduler_running(first.address, "se-crossmatch-")
        try:
            fh.wait_for(matching, running, "the first match task")
        finally:
            matching.client.close()
        first.kill_scheduler()
        done = running.wait(timeout=600)
    _one_clear_line(done, ("lost the Dask scheduler", "run the same command again"))
    assert not (work / "pairs").exists() and fh.looks_complete(work) == []
    with fh.dask_processes(SIZES.workers) as second:
        again = fh.run(fh.cli(*fh.submit_args(spec, second.address, work)))
    assert again.returncode == 0, again.stderr[-3000:]
    assert fh.digest(work / "pairs") == one_to_one_outer
    assert not list(work.rglob("*.partial")) and not list(work.rglob(".*.tmp-*"))


@pytest.mark.slow
def test_outer_join_on_a_full_disk_stops_clearly_and_starts_over_after_making_room(
    reference, one_to_one_outer, tmp_path
):
    with fh.small_tmpfs(tmp_path / "disk", "3m") as disk:
        out = disk / "pairs"
        args = fh.crossmatch_args(SIZES, reference["cat"], out, how="one-to-one", join="outer")
        full = fh.run(fh.cli(*args))
        _one_clear_line(full, ("no space left on", "run the same command again"))
        assert fh.looks_complete(disk) == [] and not out.exists()
        fh.grow_tmpfs(disk, "512m")
        again = fh.run(fh.cli(*args))
        assert again.returncode == 0, again.stderr[-3000:]
        assert fh.digest(out) == one_to_one_outer
        assert not list(disk.rglob("*.partial")) and not list(out.rglob(".*.tmp-*"))
