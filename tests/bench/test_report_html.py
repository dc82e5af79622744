"""report.html: it opens with the speed-ups and agreement, a plot per stage, and the machine record
and full table after them; peers that are not installed are listed with their install command.
Built from a synthetic report (numbers shaped like the full run's), so no benchmark runs here."""

from __future__ import annotations

import re

from survey_engine.bench.report_html import html_report, speedups

MACHINE = {
    "cores": 2,
    "memory_gib": 23.5,
    "cpu": "Intel Xeon",
    "python": "3.11.7",
    "platform": "Linux",
    "git_commit": "abc1234",
    "gpu": None,
    "date": "2026-12-01 12:00:00",
    "versions": {"dask": "2026.8.0", "lsdb": "0.11.1"},
}


def _row(suite, case, tool, rows, workers, seconds, agree=True, note=None, **extra):
    r = {
        "suite": suite,
        "case": case,
        "tool": tool,
        "rows": rows,
        "workers": workers,
        "agree": agree,
        "note": note,
    }
    if seconds is not None:
        r.update(
            {
                "seconds": seconds,
                "min_s": seconds * 0.95,
                "max_s": seconds * 1.1,
                "first_s": seconds * 1.3,
                "repeats": 2,
                "peak_rss_bytes": int(2**30 * (0.5 + rows / 1e7)),
                "peak_rss_process_bytes": int(2**29),
                "rows_per_s": rows / seconds,
            }
        )
    r.update(extra)
    return r


def synthetic_report() -> dict:
    rows = []
    for n, ours, hi in ((100_000, 1.24, 8.73), (1_000_000, 2.95, 15.9), (10_000_000, 23.4, 72.9)):
        rows += [
            _row("import", f"{n} rows", "survey_engine", n, 2, ours),
            _row("import", f"{n} rows", "hats_import", n, 2, hi),
        ]
    rows += [
        _row("import", "100000000 rows", "survey_engine", 100_000_000, 2, 238.0),
        _row(
            "import",
            "100000000 rows",
            "hats_import",
            100_000_000,
            2,
            None,
            agree=None,
            note="not run above 10,000,000 rows (time budget of the full run)",
        ),
    ]
    for n, se, ck, ast in (
        (100_000, 0.23, 0.11, 0.16),
        (1_000_000, 1.5, 1.87, 2.76),
        (5_000_000, 8.78, 13.3, 23.1),
    ):
        case = f"{n} x {n + n // 5}"
        for suffix, f in (("", 1.0), (", cold", 3.0)):
            rows += [
                _row("crossmatch", case + suffix, "ckdtree_global", n, 2, ck * f),
                _row("crossmatch", case + suffix, "survey_engine", n, 2, se * f),
                _row(
                    "crossmatch",
                    case + suffix,
                    "lsdb",
                    n,
                    2,
                    None,
                    agree=None,
                    note="not installed: pip install lsdb==0.11.1",
                ),
                _row("crossmatch", case + suffix, "astropy", n, 2, ast * f),
            ]
    for n, d, s in ((1_000_000, 2.29, 2.10), (10_000_000, 29.3, 28.7)):
        for w in (1, 2):
            case = f"{n} mock rows, 5 features, 50 rounds"
            rows += [
                _row("train", case, "xgboost.dask", n, w, d * (3 - w) / 1.6, overhead=0.04, efficiency=0.8),
                _row("train", case, "xgboost_single_process", n, w, s * (3 - w) / 1.6),
            ]
            pcase = f"{n} mock rows, predict with the 50-round model"
            rows += [
                _row("train", pcase, "xgboost.dask", n, w, d / 10),
                _row("train", pcase, "xgboost_single_process", n, w, s / 9),
            ]
    rows += [
        _row(
            "real",
            "real catalogs",
            "survey_engine",
            None,
            2,
            None,
            agree=None,
            note="skipped: real data not found in --data /nowhere (no clusters_xmatch/gaia_dr3_allsky_G10.parquet); "
            "pass --data DIR or set SURVEY_ENGINE_SHARED_DATA",
        )
    ]
    rows += [
        _row(
            "e2e", "mock 1000000 rows: import + photo-z train + predict", "survey_engine", 1_000_000, 2, 88.0
        )
    ]
    for kind in ("strong", "weak"):
        for w in (1, 2):
            rows.append(
                _row(
                    "scaling",
                    f"{kind} import",
                    "survey_engine",
                    5_000_000 if kind == "strong" else 2_500_000 * w,
                    w,
                    17.2 / (1.5 if w == 2 else 1) if kind == "strong" else 9.5 + 1.7 * (w - 1),
                    efficiency=0.8,
                )
            )
    return {
        "machine": MACHINE,
        "params": {
            "suites": ["import", "crossmatch", "train", "real", "e2e", "scaling"],
            "quick": False,
            "repeats": 2,
        },
        "rows": rows,
        "errors": {},
        "cost_models": [
            {
                "stage": "import",
                "core_s_per_row": 4.35e-6,
                "serial_s": 0.5,
                "serial_s_per_row": 1.9e-7,
                "sizes": [100_000, 1_000_000],
                "max_rel_residual": 0.3,
            }
        ],
        "projections": [
            {
                "stage": "import",
                "catalog": "Gaia DR3",
                "rows": 1_800_000_000,
                "cores": 128,
                "projected_hours": 0.11,
            }
        ],
    }


def test_report_opens_with_plots_speedups_and_agreement():
    page = html_report(synthetic_report())
    glance, plots, machine, full = (
        page.index(s)
        for s in (
            "<h2>At a glance",
            "<img src='data:image/png;base64,",
            "<h2>Machine",
            "<h2>All measurements",
        )
    )
    assert glance < plots < machine < full
    # one plot per stage that has times: import, crossmatch, train, e2e, scaling (real was skipped)
    assert page.count("<img src='data:image/png;base64,") == 5
    head = page[:machine]
    # the speed-up against hats-import at each size, computed as peer time / ours
    assert (
        "7.04x</span> at 10<sup>5</sup>" in head
        and "5.39x</span> at 10<sup>6</sup>" in head
        and "3.12x</span> at 10<sup>7</sup>" in head
    )
    # the peer that is not installed, with the command, before the machine record; the skipped suite with its reason
    assert "not installed: pip install lsdb==0.11.1" in head
    assert "skipped: real data not found in --data /nowhere" in head and "--data DIR" in head
    # the machine record and the full table sit in scrolling containers (no page-wide overflow)
    assert re.search(r"<h2>Machine</h2><div class='scroll'>", page) and re.search(
        r"<h2>All measurements</h2><div class='scroll'>", page
    )
    assert ".scroll{overflow-x:auto" in page


def test_speedups_pair_each_peer_with_our_row():
    ratios = speedups(synthetic_report()["rows"])
    by = {(x["suite"], x["case"], x["peer"], x["workers"]): x["ratio"] for x in ratios}
    assert abs(by[("import", "1000000 rows", "hats_import", 2)] - 15.9 / 2.95) < 1e-9
    # training compares at equal workers: 1 worker against nthread=1
    assert (
        abs(
            by[("train", "1000000 mock rows, 5 features, 50 rounds", "xgboost_single_process", 1)]
            - 2.10 / 2.29
        )
        < 1e-9
    )
    assert not any(x["peer"] == "lsdb" for x in ratios)  # no time, no ratio
    assert not any(x["suite"] == "scaling" for x in ratios)
