"""Job specs: validation with file:line errors, the ready-made specs run as they are, re-runs
skip what is unchanged, failures keep earlier outputs, submission to a real scheduler."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.jobs.run import run_job
from survey_engine.jobs.spec import JobSpecError, load_spec
from tests.conftest import REPO

JOBS = REPO / "jobs"


def spec_file(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "job.yaml"
    f.write_text(text)
    return f


GOOD = """\
name: t
source:
  mock: {rows: 20000, seed: 1}
stages:
  - id: sky
    import: {max_rows: 5000, margin: 5}
  - id: model
    train: {task: photoz, catalog: sky, features: [u-g, g-r], target: redshift, members: 1, rounds: 150}
"""


@pytest.mark.parametrize(
    "text, line, message",
    [
        (GOOD.replace("name: t", "name: t\nbogus: 1"), 2, "unknown key 'bogus'"),
        (GOOD.replace("max_rows: 5000", "max_rows: many"), 6, "max_rows must be int"),
        (GOOD.replace("margin: 5}", "margin: 5, colour: red}"), 6, "unknown key 'colour'"),
        (
            GOOD.replace("catalog: sky", "catalog: nothere"),
            8,
            "'nothere' is not the output of an earlier stage",
        ),
        (GOOD.replace("task: photoz", "task: juggle"), 8, "task must be"),
        (GOOD.replace("  mock: {rows: 20000, seed: 1}", "  files: [no/such/file.csv]"), 3, "does not exist"),
        (GOOD.replace("    import:", "    importt:"), 6, "unknown 'importt'"),
        (
            GOOD + "  - id: p\n    predict: {model: sky, catalog: sky}\n",
            10,
            "'sky' is a catalog, not a model",
        ),
        (GOOD.replace("source:\n  mock: {rows: 20000, seed: 1}\n", ""), 1, "missing 'source'"),
        (GOOD.replace("  - id: model", "  - id: sky"), 7, "id used twice"),
        ("name: [unclosed", 1, "not valid YAML"),
        (
            GOOD.replace(
                "source:\n  mock: {rows: 20000, seed: 1}",
                "sources:\n  a: {mock: {rows: 10}}\n  b: {mock: {rows: 10}}",
            ),
            7,
            "several sources (a, b); say which",
        ),
    ],
)
def test_validation_names_file_line_and_key(tmp_path, text, line, message):
    f = spec_file(tmp_path, text)
    with pytest.raises(JobSpecError) as info:
        load_spec(f)
    assert f"{f}:{line}: " in str(info.value) and message in str(info.value), str(info.value)


def test_ready_made_specs_are_valid():
    for f in sorted(JOBS.glob("*.yaml")):
        spec = load_spec(f)
        assert spec.stages, f


def run(name: str, tmp_path: Path, client) -> tuple[dict, Path]:
    spec = load_spec(JOBS / f"{name}.yaml", base=tmp_path)
    summary = run_job(spec, client=client, progress=False, echo=None)
    assert summary["status"] == "ok"
    return summary, spec.workdir


@pytest.mark.slow
def test_demo_job(client, tmp_path):
    summary, work = run("demo", tmp_path, client)
    assert work == tmp_path / "demo-job"
    sky = open_catalog(work / "sky")
    assert sky.row_count() == 200_000 and sky.margin is not None
    pairs = open_catalog(work / "close_pairs").compute()
    assert len(pairs) == summary["stages"]["close_pairs"]["rows"]
    assert (pairs.sep_arcsec <= 2).all() and (pairs.source_id_1 != pairs.source_id_2).all()
    assert json.loads((work / "run_summary.json").read_text())["status"] == "ok"
    assert "close_pairs (crossmatch)" in (work / "run.log").read_text()
    # each close pair once; outputs named by their stage, no temporary names left
    assert len({frozenset(p) for p in zip(pairs.source_id_1, pairs.source_id_2)}) == len(pairs)
    assert (
        open_catalog(work / "close_pairs").name == "close_pairs" and open_catalog(work / "sky").name == "sky"
    )
    assert not [p for p in work.iterdir() if p.name.startswith(".tmp")]
    # every job gets a run report: time and memory of each stage, sky map, cross-match
    report = (work / "report.html").read_text()
    assert summary["report"] == str(work / "report.html")
    assert (
        all(f"id='{s}'" in report for s in ("stages", "sky", "crossmatch")) and "could not draw" not in report
    )
    assert all(summary["stages"][s]["peak_memory_mib"] > 0 for s in ("sky", "close_pairs"))


@pytest.mark.slow
def test_photoz_job(client, tmp_path):
    summary, work = run("photoz", tmp_path, client)
    assert summary["stages"]["model"]["held_out"]["sigma_nmad"] < 0.08
    z = open_catalog(work / "zphot").compute()
    assert len(z) == 200_000 and np.isfinite(z.z_phot).all()
    colours = open_catalog(work / "colours").compute()
    assert {"u-g", "dered(r)", "gal_b", "source_id", "redshift"} <= set(
        colours.columns
    ) and "u_err" not in colours.columns
    assert len(colours) == 200_000
    metrics = json.loads((work / "metrics" / "metrics.json").read_text())
    # evaluated on the southern galaxies only: the model trained on the northern ones (jobs/photoz.yaml)
    assert metrics["n"] == ((z.obj_class == "GALAXY") & (z.dec < 0)).sum() and metrics["sigma_nmad"] < 0.08
    assert (
        abs(metrics["interval_coverage"] - 0.68) < 0.05 and abs(metrics["interval_coverage_95"] - 0.95) < 0.03
    )


@pytest.mark.slow
def test_classify_job(client, tmp_path):
    summary, work = run("classify", tmp_path, client)
    assert summary["stages"]["model"]["held_out"]["accuracy"] > 0.85
    df = open_catalog(work / "classes").compute()
    assert (df.class_pred == df.obj_class).mean() > 0.85


@pytest.mark.slow
def test_open_clusters_job_recovers_the_mock_clusters(client, tmp_path):
    _, work = run("open_clusters", tmp_path, client)
    df = open_catalog(work / "clusters", margin=None).compute()
    truth = df.cluster_id_input
    found = 0
    for t in sorted(set(truth) - {-1}):
        members = truth == t
        counts = df.loc[members & (df.cluster_id >= 0), "cluster_id"].value_counts()
        if (
            len(counts)
            and counts.iloc[0] / members.sum() > 0.5
            and counts.iloc[0] / (df.cluster_id == counts.index[0]).sum() > 0.9
        ):
            found += 1
    assert found == 5
    assert json.loads((work / "clusters" / "clusters.json").read_text())["n_clusters"] >= 5


@pytest.mark.slow
def test_crossmatch_job_two_surveys(client, tmp_path):
    summary, work = run("crossmatch", tmp_path, client)
    dr2, dr3 = open_catalog(work / "gaia_dr2"), open_catalog(work / "gaia_dr3")
    assert dr2.npartitions > 1 and dr3.npartitions > 1
    m = open_catalog(work / "matched").compute()
    assert len(m) == summary["stages"]["matched"]["rows"] and (m.sep_arcsec <= 1).all()
    # where DR2 and DR3 keep the source_id, nearly all nearest matches are the same star
    same = (m.source_id_dr2 == m.SOURCE_ID_dr3).mean()
    assert same > 0.9 and len(m) > 0.8 * dr3.row_count()


def test_gaia_tap_job_against_the_local_dachs(client, tmp_path, dachs):
    """The gaia_tap spec's stages, pointed at the project's DaCHS server instead of the archive."""
    text = (JOBS / "gaia_tap.yaml").read_text()
    text = text.replace("url: gaia", f"url: {dachs}").replace(
        "table: gaiadr3.gaia_source", "table: segaia.main"
    )
    text = text.replace(
        "columns: [source_id, ra, dec, parallax, parallax_error, pmra, pmdec, phot_g_mean_mag, bp_rp]",
        "columns: [source_id, ra, dec, phot_g_mean_mag, phot_bp_mean_mag, phot_rp_mean_mag]",
    )
    text = text.replace("AND parallax > 3", "AND phot_g_mean_mag < 9")
    text = text.replace(
        "features: [pmra, pmdec, parallax, pos_x, pos_y, pos_z]",
        "features: [pos_x, pos_y, pos_z, phot_g_mean_mag]",
    )
    f = spec_file(tmp_path, text)
    spec = load_spec(f, base=tmp_path)
    summary = run_job(spec, client=client, progress=False, echo=None)
    assert summary["stages"]["gaia"]["verified"] is True
    from survey_engine.ingest.tap.client import TapService

    n = (
        TapService(dachs)
        .query(
            "SELECT COUNT(*) AS n FROM segaia.main WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), "
            "CIRCLE('ICRS', 56.75, 24.12, 5)) AND phot_g_mean_mag < 9",
            2,
            "test",
        )
        .table["n"][0]
    )
    assert summary["stages"]["gaia"]["rows"] == int(n) > 0
    assert (spec.workdir / "clusters" / "clusters.json").exists()


@pytest.mark.slow
def test_rerun_skips_unchanged_and_failure_keeps_earlier_outputs(client, tmp_path):
    f = spec_file(tmp_path, GOOD)
    spec = load_spec(f, base=tmp_path)
    run_job(spec, client=client, progress=False, echo=None)
    sky_state = (spec.workdir / ".state" / "sky.json").read_text()
    model_mtime = (spec.workdir / "model" / "model.json").stat().st_mtime
    again = run_job(load_spec(f, base=tmp_path), client=client, progress=False, echo=None)
    assert again["stages"]["sky"]["skipped"] and again["stages"]["model"]["skipped"]
    # a changed stage is redone; the unchanged one before it is not
    f.write_text(GOOD.replace("features: [u-g, g-r]", "features: [u-g, g-r, r-i]"))
    third = run_job(load_spec(f, base=tmp_path), client=client, progress=False, echo=None)
    assert third["stages"]["sky"]["skipped"] and not third["stages"]["model"].get("skipped")
    assert (spec.workdir / "model" / "model.json").stat().st_mtime > model_mtime
    # a failing stage: the error is raised, earlier outputs (and its own last good one) stay
    f.write_text(GOOD.replace("features: [u-g, g-r]", "features: [u-g, nosuch]"))
    with pytest.raises(ValueError, match="nosuch"):
        run_job(load_spec(f, base=tmp_path), client=client, progress=False, echo=None)
    assert (spec.workdir / ".state" / "sky.json").read_text() == sky_state
    assert json.loads((spec.workdir / "model" / "model.json").read_text())["features"] == [
        "u-g",
        "g-r",
        "r-i",
    ]
    assert json.loads((spec.workdir / "run_summary.json").read_text())["status"] == "failed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_too_few_workers_on_a_running_scheduler_is_a_clear_error(client, tmp_path):
    """min_workers above what the scheduler has: the error says how many arrived and how many were wanted."""
    from survey_engine.jobs.run import job_client

    spec = load_spec(spec_file(tmp_path, GOOD))
    with job_client(spec, client.scheduler.address, timeout=5, min_workers=2) as c:
        assert len(c.scheduler_info()["workers"]) == 2
    with pytest.raises(JobSpecError, match="has 2 workers after 1 s; the job wants at least 3"):
        with job_client(spec, client.scheduler.address, timeout=1, min_workers=3):
            pass


@pytest.mark.slow
def test_submit_to_a_running_scheduler(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on loopback; the job goes by address."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).parent / "dask")
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    try:
        time.sleep(2)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        f = spec_file(tmp_path, GOOD.replace("rows: 20000", "rows: 10000"))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "survey_engine.cli",
                "submit",
                str(f),
                "--scheduler",
                address,
                "--workdir",
                str(tmp_path / "work"),
                "--no-progress",
                "--min-workers",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads((tmp_path / "work" / "run_summary.json").read_text())
        assert summary["cluster"]["scheduler"] == address and summary["cluster"]["workers"] == 2
        assert open_catalog(tmp_path / "work" / "sky").row_count() == 10_000
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
    # the scheduler is gone now: a clear error, exit 2
    gone = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "run",
            str(f),
            "--cluster",
            address,
            "--workdir",
            str(tmp_path / "work2"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gone.returncode == 2 and "cannot reach the Dask scheduler" in gone.stderr


def test_failed_import_stage_leaves_nothing_behind(tmp_path, client):
    import pandas as pd

    pd.DataFrame({"RA_X": [1.0, 2.0], "dec": [0.0, 1.0]}).to_csv(tmp_path / "a.csv", index=False)
    f = spec_file(
        tmp_path,
        "name: t\nworkdir: w\nsource:\n  files: [a.csv]\nstages:\n  - id: sky\n    import: {max_rows: 10}\n",
    )
    with pytest.raises(Exception, match="'ra' not found"):
        run_job(load_spec(f, base=tmp_path), client=client, progress=False, echo=None)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [".state", "run.log", "run_summary.json"]
    assert json.loads((tmp_path / "w" / "run_summary.json").read_text())["status"] == "failed"
