"""Survey scale on one machine: import + margin and a cross-match written to disk, from 10^6 rows up to
the largest size the disk holds, with the memory of every process sampled over time.

For each size n: A is n uniform rows (id, ra, dec), B is A jittered by 0.35" per axis plus n/5
uniform rows (as the cross-match bench's inputs), both written block by block (the inputs are never
in memory at once). Then, each in a fresh process as a user runs them:

    survey-engine import A --out cat_a --id id --margin 0
    survey-engine import B --out cat_b --id id --margin 5
    survey-engine crossmatch cat_a cat_b --radius 1 --out xm

The resident memory of the command and all its children (the Dask workers) is sampled every 0.5 s;
the peak and the samples are kept. Disk: the inputs, each catalog and the result. Then the cost model:
time = a + b * rows fitted per stage on the sizes up to --fit-max, projected to each larger size and
compared with what was measured.

    python benchmarks/bench_scale.py --sizes 1e6,1e7,5e7,2e8 --work /big/disk/scale --workers 2

Writes WORK/scale.json (every run, the memory samples) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

BLOCK_ROWS = 5_000_000
SIGMA_DEG = 0.35 / 3600


def _uniform(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))


def write_inputs(n: int, folder: Path) -> tuple[Path, Path]:
    """A and B of ``n`` rows as Parquet files of at most BLOCK_ROWS rows (deterministic per block)."""
    a_dir, b_dir = folder / "A", folder / "B"
    done = folder / "inputs.done"
    if done.exists():
        return a_dir, b_dir
    for d in (a_dir, b_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    extra_id = 10**11
    for block, start in enumerate(range(0, n, BLOCK_ROWS)):
        rows = min(BLOCK_ROWS, n - start)
        rng = np.random.default_rng([7, block])
        ra, dec = _uniform(rng, rows)
        ids = np.arange(start, start + rows, dtype=np.int64)
        pq.write_table(pa.table({"id": ids, "ra": ra, "dec": dec}), a_dir / f"part-{block:05d}.parquet")
        cosd = np.maximum(np.cos(np.radians(dec)), 1e-6)
        bra = (ra + rng.normal(0, SIGMA_DEG, rows) / cosd) % 360
        bdec = np.clip(dec + rng.normal(0, SIGMA_DEG, rows), -90, 90)
        extra = rows // 5
        xra, xdec = _uniform(rng, extra)
        b = pa.table(
            {
                "id": np.concatenate([ids + 10**10, np.arange(extra, dtype=np.int64) + extra_id]),
                "ra": np.concatenate([bra, xra]),
                "dec": np.concatenate([bdec, xdec]),
            }
        )
        extra_id += extra
        pq.write_table(b, b_dir / f"part-{block:05d}.parquet")
        del ra, dec, bra, bdec, b
    done.write_text("ok")
    return a_dir, b_dir


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(command: list[str], log: Path) -> dict:
    """Run ``command`` in a fresh process; its wall time and the memory of its process tree over time."""
    samples: list[tuple[float, int]] = []
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((round(time.perf_counter() - start, 2), _tree_rss(ps)))
                stop.wait(0.5)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = proc.wait()
        stop.set()
        thread.join()
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {code}); see {log}")
    peak = max((m for _, m in samples), default=0)
    return {"seconds": seconds, "peak_rss_bytes": peak, "memory": samples}


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def result_rows(path: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in path.rglob("*.parquet") if "Norder=" in str(f))


def run_size(
    n: int, work: Path, workers: int, max_rows: int, keep: bool, only: set[str] | None = None
) -> list[dict]:
    folder = work / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    a_dir, b_dir = write_inputs(n, folder)
    inputs_s = time.perf_counter() - t0
    exe = [sys.executable, "-m", "survey_engine.cli"]
    common = ["--workers", str(workers), "--no-progress"]
    steps = [
        ("import A", ["import", str(a_dir), "--out", str(folder / "cat_a"), "--id", "id", "--margin", "0"]),
        (
            'import B + 5" margin',
            ["import", str(b_dir), "--out", str(folder / "cat_b"), "--id", "id", "--margin", "5"],
        ),
        (
            'crossmatch 1" to disk',
            [
                "crossmatch",
                str(folder / "cat_a"),
                str(folder / "cat_b"),
                "--radius",
                "1",
                "--out",
                str(folder / "xm"),
            ],
        ),
    ]
    out = []
    for name, args in steps:
        if only and args[0] not in only:
            continue
        target = Path(args[args.index("--out") + 1])
        for leftover in (target, target.with_name(target.name + ".partial")):  # a fresh run, never a resume
            shutil.rmtree(leftover, ignore_errors=True)
        target.with_name(target.name + ".lock").unlink(missing_ok=True)
        extra = ["--max-rows", str(max_rows)] if args[0] == "import" else []
        m = run_measured([*exe, *args, *extra, *common], folder / f"{target.name}.log")
        m.update(stage=name, rows=n, disk_bytes=disk_bytes(target), workers=workers)
        if args[0] == "crossmatch":
            m["result_rows"] = result_rows(target)
        out.append(m)
        print(
            f"{n:>12,} {name:<24} {m['seconds']:8.1f} s  peak {m['peak_rss_bytes'] / 2**30:5.2f} GiB  "
            f"disk {m['disk_bytes'] / 2**30:6.2f} GiB",
            flush=True,
        )
    if only:  # a rerun of some stages on kept inputs and catalogs
        return out
    out.append(
        {
            "stage": "inputs (A + B Parquet)",
            "rows": n,
            "seconds": inputs_s,
            "disk_bytes": disk_bytes(a_dir) + disk_bytes(b_dir),
            "peak_rss_bytes": None,
            "memory": [],
        }
    )
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def projections(runs: list[dict], fit_max: int) -> list[dict]:
    """Per stage, time = a + b * rows fitted on the sizes <= fit_max, against each larger size measured."""
    out = []
    for stage in dict.fromkeys(r["stage"] for r in runs if r.get("peak_rss_bytes") is not None):
        pts = [(r["rows"], r["seconds"]) for r in runs if r["stage"] == stage]
        fit = [(x, y) for x, y in pts if x <= fit_max]
        if len({x for x, _ in fit}) < 2:
            continue
        b, a = np.polyfit([x for x, _ in fit], [y for _, y in fit], 1)
        for x, y in pts:
            if x > fit_max:
                p = a + b * x
                out.append({"stage": stage, "rows": x, "projected_s": p, "measured_s": y, "error": p / y - 1})
    return out


def memory_over_time(runs: list[dict]) -> list[dict]:
    """Per stage and size, the resident memory of all processes at each tenth of the run's time."""
    out = []
    for r in sorted(runs, key=lambda r: (r["stage"], r["rows"])):
        if not r.get("memory"):
            continue
        t, rss = np.array(r["memory"], dtype=float).T
        at = [float(np.interp(f * t[-1], t, rss)) for f in np.linspace(0.1, 1.0, 10)]
        out.append({"stage": r["stage"], "rows": r["rows"], "gib": [x / 2**30 for x in at]})
    return out


