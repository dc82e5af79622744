"""Arguments and run of ``bench`` (declared once; see ``survey_engine.arguments``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from survey_engine.arguments import AT_LEAST_1, StageResult, param, positive_int
from survey_engine.errors import UsageError


@dataclass
class BenchArguments:
    """Benchmark suites with the peers side by side (report.json, report.html, summary.md), or compare
    and merge two reports."""

    suites: list[str] = param(
        help="import margins crossmatch features train predict clustering real tap e2e scaling skew "
        "(default: all); or: compare OLD NEW; or: merge OLD NEW --out DIR (NEW's suites replace "
        "OLD's)",
        role="positional",
        nargs="*",
        metavar="SUITE",
        default_factory=list,
    )
    quick: bool = param(False, "small sizes, one repetition: a few minutes", type=bool)
    out: str = param("bench-report", "report folder (default bench-report)", role="output")
    repeats: int | None = param(
        None,
        "timed runs per case, after a warm-up (default 3; 1 with --quick)",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
    )
    workers: int = param(
        2,
        "local Dask workers of every measurement (default 2)",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
    )
    threshold: float = param(1.2, "compare: flag runs slower than this ratio (default 1.2)", type=float)
    sizes: list[int] | None = param(
        None, "row counts for every suite (instead of the defaults)", type=int, nargs="+", parse=positive_int
    )
    partition_rows: int | None = param(
        None,
        "crossmatch: at most this many rows per partition of the benchmark "
        "catalogs (default: N/10, 12 partitions)",
        type=int,
        parse=positive_int,
    )
    max_peer_rows: int | None = param(
        None,
        "run the peers only up to this many rows (default: 10,000,000; 200,000 for single-process HDBSCAN)",
        type=int,
        parse=positive_int,
    )
    data: str | None = param(
        None,
        "real suite: the folder of the real catalogs (default: $SURVEY_ENGINE_SHARED_DATA, "
        "else the checkout's ../shared/data; without them the suite is skipped)",
        metavar="DIR",
    )


def run_bench_command(args: BenchArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.bench.report import compare, merge, run_bench

    action = args.suites[:1]
    if action == ["merge"]:
        if len(args.suites) != 3:
            raise UsageError("usage: survey-engine bench merge OLD NEW --out DIR")
        merge(args.suites[1], args.suites[2], args.out)
        return StageResult((Path(args.out) / "summary.md").read_text(), {}, Path(args.out))
    if action == ["compare"]:
        if len(args.suites) != 3:
            raise UsageError("usage: survey-engine bench compare OLD NEW")
        bad, rows = compare(args.suites[1], args.suites[2], args.threshold)
        lines = [
            f"{'REGRESSION' if r in bad else 'ok':10s} {r['suite']:10s} {r['tool']:22s} {r['case']:40s} "
            f"{r['old_s']:8.2f} s -> {r['new_s']:8.2f} s ({r['ratio']:.2f}x)"
            for r in rows
        ]
        lines.append(
            f"{len(bad)} regression(s) beyond {args.threshold:g}x (or disagreeing results) among {len(rows)} "
            "comparable rows"
        )
        return StageResult("\n".join(lines), {"regressions": len(bad)}, None, rows, exit_code=1 if bad else 0)
    report = run_bench(
        args.suites or None,
        args.out,
        quick=args.quick,
        repeats=args.repeats,
        workers=args.workers,
        sizes_override=args.sizes,
        max_peer_rows=args.max_peer_rows,
        partition_rows=args.partition_rows,
        data=args.data,
    )
    line = f"{(Path(args.out) / 'summary.md').read_text()}\nreport: {Path(args.out) / 'report.html'}"
    return StageResult(
        line,
        {"errors": len(report["errors"])},
        Path(args.out),
        report,
        exit_code=1 if report["errors"] else 0,
    )
