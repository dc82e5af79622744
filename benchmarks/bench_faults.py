"""Faults under load: an import of the mock sky and its self cross-match (--out), each hit by a worker
killed (SIGKILL), the scheduler killed and the output disk filling up, mid-run; the time of the
undisturbed (cold) run against the time the re-run takes to resume, and whether the output is
identical (rows, checksum of every row, partition files, margin).

    sudo python benchmarks/bench_faults.py --rows 1000000 [--max-rows 20000] [--faults worker scheduler disk]

Root is needed for the tmpfs (``mount -t tmpfs``). The same harness as tests/test_faults.py
(``tests/fault_harness.py``): every fault waits for the first finished shard or partition file.
The disk fault mounts a tmpfs of a quarter of the output's size, then remounts it large enough.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import fault_harness as fh  # noqa: E402


def _size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _check(done: fh.Done, what: str) -> None:
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def _one_line(done: fh.Done) -> str:
    lines = done.error_lines()
    ok = done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr
    if not ok:  # keep the evidence
        print(f"--- stderr of a run that did not end with one clear line:\n{done.stderr[-4000:]}", flush=True)
    return ("one line, exit 2: " if ok else f"NOT one clear line (exit {done.returncode}): ") + (
        lines[0][:160] if lines else done.stderr[-300:]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--max-rows", type=int, default=20_000)
    ap.add_argument("--faults", nargs="+", default=["worker", "scheduler", "disk"])
    ap.add_argument("--stages", nargs="+", default=["import", "crossmatch"])
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows of the table here")
    a = ap.parse_args()
    sizes = fh.Sizes(rows=a.rows, max_rows=a.max_rows)
    root = Path(a.work or tempfile.mkdtemp(prefix="bench-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        t0 = time.perf_counter()
        sky = fh.make_sky(root / "sky", sizes)
        print(f"mock sky: {sizes.rows:,} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        cat, pairs = root / "ref" / "cat", root / "ref" / "pairs"
        cold_import = fh.run(fh.cli(*fh.import_args(sizes, sky, cat)))
        _check(cold_import, "cold import")
        cold_match = fh.run(fh.cli(*fh.crossmatch_args(sizes, cat, pairs)))
        _check(cold_match, "cold crossmatch")
        ref = {"import": fh.digest(cat), "crossmatch": fh.digest(pairs)}
        cold = {"import": cold_import.seconds, "crossmatch": cold_match.seconds}
        out_mib = {"import": _size_mib(cat), "crossmatch": _size_mib(pairs)}
        print(
            f"cold: import {cold['import']:.1f} s ({len(ref['import']['partitions'])} partitions), "
            f"crossmatch {cold['crossmatch']:.1f} s ({ref['crossmatch']['rows']:,} rows)",
            flush=True,
        )

        def args_for(kind: str, out: Path) -> list[str]:
            return (
                fh.import_args(sizes, sky, out) if kind == "import" else fh.crossmatch_args(sizes, cat, out)
            )

        def marker(kind: str, partial: Path):
            return fh.has_file(partial, "*.index.npz" if kind == "import" else "Npix=*.parquet")

        def record(kind, fault, hit_at, first, resume, out) -> None:
            same = fh.digest(out) == ref[kind]
            row = {
                "stage": kind,
                "fault": fault,
                "rows": sizes.rows,
                "cold_s": round(cold[kind], 1),
                "fault_at_s": round(hit_at, 1) if hit_at is not None else None,
                "first_run": first,
                "resume_s": round(resume, 1) if resume is not None else None,
                "identical": same,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(out.parent, ignore_errors=True)

        for kind in a.stages:
            if "worker" in a.faults:
                out = root / f"{kind}-worker" / "out"
                out.parent.mkdir()
                running = fh.Running(fh.cli(*args_for(kind, out)))
                hit = fh.wait_for(marker(kind, out.with_name("out.partial")), running, "progress")
                fh.kill_local_workers(running, count=1)
                done = running.wait()
                _check(done, f"{kind} with a worker killed")
                record(kind, "worker killed", hit, f"completed in {done.seconds:.1f} s", None, out)
            if "scheduler" in a.faults:
                base = root / f"{kind}-scheduler"
                base.mkdir()
                spec = fh.job_spec(
                    base / "job.yaml", sizes, **({"sky": sky} if kind == "import" else {"catalog": cat})
                )
                work, stage = base / "work", "cat" if kind == "import" else "pairs"
                with fh.dask_processes(sizes.workers) as first:
                    running = fh.Running(fh.cli(*fh.submit_args(spec, first.address, work)))
                    hit = fh.wait_for(marker(kind, work), running, "progress")
                    first.kill_scheduler()
                    done = running.wait()
                line = _one_line(done) + (
                    "; nothing looks complete"
                    if not fh.looks_complete(work)
                    else "; SOMETHING LOOKS COMPLETE"
                )
                with fh.dask_processes(sizes.workers) as second:
                    again = fh.run(fh.cli(*fh.submit_args(spec, second.address, work)))
                _check(again, f"{kind} resumed after the scheduler was killed")
                record(kind, "scheduler killed", hit, line, again.seconds, work / stage)
            if "disk" in a.faults:
                base = root / f"{kind}-disk"
                # a quarter of what the output needs (an import also needs its shards: about as much again)
                size_mib = max(2, int(out_mib[kind] / 4))
                with fh.small_tmpfs(base, f"{size_mib}m") as disk:
                    out = disk / "out"
                    done = fh.run(fh.cli(*args_for(kind, out)))
                    line = _one_line(done) + (
                        "; nothing looks complete"
                        if not fh.looks_complete(disk)
                        else "; SOMETHING LOOKS COMPLETE"
                    )
                    fh.grow_tmpfs(disk, f"{int(out_mib[kind] * 4) + 256}m")
                    again = fh.run(fh.cli(*args_for(kind, out)))
                    _check(again, f"{kind} resumed after the disk filled up")
                    same = fh.digest(out) == ref[kind]
                    rows.append(
                        {
                            "stage": kind,
                            "fault": f"disk full ({size_mib} MiB tmpfs)",
                            "rows": sizes.rows,
                            "cold_s": round(cold[kind], 1),
                            "fault_at_s": round(done.seconds, 1),
                            "first_run": line,
                            "resume_s": round(again.seconds, 1),
                            "identical": same,
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        if a.work is None:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| stage | fault | rows | cold s | fault at s | first run | resume s | identical |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['stage']} | {r['fault']} | {r['rows']:,} | {r['cold_s']} | {r['fault_at_s']} | "
            f"{r['first_run']} | {r['resume_s'] if r['resume_s'] is not None else '-'} | {r['identical']} |"
        )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