def plot_memory(runs: list[dict], path: Path) -> None:
    """One panel per command: memory (GiB, all processes) against seconds, one line per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(r["stage"] for r in runs if r.get("memory")))
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.6), sharey=True)
    for ax, stage in zip(np.atleast_1d(axes), stages):
        for r in sorted((r for r in runs if r["stage"] == stage), key=lambda r: r["rows"]):
            t, rss = np.array(r["memory"], dtype=float).T
            ax.plot(t, rss / 2**30, label=f"{r['rows']:.0e} rows")
        ax.set(title=stage, xlabel="seconds", xscale="log")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("resident memory, all processes (GiB)")
    np.atleast_1d(axes)[-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e6,1e7", help="comma-separated row counts of A (B has 1.2x)")
    ap.add_argument(
        "--work", default="/tmp/scale", help="working folder (needs about 130 bytes per row of A)"
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--max-rows", type=int, default=2_000_000, help="rows per partition at import")
    ap.add_argument("--fit-max", type=float, default=1e7, help="fit the cost model on sizes up to this")
    ap.add_argument("--keep", action="store_true", help="keep each size's files (default: removed after)")
    ap.add_argument("--plot", default="", help="write memory over time as a PNG here")
    ap.add_argument(
        "--only", default="", help="rerun only these commands (e.g. crossmatch) on files kept by --keep"
    )
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]  # none: only the report of WORK/scale.json
    record = work / "scale.json"
    runs = json.loads(record.read_text())["runs"] if record.exists() else []
    only = {c for c in args.only.split(",") if c} or None
    for n in sizes:
        new = run_size(n, work, args.workers, args.max_rows, args.keep or bool(only), only)
        redone = {r["stage"] for r in new}
        runs = [r for r in runs if r["rows"] != n or (only and r["stage"] not in redone)] + new
        record.write_text(json.dumps({"runs": runs}, indent=0))
    print("\n| stage | rows | seconds | rows/s | peak memory (all processes) | disk |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in sorted(runs, key=lambda r: (r["stage"], r["rows"])):
        peak = f"{r['peak_rss_bytes'] / 2**30:.2f} GiB" if r.get("peak_rss_bytes") else "-"
        print(
            f"| {r['stage']} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | {peak} | "
            f"{r['disk_bytes'] / 2**30:.2f} GiB |"
        )
    print("\n| stage | rows | memory (GiB) at 10%, 20%, ... 100% of the run's time |")
    print("|---|---:|---|")
    for m in memory_over_time(runs):
        print(f"| {m['stage']} | {m['rows']:,} | {' '.join(f'{g:.2f}' for g in m['gib'])} |")
    if args.plot:
        plot_memory(runs, Path(args.plot))
    proj = projections(runs, int(args.fit_max))
    if proj:
        print("\n| stage | rows | projected (fit on <= %.0e) | measured | error |" % args.fit_max)
        print("|---|---:|---:|---:|---:|")
        for p in proj:
            print(
                f"| {p['stage']} | {p['rows']:,} | {p['projected_s']:.1f} s | {p['measured_s']:.1f} s | {p['error']:+.0%} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
