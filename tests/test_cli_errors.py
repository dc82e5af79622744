"""The machine's trouble as a user sees it: a full disk and a lost Dask scheduler end a command
with exit 2 and one line (no traceback), and finished work is kept for the re-run."""

from __future__ import annotations

import errno
import subprocess
import sys
from dataclasses import replace

import pytest

from survey_engine import open_catalog
from survey_engine.cli import main
from survey_engine.commands import commands


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (the tests run as root, as CI does): a real full disk."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"cannot mount a tmpfs (run the tests as root, as CI does): {done.stderr}"
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_ends_a_crossmatch_with_one_line_and_no_partial_output(tmp_path, small_disk):
    assert (
        _cli(
            "mock",
            "--rows",
            "30000",
            "--out",
            "sky",
            "--seed",
            "5",
            "--workers",
            "1",
            "--no-progress",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    assert (
        _cli(
            "import",
            "sky",
            "--out",
            "cat",
            "--id",
            "source_id",
            "--max-rows",
            "6000",
            "--margin",
            "5",
            "--workers",
            "1",
            "--no-progress",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    full = _cli(
        "crossmatch",
        "cat",
        "cat",
        "--radius",
        "5",
        "--join",
        "left",
        "--self",
        "--out",
        str(small_disk / "pairs"),
        "--workers",
        "1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert full.returncode == 2, full.stderr[-3000:]
    lines = [line for line in full.stderr.splitlines() if "error:" in line]
    assert "Traceback" not in full.stderr and len(lines) == 1, full.stderr[-3000:]
    assert "no space left on the device" in lines[0] and "run the same command again" in lines[0]
    # nothing that looks like a finished catalog was left on the full disk
    assert not (small_disk / "pairs" / "collection.properties").exists()
    # with room, the same command works
    again = _cli(
        "crossmatch",
        "cat",
        "cat",
        "--radius",
        "5",
        "--join",
        "left",
        "--self",
        "--out",
        "pairs",
        "--workers",
        "1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert open_catalog(tmp_path / "pairs").row_count() == 30000  # every left row (left join)


@pytest.mark.parametrize(
    "exc, words",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/data/out/part-0.parquet"),
            ["no space left on the device writing /data/out/part-0.parquet", "run the same command again"],
        ),
        (
            ConnectionRefusedError("connection to tcp://10.0.0.1:8786 refused"),
            ["lost the Dask scheduler", "tcp://10.0.0.1:8786"],
        ),
    ],
)
def test_environment_errors_are_one_line(monkeypatch, capsys, exc, words):
    def broken(args, client=None, progress=True):
        raise exc

    monkeypatch.setitem(commands(), "info", replace(commands()["info"], run=broken))
    assert main(["info", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("survey-engine info: error: ")
    assert all(w in err for w in words), err


@pytest.mark.parametrize("bug", [ZeroDivisionError("a bug"), ValueError("a bug"), KeyError("a bug")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    """Anything else that escapes is a bug: raised as it is, not dressed as a user's error. A plain
    ValueError or KeyError too: the user's problems raise a SurveyEngineError kind."""

    def broken(args, client=None, progress=True):
        raise bug

    monkeypatch.setitem(commands(), "info", replace(commands()["info"], run=broken))
    with pytest.raises(type(bug)):
        main(["info", "somewhere"])


def test_a_users_problem_is_one_line_even_when_it_is_a_value_error(monkeypatch, capsys):
    from survey_engine.errors import UsageError

    def wrong(args, client=None, progress=True):
        raise UsageError("--radius (radius_arcsec in Python) must be positive, got -1")

    monkeypatch.setitem(commands(), "info", replace(commands()["info"], run=wrong))
    assert main(["info", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert err == "survey-engine info: error: --radius (radius_arcsec in Python) must be positive, got -1\n"
