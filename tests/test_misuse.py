"""Misuse cases of issue 19 that no module's own tests covered: two cross-matches writing one
``--out`` at once, and the ``OUT.partial`` a crashed cross-match leaves behind. (The other cases
live beside their modules; README "Reliability" lists every case and its test.)"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from survey_engine import open_catalog
from survey_engine.catalog.lock import lock_path
from survey_engine.cli import main
from survey_engine.crossmatch.match import crossmatch
from tests.conftest import REPO

RADIUS = 30.0  # arcsec: every mock row has neighbours, so the pair count is large and exact


@pytest.fixture(scope="module")
def solo_pairs(mock_catalog, client) -> set[tuple[int, int]]:
    """The self-match of the mock sky, computed alone: the pairs any correct run must give."""
    sky = open_catalog(mock_catalog)
    frame = crossmatch(sky, sky, RADIUS, how="all", exclude_self=True).compute()
    pairs = set(zip(frame["source_id_1"].tolist(), frame["source_id_2"].tolist()))
    assert len(pairs) == len(frame) > 10_000
    return pairs


def written_pairs(out) -> set[tuple[int, int]]:
    frame = open_catalog(out).compute()
    pairs = set(zip(frame["source_id_1"].tolist(), frame["source_id_2"].tolist()))
    assert len(pairs) == len(frame)  # no pair twice
    return pairs


@pytest.mark.slow
def test_two_crossmatches_at_once_to_one_out(mock_catalog, solo_pairs, tmp_path, capsys):
    """Two cross-matches into one --out (it gave 486,460 rows where 490,270 is right): the second
    stops at once with exit 2 naming the first's pid; the first writes exactly the right pairs."""
    out = tmp_path / "pairs"
    args = ["crossmatch", str(mock_catalog), str(mock_catalog), "--radius", str(RADIUS), "--self"]
    args += ["--how", "all", "--out", str(out), "--no-progress"]
    first = subprocess.Popen(
        [sys.executable, "-m", "survey_engine.cli", *args, "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        while not lock_path(out).exists():
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.02)
        t0 = time.monotonic()
        assert main(args) == 2  # the second writer, while the first holds the lock
        err = capsys.readouterr().err
        assert time.monotonic() - t0 < 5 and err.count("\n") == 1 and "Traceback" not in err, err
        assert "another writer" in err and f"pid {first.pid}" in err, err
        _, first_err = first.communicate(timeout=600)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, first_err[-3000:]
    assert written_pairs(out) == solo_pairs
    assert not lock_path(out).exists() and not (tmp_path / "pairs.partial").exists()


def test_crashed_crossmatch_leaves_a_partial_the_next_run_removes(mock_catalog, solo_pairs, tmp_path):
    """``OUT.partial`` left by a crash before cleanup (178 MB in the report, never removed): the next
    run into OUT removes it and writes exactly the right pairs."""
    out = tmp_path / "pairs"
    partial = tmp_path / "pairs.partial"
    (partial / "pairs" / "dataset").mkdir(parents=True)
    (partial / "pairs" / "dataset" / "half-written.parquet").write_bytes(b"\0" * 1_000_000)
    sky = open_catalog(mock_catalog)
    crossmatch(sky, sky, RADIUS, how="all", exclude_self=True).write(out)
    assert not partial.exists() and written_pairs(out) == solo_pairs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]
