"""The command line as a user types it: mock -> import -> info -> margin."""

import subprocess
import sys

import pytest

from survey_engine import open_catalog


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.mark.slow
def test_mock_import_info_margin(tmp_path):
    mock = _cli(
        "mock",
        "--rows",
        "120000",
        "--out",
        "sky",
        "--seed",
        "3",
        "--workers",
        "2",
        "--no-progress",
        cwd=tmp_path,
    )
    assert mock.returncode == 0, mock.stderr
    assert "120,000 mock rows" in mock.stdout
    imp = _cli(
        "import",
        "sky/*.parquet",
        "--out",
        "cat",
        "--id",
        "source_id",
        "--max-rows",
        "20000",
        "--margin",
        "10",
        "--workers",
        "2",
        "--no-progress",
        cwd=tmp_path,
    )
    assert imp.returncode == 0, imp.stderr
    assert "120000 rows in" in imp.stdout and "margin:" in imp.stdout
    info = _cli("info", "cat", cwd=tmp_path)
    assert info.returncode == 0 and "rows: 120,000" in info.stdout and "margin: 10 arcsec" in info.stdout
    more = _cli("margin", "cat", "--radius", "30", "--workers", "2", "--no-progress", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    cat = open_catalog(tmp_path / "cat")
    assert cat.margin_radius_arcsec == 10.0  # the default margin stays the first one
    wide = open_catalog(tmp_path / "cat", margin="cat_30arcsec")
    assert wide.margin_radius_arcsec == 30.0
    assert len(wide.margin.compute()) > len(cat.margin.compute())
    bad = _cli("info", "nowhere", cwd=tmp_path)
    assert bad.returncode == 2 and "not a HATS catalog" in bad.stderr


@pytest.mark.slow
def test_crossmatch_command(tmp_path):
    for name, seed in (("a", 1), ("b", 1)):
        assert (
            _cli(
                "mock",
                "--rows",
                "60000",
                "--out",
                f"sky_{name}",
                "--seed",
                str(seed),
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
                f"sky_{name}",
                "--out",
                f"cat_{name}",
                "--id",
                "source_id",
                "--max-rows",
                "8000",
                "--margin",
                "2",
                "--workers",
                "1",
                "--no-progress",
                cwd=tmp_path,
            ).returncode
            == 0
        )
    too_wide = _cli(
        "crossmatch", "cat_a", "cat_b", "--radius", "5", "--out", "m", "--workers", "1", cwd=tmp_path
    )
    assert too_wide.returncode == 2 and "smaller than the match radius 5" in too_wide.stderr
    done = _cli(
        "crossmatch",
        "cat_a",
        "cat_b",
        "--radius",
        "1",
        "--self",
        "--suffixes",
        "_x,_y",
        "--out",
        "m",
        "--workers",
        "1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    frame = open_catalog(tmp_path / "m").compute()
    # the same sky matched with itself, excluding each row itself: only true close pairs remain
    assert (frame.source_id_x != frame.source_id_y).all() and (frame.sep_arcsec <= 1.0).all()
    same = _cli(
        "crossmatch",
        "cat_a",
        "cat_b",
        "--radius",
        "1",
        "--out",
        "m2",
        "--workers",
        "1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert same.returncode == 0 and "60,000 rows" in same.stdout
    assert (open_catalog(tmp_path / "m2").compute().pipe(lambda f: f.source_id_1 == f.source_id_2)).all()
    # --gpu: the CuPy kernel where a GPU exists, else the same grid kernel on the CPU, said on stderr
    gpu = _cli(
        "crossmatch",
        "cat_a",
        "cat_b",
        "--radius",
        "1",
        "--gpu",
        "--out",
        "m_gpu",
        "--workers",
        "1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert gpu.returncode == 0 and "60,000 rows" in gpu.stdout, gpu.stderr
    from survey_engine.crossmatch.algorithms import gpu_available

    assert gpu_available()[0] or "no usable GPU" in gpu.stderr
    assert (open_catalog(tmp_path / "m_gpu").compute().pipe(lambda f: f.source_id_1 == f.source_id_2)).all()
    # epochs: both sides moved from 2016 to 2000 with their proper motions; the margin needed
    # (radius + the fastest star's motion on both sides) is built on request
    refused = _cli(
        "crossmatch",
        "cat_a",
        "cat_b",
        "--radius",
        "1",
        "--epoch",
        "2000",
        "--left-epoch",
        "2016",
        "--right-epoch",
        "2016",
        "--out",
        "m3",
        "--workers",
        "1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "proper-motion shift" in refused.stderr
    moved = _cli(
        "crossmatch",
        "cat_a",
        "cat_b",
        "--radius",
        "1",
        "--epoch",
        "2000",
        "--left-epoch",
        "2016",
        "--right-epoch",
        "2016",
        "--build-margin",
        "--out",
        "m3",
        "--workers",
        "1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert moved.returncode == 0, moved.stderr
    assert "60,000 rows" in moved.stdout
