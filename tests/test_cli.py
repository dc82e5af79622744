"""The command line as a user types it: mock -> import -> info -> margin."""

import subprocess
import sys

from survey_engine import open_catalog
from tests.conftest import REPO


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "survey_engine.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_mock_import_info_margin(tmp_path):
    mock = _cli("mock", "--rows", "120000", "--out", "sky", "--seed", "3", "--workers", "2", "--no-progress", cwd=tmp_path)
    assert mock.returncode == 0, mock.stderr
    assert "120,000 mock rows" in mock.stdout
    imp = _cli("import", "sky/*.parquet", "--out", "cat", "--id", "source_id", "--max-rows", "20000", "--margin", "10", "--workers", "2", "--no-progress", cwd=tmp_path)
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
