"""Import + margin: survey_engine vs hats-import on the same mock input, cores and thresholds.

    python benchmarks/bench_import.py --rows 1000000 5000000 [--repeat 2] [--out benchmarks/results]

Each tool builds the catalog and a 5 arcsec margin from the same Parquet files on a LocalCluster
of 2 workers x 1 thread. Reported: wall time (median of repeats), peak memory of all processes
(RSS sampled every 50 ms), and whether the results agree (same rows; every one of our margin rows
is in hats-import's margin, whose border pixels are wider than the radius).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from survey_engine.bench.measure import PeakMemory, machine_info

HERE = Path(__file__).resolve().parent


def run_survey_engine(src: Path, out: Path, client, max_rows: int, margin: float) -> dict:
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    r = run_import(
        ImportArguments(
            [str(src)],
            str(out),
            id_column="source_id",
            max_rows=max_rows,
            margin_arcsec=margin,
            highest_order=10,
        ),
        client=client,
        progress=False,
    )
    return {"rows": r.rows, "partitions": r.partitions, "margin_rows": r.margin_rows}


def run_hats_import(src: Path, out: Path, client, max_rows: int, margin: float) -> dict:
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    files = sorted(str(p) for p in src.glob("*.parquet"))
    args = (
        CollectionArguments(
            output_artifact_name=out.name, output_path=str(out.parent), progress_bar=False, resume=False
        )
        .catalog(
            input_file_list=files,
            file_reader="parquet",
            ra_column="ra",
            dec_column="dec",
            pixel_threshold=max_rows,
            highest_healpix_order=10,
        )
        .add_margin(margin_threshold=margin)
    )
    pipeline_with_client(args, client)
    import hats

    coll = hats.read_hats(out)
    return {
        "rows": int(coll.main_catalog.catalog_info.total_rows),
        "partitions": len(coll.main_catalog.get_healpix_pixels()),
    }


def agreement(ours: Path, theirs: Path) -> dict:
    import pyarrow.dataset as ds

    def ids(path, margin):
        from survey_engine import open_catalog

        cat = open_catalog(path)
        target = cat.margin if margin else cat
        return (
            ds.dataset([str(f) for f in target.partition_files()], format="parquet")
            .to_table(columns=["source_id"])
            .column(0)
            .to_numpy()
        )

    a, b = ids(ours, False), ids(theirs, False)
    ma, mb = ids(ours, True), ids(theirs, True)
    return {
        "same_rows": bool(len(a) == len(b) and np.array_equal(np.sort(a), np.sort(b))),
        "our_margin_within_theirs": bool(np.isin(ma, mb).all()),
        "margin_rows": {"survey_engine": int(len(ma)), "hats_import": int(len(mb))},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--max-rows", type=int, default=50_000, help="rows per partition (hats-import's pixel_threshold)"
    )
    parser.add_argument("--margin", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--tools",
        nargs="+",
        default=["survey_engine", "hats_import"],
        choices=["survey_engine", "hats_import"],
    )
    parser.add_argument("--work", default="/tmp/se_bench_import")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)

    import logging

    from distributed import Client, LocalCluster

    from survey_engine.mock.sky import write_mock_sky

    work = Path(args.work)
    rows_out = []

    def fresh_cluster():
        # a new cluster per measured run: same start for every tool, and its memory counted alone
        return LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            silence_logs=logging.ERROR,
            dashboard_address=":0",
        )

    for n in args.rows:
        src = work / f"mock_{n}"
        with fresh_cluster() as cluster, Client(cluster) as client:
            write_mock_sky(n, src, seed=1, client=client, progress=False)
        input_bytes = sum(f.stat().st_size for f in src.glob("*.parquet"))
        in_memory = sum(_uncompressed_bytes(f) for f in src.glob("*.parquet"))
        tools = {"survey_engine": run_survey_engine, "hats_import": run_hats_import}
        for tool, fn in ((t, tools[t]) for t in args.tools):
            times, peaks, baselines, info = [], [], [], {}
            for rep in range(args.repeat):
                out = work / f"{tool}_{n}"
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(str(out) + ".partial", ignore_errors=True)
                with fresh_cluster() as cluster, Client(cluster) as client, PeakMemory() as mem:
                    time.sleep(0.2)  # let the sampler record the idle baseline
                    t0 = time.perf_counter()
                    info = fn(src, out, client, args.max_rows, args.margin)
                    times.append(time.perf_counter() - t0)
                peaks.append(mem.peak)
                baselines.append(mem.baseline or 0)
            rows_out.append(
                {
                    "tool": tool,
                    "rows": n,
                    "input_bytes": input_bytes,
                    "input_uncompressed_bytes": in_memory,
                    "seconds": times,
                    "median_s": statistics.median(times),
                    "peak_rss_bytes": max(peaks),
                    "peak_above_idle_bytes": max(p - b for p, b in zip(peaks, baselines)),
                    **info,
                }
            )
            print(
                f"{tool:14s} {n:>11,} rows: {statistics.median(times):7.2f} s (runs {', '.join(f'{t:.1f}' for t in times)}), "
                f"peak {max(peaks) / 2**30:.2f} GiB, {rows_out[-1]['peak_above_idle_bytes'] / 2**30:.2f} GiB above the idle cluster "
                f"(input {in_memory / 2**30:.2f} GiB uncompressed)"
            )
        if len(args.tools) < 2:
            continue
        agree = agreement(work / f"survey_engine_{n}", work / f"hats_import_{n}")
        ours = next(r for r in rows_out if r["tool"] == "survey_engine" and r["rows"] == n)
        theirs = next(r for r in rows_out if r["tool"] == "hats_import" and r["rows"] == n)
        ours["agreement"] = agree
        ours["speedup_vs_hats_import"] = theirs["median_s"] / ours["median_s"]
        ours["memory_ratio_vs_hats_import"] = ours["peak_rss_bytes"] / theirs["peak_rss_bytes"]
        print(
            f"  speed-up {ours['speedup_vs_hats_import']:.2f}x, memory ratio {ours['memory_ratio_vs_hats_import']:.2f}, agreement {agree}"
        )
    report = {
        "benchmark": "import+margin",
        "machine": machine_info(),
        "params": vars(args),
        "results": rows_out,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "import.json" if len(args.tools) == 2 else f"import_{'_'.join(args.tools)}.json"
    (out_dir / name).write_text(json.dumps(report, indent=1))
    return report


def _uncompressed_bytes(path: Path) -> int:
    import pyarrow.parquet as pq

    md = pq.read_metadata(path)
    return sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))


if __name__ == "__main__":
    main()
