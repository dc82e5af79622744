"""Attaching detections to objects: time and peak memory against the number of detections.

    python benchmarks/bench_lightcurves.py [--objects 100000] [--detections 1000000 3000000 10000000] [--out benchmarks/results]

Mock objects with sparse (Gaia-like, 30-120 epochs) light curves are written once
(``write_mock_lightcurves``: 10^5 objects hold about 7.5 x 10^6 detections in blocks of 2,000
objects) and imported as the object catalog. For each detection count N the first block files up
to N detections are attached (``attach_lightcurves``, the ``survey-engine lightcurves`` command)
on a LocalCluster of 2 workers x 1 thread; beyond what the blocks hold, the block files are given
again, so the same objects receive their detections a second time (a repeat visit of the same
sky: more detections per object, the same objects). Reported per N: wall seconds, peak summed RSS
of the driver and its workers and of the largest process (sampled every 50 ms), the idle cluster's
RSS before the attach, and the detections per object. Memory is flat in N when the peak does not
grow with it: the attach streams batches of ``batch_rows`` detections and holds one partition's at
a time. Writes benchmarks/results/lightcurves.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from survey_engine.bench.measure import PeakMemory, machine_info

HERE = Path(__file__).resolve().parent


def detection_inputs(files: list[Path], rows: list[int], wanted: int, stage: Path) -> tuple[list[str], int]:
    """Block files holding about ``wanted`` detections; files given again (as links under ``stage``,
    so that each input is its own path) once every block is used."""
    inputs, total, copy = [], 0, 0
    while total < wanted:
        for f, n in zip(files, rows):
            if total >= wanted:
                break
            if copy == 0:
                inputs.append(str(f))
            else:
                link = stage / f"repeat{copy}" / f.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(f)
                inputs.append(str(link))
            total += n
        copy += 1
    return inputs, total


def main() -> None:
    import logging

    from distributed import Client, LocalCluster

    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import
    from survey_engine.ingest.lightcurves import LightcurveArguments, attach_lightcurves
    from survey_engine.mock.lightcurves import write_mock_lightcurves

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--detections", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument(
        "--max-rows", type=int, default=2_000, help="objects per partition of the object catalog"
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="keep the mock objects here between runs (default: a temporary folder)",
    )
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-lightcurves-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, silence_logs=logging.ERROR) as cluster,
            Client(cluster) as client,
        ):
            mock = work / f"mock-{args.objects}"
            t0 = time.perf_counter()
            if not (mock / "done").exists():
                shutil.rmtree(mock, ignore_errors=True)
                write_mock_lightcurves(
                    args.objects, mock, seed=7, cadence="sparse", client=client, progress=False
                )
                (mock / "done").write_text("")
            objects = work / f"objects-{args.objects}"
            if not objects.exists():
                run_import(
                    ImportArguments(
                        [str(mock / "objects")],
                        str(objects),
                        id_column="object_id",
                        max_rows=args.max_rows,
                        margin_arcsec=0,
                    ),
                    client=client,
                    progress=False,
                )
            prepare_s = time.perf_counter() - t0
            files = sorted((mock / "detections").glob("*.parquet"))
            counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
            print(
                f"{args.objects:,} objects, {sum(counts):,} detections in {len(files)} files (prepared in {prepare_s:.0f} s)"
            )
            for wanted in args.detections:
                inputs, total = detection_inputs(files, counts, wanted, work / "links")
                out = work / f"nested-{wanted}"
                shutil.rmtree(out, ignore_errors=True)
                time.sleep(1.0)
                with PeakMemory() as mem:
                    time.sleep(0.3)  # the baseline sample: the idle cluster
                    t0 = time.perf_counter()
                    result = attach_lightcurves(
                        LightcurveArguments(str(objects), inputs, str(out)), client=client, progress=False
                    )
                    seconds = time.perf_counter() - t0
                assert result.detections == total and result.unmatched_detections == 0
                row = {
                    "detections": result.detections,
                    "objects": result.objects,
                    "partitions": result.partitions,
                    "detections_per_object": result.detections / result.objects,
                    "seconds": seconds,
                    "detections_per_second": result.detections / seconds,
                    "peak_rss_mib": mem.peak / 2**20,
                    "peak_rss_process_mib": mem.peak_process / 2**20,
                    "idle_rss_mib": (mem.baseline or 0) / 2**20,
                    "load_average_1min": os.getloadavg()[0],
                }
                rows.append(row)
                print(
                    f"{row['detections']:>11,} detections -> {row['objects']:,} objects: {seconds:6.1f} s, "
                    f"peak RSS {row['peak_rss_mib']:.0f} MiB (largest process {row['peak_rss_process_mib']:.0f} MiB; "
                    f"idle cluster {row['idle_rss_mib']:.0f} MiB), load {row['load_average_1min']:.1f}"
                )
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "objects": args.objects,
        "cadence": "sparse",
        "max_rows": args.max_rows,
        "rows": rows,
        "machine": machine_info(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lightcurves.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
