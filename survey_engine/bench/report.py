"""Benchmark runs and their reports: ``report.json`` (everything), ``report.html`` (tables and
plots, self-contained), ``summary.md`` (a short read), and comparison of two runs for regressions."""

from __future__ import annotations

import json
import time
from pathlib import Path

from survey_engine.bench import suites as S
from survey_engine.bench.cost_model import cost_models, projections
from survey_engine.bench.measure import machine_info
from survey_engine.bench.report_html import duration_text, html_report, speedups
from survey_engine.bench.suites.common import BIG, MAX_PEER_ROWS
from survey_engine.catalog.layout import atomic_write_text
from survey_engine.errors import UsageError


def run_bench(
    names: list[str] | None,
    out: str | Path,
    quick: bool = False,
    repeats: int | None = None,
    workers: int = 2,
    echo=print,
    sizes_override: list[int] | None = None,
    max_peer_rows: int | None = None,
    partition_rows: int | None = None,
    data: str | Path | None = None,
) -> dict:
    """Run the suites ``names`` (all by default) and write the reports to ``out``. ``data``: the folder
    of the real catalogs for the ``real`` suite (else ``$SURVEY_ENGINE_SHARED_DATA`` or the checkout's
    ``../shared/data``). A suite that raises is recorded in ``errors``; the others still run."""
    names = list(names or S.SUITES)
    unknown = [n for n in names if n not in S.SUITES]
    if unknown:
        raise UsageError(f"unknown suite(s) {unknown}; known: {', '.join(S.SUITES)}")
    if data is not None and not Path(data).is_dir():
        raise UsageError(f"--data {data}: not a folder (the real suite reads its catalogs from there)")
    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    repeats = repeats or (1 if quick else 3)
    sizes = dict(S.QUICK_SIZES if quick else S.FULL_SIZES)
    if sizes_override:
        sizes = {k: (v if k in ("tap", "real") else list(sizes_override)) for k, v in sizes.items()}
    peer_limits = dict(MAX_PEER_ROWS)
    if max_peer_rows:
        peer_limits["default"] = max_peer_rows
    report = {
        "machine": machine_info(),
        "params": {
            "suites": names,
            "quick": quick,
            "repeats": repeats,
            "workers": workers,
            "sizes": sizes,
            "max_peer_rows": peer_limits,
            "single_run_from_rows": BIG,
            "partition_rows": partition_rows,
            "data": str(data) if data else None,
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": [],
        "errors": {},
    }
    for name in names:
        t0 = time.perf_counter()
        if echo:
            echo(f"bench {name} ...")
        try:
            extra = {"partition_rows": partition_rows} if (name == "crossmatch" and partition_rows) else {}
            if name == "real" and data is not None:
                extra["data"] = data
            if quick and name in ("predict", "e2e"):  # models of a few minutes' training, not the defaults'
                extra["model_rounds"] = S.QUICK_MODEL_ROUNDS
            rows = S.RUNNERS[name](sizes[name], repeats, workers, work, peer_limits=peer_limits, **extra)
        except Exception as exc:  # a suite that breaks is reported, the others still run
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            rows = []
        report["rows"] += rows
        # what is measured so far survives a crash of a later suite (e.g. killed for memory)
        atomic_write_text(out / "report.partial.json", json.dumps(report, indent=1, default=str))
        if echo:
            echo(f"bench {name}: {len(rows)} rows in {time.perf_counter() - t0:.0f} s")
    report["cost_models"] = cost_models(report["rows"])
    report["projections"] = projections(report["rows"])
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_reports(report, out)
    (out / "report.partial.json").unlink(missing_ok=True)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return report


def write_reports(report: dict, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=str))
    atomic_write_text(out / "summary.md", markdown(report))
    atomic_write_text(out / "report.html", html_report(report))


def merge(old: str | Path, new: str | Path, out: str | Path) -> dict:
    """One report from two runs on the same machine: the suites ``new`` ran replace the same
    suites of ``old`` (e.g. a suite re-run after a fix); both runs' machine records are kept."""
    a, b = _load(old), _load(new)
    suites = set(b["params"]["suites"])
    report = dict(a)
    report["rows"] = [r for r in a["rows"] if r["suite"] not in suites] + b["rows"]
    report["errors"] = {
        **{k: v for k, v in a.get("errors", {}).items() if k not in suites},
        **b.get("errors", {}),
    }
    report["params"] = {
        **a["params"],
        "suites": list(dict.fromkeys(a["params"]["suites"] + b["params"]["suites"])),
    }
    earlier = a.get("merged_from") or [
        {"suites": a["params"]["suites"], "machine": a["machine"], "started": a.get("started")}
    ]
    report["merged_from"] = earlier + [
        {"suites": b["params"]["suites"], "machine": b["machine"], "started": b.get("started")}
    ]
    report["cost_models"] = cost_models(report["rows"])
    report["projections"] = projections(report["rows"])
    write_reports(report, out)
    return report


def _load(p: str | Path) -> dict:
    p = Path(p)
    return json.loads((p / "report.json" if p.is_dir() else p).read_text())


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


COLUMNS = [
    "suite",
    "case",
    "tool",
    "workers",
    "seconds",
    "min_s",
    "max_s",
    "rows_per_s",
    "peak_rss_gib",
    "largest_process_gib",
    "agree",
    "note",
]


