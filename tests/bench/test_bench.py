"""`survey-engine bench --quick`: the report's structure and the agreement of every row (not the
timings, which live in the report, never in assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from survey_engine.bench.suites import SUITES
from survey_engine.ml.options import CLASSIFY_ENSEMBLE, PHOTOZ_ENSEMBLE


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory, dachs, client):
    out = tmp_path_factory.mktemp("bench") / "report"
    done = subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,  # the whole quick bench: about 12 min on 2 quiet cores
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout, done.stderr


def test_quick_report_structure_and_agreement(quick_report):
    out, stdout, _ = quick_report
    report = json.loads((out / "report.json").read_text())
    assert report["errors"] == {}
    m = report["machine"]
    assert m["cores"] > 0 and m["memory_gib"] > 0 and m["cpu"] and m["versions"]["dask"] and m["git_commit"]
    suites = {r["suite"] for r in report["rows"]}
    assert suites == set(SUITES)
    tools = {(r["suite"], r["tool"]) for r in report["rows"]}
    for peer in (
        ("import", "hats_import"),
        ("margins", "hats_import"),
        ("crossmatch", "lsdb"),
        ("crossmatch", "astropy"),
        ("crossmatch", "ckdtree_global"),
        ("train", "xgboost_single_process"),
        ("predict", "single_process"),
        ("clustering", "sklearn_single_process"),
        ("tap", "raw_keyset"),
        ("features", "pandas_single_process"),
    ):
        assert peer in tools, peer
    for r in report["rows"]:
        assert r["seconds"] > 0 and r["min_s"] <= r["seconds"] <= r["max_s"], r
        assert r["agree"] is True, r  # speed is never bought with a wrong answer
    strong = [r for r in report["rows"] if r["case"] == "strong import"]
    assert [r["workers"] for r in strong] == [1, 2] and all(r["efficiency"] > 0 for r in strong)
    # training: xgboost.dask on 1 and 2 workers, each against one process with the same threads
    train = [r for r in report["rows"] if r["suite"] == "train" and r["tool"] == "xgboost.dask"]
    assert sorted(r["workers"] for r in train if "predict" not in r["case"]) == [1, 2]
    assert all(isinstance(r["overhead"], float) for r in train)
    # predict: the default photo-z model, the default classifier (each beside its one-process peer)
    # and the members' models the defaults replaced, each default's speed-up and quality against them
    pred = [r for r in report["rows"] if r["suite"] == "predict" and r["tool"] == "survey_engine"]
    assert [r["model"] for r in pred] == [
        f"photoz {PHOTOZ_ENSEMBLE}",
        f"classify {CLASSIFY_ENSEMBLE}",
        "photoz members",
        "classify members",
    ]
    default, classify, members, class_members = pred
    assert default["trees_per_row"] < members["trees_per_row"] and 0.5 < classify["accuracy"] <= 1
    assert classify["trees_per_row"] < class_members["trees_per_row"]
    assert default["speedup_vs_members"] == pytest.approx(default["rows_per_s"] / members["rows_per_s"])
    assert default["sigma_nmad_vs_members"] == pytest.approx(
        default["sigma_nmad"] / members["sigma_nmad"] - 1
    )
    assert classify["speedup_vs_members"] == pytest.approx(
        classify["rows_per_s"] / class_members["rows_per_s"]
    )
    assert classify["accuracy_vs_members"] == pytest.approx(classify["accuracy"] - class_members["accuracy"])
    assert [r.get("modelled", True) for r in pred] == [True, False, False, False]  # the default's rows
    # the cost model comes from per-task times the suites recorded
    ours = [
        r
        for r in report["rows"]
        if r["tool"] in ("survey_engine", "xgboost.dask")
        and r["suite"] in ("import", "crossmatch", "predict")
        and not r["case"].endswith(", cold")
    ]
    # cross-match: every tool also cold (a fresh process: imports, opening, matching), same pairs
    cold = [r for r in report["rows"] if r["suite"] == "crossmatch" and r["case"].endswith(", cold")]
    assert {"survey_engine", "lsdb", "lsdb_small_partitions", "astropy", "ckdtree_global"} <= {
        r["tool"] for r in cold
    }
    assert all(r["agree"] is True and r["seconds"] > 0 for r in cold)
    assert all(r["tasks"] > 0 and 0 < r["task_s_median"] <= r["task_s_max"] for r in ours)
    stages = {m["stage"] for m in report["cost_models"]}
    assert {"import", "margins", "crossmatch", "features", "train", "predict"} <= stages
    assert all(m["core_s_per_row"] > 0 for m in report["cost_models"])
    assert report["projections"] and all(p["projected_hours"] > 0 for p in report["projections"])
    assert all(r["recovered"] == r["true_clusters"] for r in report["rows"] if r["suite"] == "clustering")
    # real catalogs from ../shared/data: every peer present, every row agreeing (checked above)
    real = {(r["case"].split(" ")[0], r["tool"]) for r in report["rows"] if r["suite"] == "real"}
    assert {
        ("import", "hats_import"),
        ("Blanco", "lsdb"),
        ("Blanco", "astropy"),
        ("Blanco", "ckdtree_global"),
        ("photo-z", "xgboost_single_process"),
        ("photo-z", "sklearn_hist_gradient_boosting"),
    } <= real
    html = (out / "report.html").read_text()
    assert html.count("<img src='data:image/png;base64,") >= len(SUITES)
    summary = (out / "summary.md").read_text()
    assert "Against peers in the same run" in summary and "not a measurement" in summary
    assert "report.html" in stdout


def test_the_bench_prints_no_distributed_info_lines_nor_xgboost_rank_lines(quick_report):
    """Hidden unless --verbose, as for every other command (the bench's own LocalClusters too)."""
    _, stdout, stderr = quick_report
    for text in (stdout, stderr):
        assert "INFO distributed" not in text and "got rank" not in text, text[-3000:]


def test_compare_flags_regressions(quick_report, tmp_path):
    out, _, _ = quick_report
    same = subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", "bench", "compare", str(out), str(out)],
        capture_output=True,
        text=True,
    )
    assert same.returncode == 0 and "0 regression(s)" in same.stdout
    report = json.loads((out / "report.json").read_text())
    slower = json.loads(json.dumps(report))
    target = next(r for r in slower["rows"] if r["suite"] == "import" and r["tool"] == "survey_engine")
    target["seconds"] *= 1.5
    (tmp_path / "new.json").write_text(json.dumps(slower))
    flagged = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "bench",
            "compare",
            str(out / "report.json"),
            str(tmp_path / "new.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert flagged.returncode == 1 and "1 regression(s)" in flagged.stdout and "REGRESSION" in flagged.stdout


def test_merge_replaces_the_rerun_suites(quick_report, tmp_path):
    out, _, _ = quick_report
    report = json.loads((out / "report.json").read_text())
    rerun = json.loads(json.dumps(report))
    rerun["params"]["suites"] = ["train"]
    rerun["rows"] = [dict(r, seconds=r["seconds"] * 2) for r in report["rows"] if r["suite"] == "train"]
    rerun["started"] = "later"
    (tmp_path / "rerun.json").write_text(json.dumps(rerun))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "bench",
            "merge",
            str(out),
            str(tmp_path / "rerun.json"),
            "--out",
            str(tmp_path / "merged"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert len(merged["rows"]) == len(report["rows"])
    old_train = sorted(r["seconds"] for r in report["rows"] if r["suite"] == "train")
    assert sorted(r["seconds"] for r in merged["rows"] if r["suite"] == "train") == [2 * t for t in old_train]
    assert [r for r in merged["rows"] if r["suite"] == "import"] == [
        r for r in report["rows"] if r["suite"] == "import"
    ]
    assert [m["started"] for m in merged["merged_from"]] == [report["started"], "later"]
    assert (tmp_path / "merged" / "report.html").exists() and "later" in (
        tmp_path / "merged" / "summary.md"
    ).read_text()


def test_the_bench_cluster_leaves_no_worker_settings_to_the_tools_started_after_it():
    """The bench imports its catalogs on a LocalCluster, then starts each tool's process: those
    inherited the workers' MALLOC_TRIM_THRESHOLD_ (survey_engine's 5x10^6 warm cross-match, run in
    its driver's threads, took 1.5-1.8 s there against 1.1-1.3 s without it)."""
    from tests.test_runtime import run_environment_script

    seen = run_environment_script("survey_engine.bench.suites.common", "local_cluster", "1")
    assert "MALLOC_TRIM_THRESHOLD_" in seen["inside"]
    assert seen["worker"] == "65536"
    assert seen["changed_after"] == []
    assert seen["child"] == "None None"
