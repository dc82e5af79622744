"""Misuse cases of issue 19 that no module's own tests covered: two cross-matches writing one
``--out`` at once, and the ``OUT.partial`` a crashed cross-match leaves behind. (The other cases
live beside their modules; README "Reliability" lists every case and its test.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_engine import open_catalog
from survey_engine.catalog.lock import lock_path
from survey_engine.cli import main
from survey_engine.crossmatch.match import crossmatch
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from tests.conftest import REPO

RADIUS = 20.0  # arcsec: about one neighbour per row in the dense patch below


@pytest.fixture(scope="module")
def patch_sky(tmp_path_factory, client) -> Path:
    """40,000 rows on 4 square degrees (dense: the self-match has tens of thousands of pairs),
    imported into several partitions with a margin wider than the radius."""
    rng = np.random.default_rng(19)
    n = 40_000
    root = tmp_path_factory.mktemp("patch")
    frame = pd.DataFrame({"id": np.arange(n), "ra": rng.uniform(150, 152, n), "dec": rng.uniform(1, 3, n)})
    frame.to_parquet(root / "patch.parquet")
    run_import(
        ImportArguments(
            [str(root / "patch.parquet")],
            str(root / "sky"),
            id_column="id",
            max_rows=5_000,
            margin_arcsec=30.0,
        ),
        client=client,
        progress=False,
    )
    return root / "sky"


@pytest.fixture(scope="module")
def solo_pairs(patch_sky, client) -> set[tuple[int, int]]:
    """The self-match of the patch, computed alone: the pairs any correct run must give."""
    sky = open_catalog(patch_sky)
    frame = crossmatch(sky, sky, RADIUS, how="all", exclude_self=True).compute()
    pairs = set(zip(frame["id_1"].tolist(), frame["id_2"].tolist()))
    assert len(pairs) == len(frame) > 15_000  # each pair once (the self-match)
    return pairs


def written_pairs(out) -> set[tuple[int, int]]:
    frame = open_catalog(out).compute()
    pairs = set(zip(frame["id_1"].tolist(), frame["id_2"].tolist()))
    assert len(pairs) == len(frame)  # no pair twice
    return pairs


@pytest.mark.slow
def test_two_crossmatches_at_once_to_one_out(patch_sky, solo_pairs, tmp_path, capsys):
    """Two cross-matches into one --out (it gave 486,460 rows where 490,270 is right): the second
    stops at once with exit 2 naming the first's pid; the first writes exactly the right pairs."""
    out = tmp_path / "pairs"
    args = ["crossmatch", str(patch_sky), str(patch_sky), "--radius", str(RADIUS), "--self"]
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


def test_crashed_crossmatch_leaves_a_partial_the_next_run_removes(patch_sky, solo_pairs, tmp_path):
    """``OUT.partial`` left by a crash before cleanup (178 MB in the report, never removed): the next
    run into OUT removes it and writes exactly the right pairs."""
    out = tmp_path / "pairs"
    partial = tmp_path / "pairs.partial"
    (partial / "pairs" / "dataset").mkdir(parents=True)
    (partial / "pairs" / "dataset" / "half-written.parquet").write_bytes(b"\0" * 1_000_000)
    sky = open_catalog(patch_sky)
    crossmatch(sky, sky, RADIUS, how="all", exclude_self=True).write(out)
    assert not partial.exists() and written_pairs(out) == solo_pairs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]
