"""The README's first command: the demo, run as a user runs it (the console script, a fresh process,
default output folder under the working directory), its outputs checked, its report looked at in a
real headless browser, and a re-run that reuses every stage."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_engine import open_catalog
from survey_engine.catalog import layout
from survey_engine.jobs.report import SECTION_IDS

ROWS = 60_000
pytestmark = pytest.mark.slow


def _cli():
    exe = shutil.which("survey-engine")
    return [exe] if exe else [sys.executable, "-m", "survey_engine.cli"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    cmd = [*_cli(), "demo", "--rows", str(ROWS), "--workers", "2", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = cwd / "survey-engine-demo"  # the default --out, relative to the working directory
    return work, proc, json.loads((work / "run_summary.json").read_text()), cmd


def test_demo_catalogs_open_with_their_rows_and_names(demo):
    work, proc, summary, _ = demo
    st = summary["stages"]
    assert summary["status"] == "ok"
    for sid, files in (("gaia", "gaia_files"), ("sdss", "sdss_files")):
        expected = len(pd.read_parquet(sorted((work / files).glob("part-*.parquet"))))
        cat = open_catalog(work / sid)
        assert cat.row_count() == expected == st[sid]["rows"] > 1000
        assert cat.margin is not None
    assert open_catalog(work / "gaia").margin_radius_arcsec == 1800
    # finished outputs carry their stage's name, never a temporary one
    assert not [p.name for p in work.iterdir() if p.name.startswith(".tmp") or p.name.endswith(".partial")]
    for sid in ("gaia", "sdss", "gaia_x_sdss", "features", "classes", "photoz", "open_clusters", "anomalies"):
        props = layout.read_properties(work / sid / layout.COLLECTION_FILE)
        assert props["obs_collection"] == props["hats_primary_table_url"] == sid
        assert open_catalog(work / sid).name == sid
    info = subprocess.run(
        [*_cli(), "info", str(work / "gaia_x_sdss")], capture_output=True, text=True, timeout=120
    )
    assert info.returncode == 0 and "Catalog 'gaia_x_sdss'" in info.stdout and ".tmp" not in info.stdout
    import lsdb

    assert lsdb.open_catalog(work / "photoz").name == "photoz"


def test_demo_crossmatch_gains_the_high_proper_motion_stars(demo):
    work, proc, summary, _ = demo
    with_pm, without = summary["stages"]["gaia_x_sdss"], summary["stages"]["gaia_x_sdss_no_pm"]
    assert with_pm["left_rows"] == without["left_rows"] == summary["stages"]["gaia"]["rows"]
    assert with_pm["match_rate"] > without["match_rate"] and with_pm["match_rate"] > 0.99
    matched = open_catalog(work / "gaia_x_sdss").compute()
    fast = np.hypot(matched.pmra_gaia, matched.pmdec_gaia) > 100  # > 1.1" between 2005 and 2016
    assert (
        fast.sum() > 0
        and matched.sep_arcsec[fast].notna().all()
        and (matched.sep_arcsec.dropna() < 0.4).all()
    )
    plain = open_catalog(work / "gaia_x_sdss_no_pm").compute()
    assert plain.sep_arcsec[np.hypot(plain.pmra_gaia, plain.pmdec_gaia) > 100].isna().all()
    assert (
        f"{100 * with_pm['match_rate']:.2f}%" in proc.stdout
        and f"{100 * without['match_rate']:.2f}%" in proc.stdout
    )


def test_demo_models_are_in_a_sane_range(demo):
    work, _, summary, _ = demo
    st = summary["stages"]
    pz = st["photoz_model"]["held_out"]
    assert (
        pz["n"] > 100 and pz["sigma_nmad"] < 0.08 and abs(pz["bias"]) < 0.02 and pz["outlier_rate_015"] < 0.1
    )
    cl = st["classifier"]["held_out"]
    assert cl["accuracy"] > 0.85 and cl["macro_f1"] > 0.8
    z = open_catalog(work / "photoz").compute()
    gal = z[z.class_pred == "GALAXY"]
    assert len(z) == st["sdss"]["rows"] and len(gal) > 1000
    assert (
        np.isfinite(gal.z_phot).all()
        and (gal.z_phot_lo <= gal.z_phot).all()
        and (gal.z_phot <= gal.z_phot_hi).all()
    )
    right = pd.Series(z.class_pred == z.true_class)
    # as deep as the spectra go (r < 21.5) the classes are right; fainter, noisy colours cost some
    assert right[z.r < 21.5].mean() > 0.85 and right.mean() > 0.7
    clusters = json.loads((work / "open_clusters" / "clusters.json").read_text())
    assert 3 <= clusters["n_clusters"] <= 10
    scores = open_catalog(work / "anomalies").compute().anomaly_score
    assert len(scores) == st["sdss"]["rows"] and scores.between(0, 1).all()


def test_demo_report_has_every_section_and_the_terminal_says_where(demo):
    work, proc, summary, _ = demo
    report = work / "report.html"
    text = report.read_text()
    for section in SECTION_IDS:
        assert f"id='{section}'" in text, section
    assert "could not draw" not in text
    assert text.count("<img src='data:image/png;base64,") >= 8
    assert "src='http" not in text and 'src="http' not in text  # self-contained
    for sid in summary["stages"]:
        assert f"<td>{sid}</td>" in text
    assert all(
        summary["stages"][s]["peak_memory_mib"] > 0 and summary["stages"][s]["seconds"] > 0
        for s in summary["stages"]
    )
    tail = proc.stdout.strip().splitlines()[-8:]
    assert tail[-1].strip() == f"report          {report}"
    assert any("cross-match" in line for line in tail) and any("photo-z" in line for line in tail)


def test_demo_report_shows_the_variable_stars(demo):
    """The time-domain branch: nested light curves of the mock variables, their features, a classifier
    of the variable type; the report folds a few classified stars' light curves and draws the
    period-amplitude diagram."""
    work, proc, summary, _ = demo
    st = summary["stages"]
    stars = open_catalog(work / "variable_stars").row_count()
    assert st["light_curves"]["objects"] == stars == 400 and st["light_curves"]["unmatched_detections"] == 0
    detections = len(
        pd.read_parquet(
            sorted((work / "variable_star_files" / "detections").glob("*.parquet")), columns=["time"]
        )
    )
    assert st["light_curves"]["detections"] == detections > 50_000
    held = st["variable_types"]["held_out"]
    assert held["n"] >= 50 and held["accuracy"] > 0.8
    classes = open_catalog(work / "variable_classes").compute()
    assert len(classes) == stars and classes["class_pred"].notna().all()
    rr = classes[classes.var_class.isin(["RRAB", "RRC"]) & (classes.r_n_obs >= 50)]
    assert len(rr) >= 20 and (abs(rr.r_period - rr.period) / rr.period < 1e-3).mean() >= 0.95
    text = (work / "report.html").read_text()
    section = text[text.index("id='variables'") :]
    section = section[: section.find("<h2", 10)] if "<h2" in section[10:] else section
    assert "could not draw" not in section
    assert (
        section.count("<img src='data:image/png;base64,") == 2
    )  # the folded light curves and the Bailey diagram
    # the table under the plots names each folded star's true and predicted class and period
    table = section[section.index("<table>") : section.index("</table>")]
    head, *body = [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    shown = pd.DataFrame(body, columns=head)
    shown["object_id"], shown["period (d)"] = (
        shown["object_id"].astype(int),
        shown["period (d)"].astype(float),
    )
    assert 6 <= len(shown) <= 8 and set(shown.columns) >= {
        "object_id",
        "true class",
        "predicted",
        "period (d)",
    }
    truth = classes.set_index("object_id").loc[shown["object_id"]]
    assert (truth["class_pred"].to_numpy() == shown["predicted"].to_numpy()).all()
    assert np.allclose(truth["r_period"].to_numpy(), shown["period (d)"].to_numpy(), rtol=1e-3)
    assert any(
        "variable stars" in line and "held-out accuracy" in line for line in proc.stdout.splitlines()[-10:]
    )


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail(
        "no headless browser: install Chromium (Debian: apt-get install -y chromium) to check the report"
    )


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 9000) -> Path:
    """A full-page screenshot of ``html`` in headless Chromium."""
    cmd = [
        _browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
        f"--window-size={width},{height}",
        f"--screenshot={png}",
        html.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and png.exists(), proc.stderr[-2000:]
    return png


def test_demo_report_renders_in_a_headless_browser(demo, tmp_path):
    from PIL import Image

    work, _, _, _ = demo
    png = screenshot(work / "report.html", tmp_path / "report.png")
    assert png.stat().st_size > 150_000
    image = np.asarray(Image.open(png).convert("L"), dtype=float)
    drawn = np.flatnonzero((image < 245).any(axis=1))
    assert drawn.max() - drawn.min() > 4000  # the page is long: every section rendered, not an error page
    page = image[: drawn.max() + 1]
    assert (page < 245).mean() > 0.08 and page.std() > 30  # plots, not a blank page
    # the first screen shows the title and the stage plot: dark text and coloured bars
    top = np.asarray(Image.open(png).convert("RGB"), dtype=float)[:1400]
    assert (top.std(axis=2) > 40).mean() > 0.01


def test_demo_rerun_reuses_every_stage(demo):
    work, _, summary, cmd = demo
    again = subprocess.run(
        [*cmd, "--out", str(work)], capture_output=True, text=True, timeout=900, cwd=work.parent
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already up to date" in again.stdout
    second = json.loads((work / "run_summary.json").read_text())
    assert all(s["skipped"] for s in second["stages"].values())
    assert second["stages"]["gaia_x_sdss"]["match_rate"] == summary["stages"]["gaia_x_sdss"]["match_rate"]
    assert "report" in again.stdout and (work / "report.html").exists()