def _table_rows(report) -> list[dict]:
    out = []
    for r in report["rows"]:
        out.append(
            {
                **r,
                "peak_rss_gib": (r["peak_rss_bytes"] / 2**30) if r.get("peak_rss_bytes") else None,
                "largest_process_gib": (r["peak_rss_process_bytes"] / 2**30)
                if r.get("peak_rss_process_bytes")
                else None,
            }
        )
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# survey_engine benchmarks ({'quick' if report['params']['quick'] else 'full'})",
        "",
        f"{m['date']}, commit {m['git_commit']}, {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, GPU: {m['gpu'] or 'none'}; "
        f"medians of {report['params']['repeats']} runs after a warm-up (sizes from {report['params'].get('single_run_from_rows', 0):,} rows: "
        "one run, no warm-up); peak memory summed over all processes (peak_rss_gib) and of the largest single process.",
        "",
    ]
    for part in report.get("merged_from", []):
        lines += [
            f"- suites {', '.join(part['suites'])}: run started {part['started']}, commit {part['machine']['git_commit']}"
        ]
    if report.get("merged_from"):
        lines.append("")
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in _table_rows(report):
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |")
    lines.append("")
    ratios = peer_ratios(report)
    if ratios:
        lines += [
            "Against peers in the same run (their time / ours; above 1 means survey_engine is faster):",
            "",
        ]
        lines += [
            f"- {x['suite']} {x['case']} ({x['workers']} worker(s)): {x['peer']} {x['ratio']:.2f}x"
            for x in ratios
        ]
        lines.append("")
    overheads = [
        r
        for r in report["rows"]
        if r["suite"] == "train" and r["tool"] == "xgboost.dask" and r.get("overhead") is not None
    ]
    if overheads:
        lines += [
            "Distributed training overhead (xgboost.dask time / single-process XGBoost time with the same threads - 1) "
            "and efficiency across workers:",
            "",
        ]
        lines += [
            f"- {r['case']}, {r['workers']} worker(s): overhead {r['overhead']:+.0%}, efficiency {r['efficiency']:.2f}"
            for r in overheads
        ]
        lines.append("")
    lines += _prediction_lines(report["rows"])
    if report.get("cost_models"):
        lines += [
            "Cost models fitted from the measured per-task times (time = a + s x rows + c x rows / cores):",
            "",
            "| stage | c (core-us per row) | a (s) | s (us per row, driver) | sizes fitted | worst residual of c |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {m['stage']} | {m['core_s_per_row'] * 1e6:.3g} | {m['serial_s']:.3g} | {m.get('serial_s_per_row', 0) * 1e6:.3g} | "
            f"{', '.join(f'{x:,}' for x in m['sizes'])} | {m['max_rel_residual']:.0%} |"
            for m in report["cost_models"]
        ]
        lines.append("")
    if report.get("projections"):
        lines += [
            "Projection from those models (not a measurement: it assumes the per-row cost holds at scale, even spread over "
            "the cores, and storage that keeps up):",
            "",
        ]
        lines += [
            f"- {p['stage']}: {p['catalog']} ({p['rows']:,} rows) on {p['cores']} cores: about {duration_text(p['projected_hours'])}"
            for p in report["projections"]
        ]
        lines.append("")
    if report.get("errors"):
        lines += ["Suites that failed:", ""] + [f"- {k}: {v}" for k, v in report["errors"].items()] + [""]
    return "\n".join(lines)


def _prediction_lines(rows: list[dict]) -> list[str]:
    """The predict suite's models side by side: rate, trees per row, held-out quality, and each
    default model's speed-up and quality against the members' model it replaced."""
    ours = [r for r in rows if r["suite"] == "predict" and r["tool"] == "survey_engine" and r.get("model")]
    if not ours:
        return []
    lines = [
        "Prediction models (rows per second with the catalog written; held-out quality of the bench model):",
        "",
    ]
    for r in ours:
        quality = (
            f"sigma_NMAD {r['sigma_nmad']:.4f}"
            if r.get("sigma_nmad") is not None
            else f"accuracy {r['accuracy']:.4f}"
        )
        line = f"- {r['model']}, {r['rows']:,} rows: {r['rows_per_s']:,.0f} rows/s, {r['trees_per_row']} trees per row, {quality}"
        if r.get("speedup_vs_members") is not None:
            change = (
                f"sigma_NMAD {r['sigma_nmad_vs_members']:+.1%}"
                if r.get("sigma_nmad_vs_members") is not None
                else f"accuracy {r['accuracy_vs_members']:+.4f}"
            )
            line += f"; {r['speedup_vs_members']:.1f}x the members' rows/s, {change} against theirs"
        lines.append(line)
    return [*lines, ""]


def peer_ratios(report: dict) -> list[dict]:
    """Each peer's time over ours for the same case: at the same worker count where we ran that
    count (training), else against our run with the most workers (a peer in one process)."""
    return speedups(report["rows"])


def compare(old: str | Path, new: str | Path, threshold: float = 1.2) -> tuple[list[dict], list[dict]]:
    """(regressions, all comparisons) between two report.json files (a folder or the file)."""
    a, b = _load(old), _load(new)
    key = lambda r: (r["suite"], r["case"], r["tool"], r["workers"])  # noqa: E731
    before = {key(r): r for r in a["rows"] if r.get("seconds")}
    rows = []
    for r in b["rows"]:
        k = key(r)
        if k in before and r.get("seconds"):
            ratio = r["seconds"] / before[k]["seconds"]
            rows.append(
                {
                    "suite": k[0],
                    "case": k[1],
                    "tool": k[2],
                    "workers": k[3],
                    "old_s": before[k]["seconds"],
                    "new_s": r["seconds"],
                    "ratio": ratio,
                    "regression": ratio > threshold,
                    "agree_now": r.get("agree"),
                }
            )
    return [r for r in rows if r["regression"] or r["agree_now"] is False], rows
