"""The README's first command: the demo, run as a user runs it (the console script, a fresh process)."""

import json
import shutil
import subprocess
import sys

import pandas as pd

from survey_engine import open_catalog


def _cli():
    exe = shutil.which("survey-engine")
    return [exe] if exe else [sys.executable, "-m", "survey_engine.cli"]


def test_demo_runs_and_reruns(tmp_path):
    out = tmp_path / "demo"
    cmd = [*_cli(), "demo", "--rows", "300000", "--out", str(out), "--workers", "2", "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "cone query" in first.stdout and str(out) in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    cat = open_catalog(out / "catalog")
    assert cat.row_count() == 300_000 == summary["steps"]["import"]["rows"]
    assert cat.margin is not None
    cone = pd.read_parquet(out / "cone.parquet")
    assert len(cone) == summary["steps"]["cone"]["rows"] > 0
    assert summary["steps"]["cone"]["cluster_members"] > 100
    assert summary["steps"]["cone"]["partitions_read"] < summary["steps"]["cone"]["of_partitions"]
    pairs = open_catalog(out / "close_pairs").compute()
    assert len(pairs) == summary["steps"]["crossmatch"]["rows"] > 0
    assert (pairs.sep_arcsec <= 2.0).all() and (pairs.source_id_1 != pairs.source_id_2).all()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already up to date" in again.stdout


def test_demo_default_output_is_relative_to_working_directory(tmp_path):
    proc = subprocess.run([*_cli(), "demo", "--rows", "50000", "--workers", "1", "--no-progress"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "survey-engine-demo" / "catalog" / "collection.properties").exists()
