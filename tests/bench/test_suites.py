"""The suites on a plain install: a peer that is not installed is a row saying so with the command
that installs it (survey_engine is still measured); the real suite reads its data from ``--data``
or ``$SURVEY_ENGINE_SHARED_DATA`` and is skipped, with the reason, when neither has the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec

import pytest

from survey_engine.bench.report import run_bench
from survey_engine.bench.suites import RUNNERS, SUITES, common
from survey_engine.bench.suites.real import REAL_FILES, shared_data_root
from survey_engine.errors import UsageError


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", "bench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_registry_has_every_suite():
    assert SUITES == (
        "import",
        "margins",
        "crossmatch",
        "features",
        "train",
        "predict",
        "clustering",
        "real",
        "tap",
        "e2e",
        "scaling",
        "skew",
    )
    assert all(
        RUNNERS[s].__module__ == f"survey_engine.bench.suites.{'import_' if s == 'import' else s}"
        for s in SUITES
    )


def test_install_command_uses_the_pinned_version():
    # the versions survey_engine pins in its [test] extra (pyproject.toml), read from its installed metadata
    assert common.install_command("lsdb") == "pip install lsdb==0.11.1"
    assert common.install_command("hats-import") == "pip install hats-import==0.11.1"
    assert common.install_command("no-such-peer") == "pip install no-such-peer"
    assert common.peer_missing("lsdb", "lsdb") is None
    assert (
        common.peer_missing("no_such_peer_module", "no-such-peer")
        == "not installed: pip install no-such-peer"
    )


@pytest.mark.slow
def test_missing_peers_are_reported_and_ours_still_measured(tmp_path, monkeypatch):
    hidden = {"hats_import", "lsdb"}
    monkeypatch.setattr(common, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a))
    report = run_bench(
        ["import", "crossmatch"], tmp_path / "out", quick=True, sizes_override=[5000], echo=None
    )
    assert report["errors"] == {}
    rows = {(r["suite"], r["case"], r["tool"]): r for r in report["rows"]}
    hi = rows[("import", "5000 rows", "hats_import")]
    assert hi["note"] == "not installed: pip install hats-import==0.11.1" and "seconds" not in hi
    ours = rows[("import", "5000 rows", "survey_engine")]
    assert ours["seconds"] > 0 and ours["agree"] is True
    xm = [r for r in report["rows"] if r["suite"] == "crossmatch"]
    lsdb_rows = [r for r in xm if r["tool"] in ("lsdb", "lsdb_small_partitions")]
    assert lsdb_rows and all(r["note"] == "not installed: pip install lsdb==0.11.1" for r in lsdb_rows)
    # the others ran and found the same pairs as the global cKDTree
    measured = {r["tool"] for r in xm if r.get("seconds")}
    assert measured == {"survey_engine", "astropy", "ckdtree_global"} and all(
        r["agree"] is True for r in xm if r.get("seconds")
    )
    page = (tmp_path / "out" / "report.html").read_text()
    assert "not installed: pip install lsdb==0.11.1" in page[: page.index("<h2>Machine")]


def test_data_flag_is_where_the_real_suite_looks(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SURVEY_ENGINE_SHARED_DATA")}
    done = _cli("real", "--quick", "--data", str(tmp_path), "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads((tmp_path / "out" / "report.json").read_text())["rows"]
    assert row["note"].startswith(
        f"skipped: real data not found in --data {tmp_path} (no {REAL_FILES['gaia_g10']})"
    )
    assert "--data DIR" in row["note"]
    # a --data folder that does not exist is the user's error: exit 2, naming the flag, before any suite runs
    bad = _cli(
        "real", "--quick", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out2"), env=env
    )
    assert bad.returncode == 2 and "--data" in bad.stderr and not (tmp_path / "out2" / "report.json").exists()


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_ENGINE_SHARED_DATA", str(tmp_path / "env"))
    assert shared_data_root(tmp_path / "flag") == tmp_path / "flag"  # --data wins
    assert shared_data_root() == tmp_path / "env"
    monkeypatch.delenv("SURVEY_ENGINE_SHARED_DATA")
    assert shared_data_root().parts[-2:] == ("shared", "data")  # the checkout's ../shared/data
    with pytest.raises(UsageError, match="--data"):
        run_bench(["real"], tmp_path / "out", quick=True, data=tmp_path / "missing", echo=None)
