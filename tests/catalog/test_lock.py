"""One writer at a time: OUT.lock, taken atomically; a second writer stops at once naming the
holder; a stale lock (same host, dead pid) is taken over with a warning."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.catalog.lock import OutputLockedError, lock_path, output_lock
from tests.conftest import REPO, random_sky

HOLD = (
    "import sys, time; from survey_engine.catalog.lock import output_lock\nwith output_lock(sys.argv[1], 'holder'):\n"
    "    print('held', flush=True); time.sleep(60)\n"
)


def test_second_writer_stops_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(OutputLockedError) as info:
            with output_lock(out, "second"):
                pass
        assert time.monotonic() - t0 < 1
        message = str(info.value)
        assert (
            f"pid {holder.pid}" in message
            and socket.gethostname() in message
            and "command: holder" in message
        )
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, capfd):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(out).write_text(
        json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": "then", "command": "crashed"})
    )
    with output_lock(out, "me") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "stale lock" in capfd.readouterr().err and not lock_path(out).exists()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    out = tmp_path / "out"
    lock_path(out).write_text(
        json.dumps({"host": "elsewhere.example", "pid": 1, "started": "then", "command": "remote"})
    )
    with pytest.raises(OutputLockedError, match="host elsewhere.example"):
        with output_lock(out):
            pass
    assert lock_path(out).exists()


def test_reentrant_in_one_process_and_released(tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        with output_lock(out):  # an ingest's own import into the same output
            pass
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


@pytest.mark.slow
def test_two_imports_at_once_to_one_out(tmp_path):
    """Two processes import different inputs into one --out: one succeeds with exactly its own
    rows; the other fails at once naming the holder; readers see only the finished catalog."""
    a, b = random_sky(150_000, seed=1), random_sky(100_000, seed=2)
    b["id"] += 10_000_000
    a.to_parquet(tmp_path / "a.parquet")
    b.to_parquet(tmp_path / "b.parquet")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "survey_engine.cli",
        "import",
        "--out",
        str(out),
        "--id",
        "id",
        "--max-rows",
        "50000",
        "--workers",
        "1",
        "--no-progress",
    ]
    first = subprocess.Popen(
        cmd[:4] + [str(tmp_path / "a.parquet")] + cmd[4:],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not lock_path(out).exists():
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    t0 = time.monotonic()
    second = subprocess.run(
        cmd[:4] + [str(tmp_path / "b.parquet")] + cmd[4:], capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 2, second.stderr
    assert (
        "another writer" in second.stderr
        and f"pid {first.pid}" in second.stderr
        and time.monotonic() - t0 < 20
    )
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    cat = open_catalog(out).compute()
    assert len(cat) == len(a) and set(cat["id"]) == set(a["id"])
    assert not lock_path(out).exists()
    assert pd.Index(cat["id"]).is_unique
