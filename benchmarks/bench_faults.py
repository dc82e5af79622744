"""Faults under load: an import of the mock sky and its self cross-match (--out), each hit by a worker
killed (SIGKILL), the scheduler killed and the output disk filling up, mid-run; the time of the
undisturbed (cold) run against the time the re-run takes to resume, and whether the output is
identical (rows, checksum of every row, partition files, margin).

    sudo python benchmarks/bench_faults.py --rows 1000000 [--max-rows 20000] [--faults worker scheduler disk]
    sudo python benchmarks/bench_faults.py --rows 50000000 --max-rows 200000 --work /root/faults/5e7 \
        --cases crossmatch:worker crossmatch:scheduler crossmatch:disk import:worker

Root is needed for the tmpfs (``mount -t tmpfs``). The same harness as tests/test_faults.py
(``tests/fault_harness.py``): every fault waits for the first finished shard or partition file.
The disk fault mounts a tmpfs of a quarter of the output's size (or ``--disk-mib``), then remounts
it large enough, or, when that would take more RAM than ``--tmpfs-max-mib``, copies what it holds to
the real disk and binds that at the same path (a larger disk with the same files).
"Identical" is ``fault_harness.same_output``: file by file (byte-identical, else the same rows), so
no catalog is loaded whole. With ``--work``, a mock sky and undisturbed runs already there (from an
earlier run of the same size) are reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
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


def _nrows(collection: Path) -> int:
    """The rows of a collection's main catalog, from its hats.properties."""
    from survey_engine.catalog import layout

    props = layout.read_properties(collection / layout.COLLECTION_FILE)
    return int(
        layout.read_properties(collection / props["hats_primary_table_url"] / layout.PROPERTIES_FILE)[
            "hats_nrows"
        ]
    )


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--max-rows", type=int, default=20_000)
    ap.add_argument("--faults", nargs="+", default=["worker", "scheduler", "disk"])
    ap.add_argument("--stages", nargs="+", default=["import", "crossmatch"])
    ap.add_argument(
        "--cases",
        nargs="+",
        default=None,
        help="STAGE:FAULT pairs to run, in order (instead of stages x faults)",
    )
    ap.add_argument(
        "--disk-mib", type=int, default=None, help="the tmpfs size (default: a quarter of the output)"
    )
    ap.add_argument(
        "--tmpfs-max-mib",
        type=int,
        default=4096,
        help="most RAM a tmpfs may take; beyond it the disk fault makes room on the real disk",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds any one run may take")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows of the table here")
    a = ap.parse_args()
    cases = (
        [tuple(c.split(":", 1)) for c in a.cases]
        if a.cases
        else [(kind, fault) for kind in a.stages for fault in a.faults]
    )
    sizes = fh.Sizes(rows=a.rows, max_rows=a.max_rows)
    root = Path(a.work or tempfile.mkdtemp(prefix="bench-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        sky, cold_file = root / "sky", root / "ref" / "cold.json"
        if (sky / ".complete").exists():
            _say(f"reusing the mock sky in {sky}")
        else:
            t0 = time.perf_counter()
            shutil.rmtree(sky, ignore_errors=True)  # an unfinished one
            fh.make_sky(sky, sizes, processes=sizes.workers)
            (sky / ".complete").touch()
            _say(f"mock sky: {sizes.rows:,} rows in {time.perf_counter() - t0:.1f} s")
        cat, pairs = root / "ref" / "cat", root / "ref" / "pairs"
        # the undisturbed runs, each once per --work folder (kept in cold.json); the cross-match's
        # only when a case needs it
        cold = json.loads(cold_file.read_text()) if cold_file.exists() else {}
        if "import" not in cold:
            shutil.rmtree(cold_file.parent, ignore_errors=True)
            cold_file.parent.mkdir(parents=True)
            cold_import = fh.run(fh.cli(*fh.import_args(sizes, sky, cat)), timeout=a.timeout)
            _check(cold_import, "cold import")
            cold = {"import": cold_import.seconds, "import_mib": _size_mib(cat)}
            cold_file.write_text(json.dumps(cold))
        _say(
            f"cold import: {cold['import']:.1f} s ({len(fh.partition_files(cat / 'cat'))} partitions, "
            f"{cold['import_mib']:.0f} MiB)"
        )
        if "crossmatch" not in cold and any(kind == "crossmatch" for kind, _ in cases):
            shutil.rmtree(pairs, ignore_errors=True)
            shutil.rmtree(pairs.with_name("pairs.partial"), ignore_errors=True)
            cold_match = fh.run(fh.cli(*fh.crossmatch_args(sizes, cat, pairs)), timeout=a.timeout)
            _check(cold_match, "cold crossmatch")
            cold.update(crossmatch=cold_match.seconds, crossmatch_mib=_size_mib(pairs))
            cold_file.write_text(json.dumps(cold))
        if "crossmatch" in cold:
            _say(
                f"cold crossmatch: {cold['crossmatch']:.1f} s ({_nrows(pairs):,} rows, "
                f"{cold['crossmatch_mib']:.0f} MiB)"
            )
        refs = {"import": cat, "crossmatch": pairs}

        def args_for(kind: str, out: Path) -> list[str]:
            return (
                fh.import_args(sizes, sky, out) if kind == "import" else fh.crossmatch_args(sizes, cat, out)
            )

        def marker(kind: str, partial: Path):
            return fh.has_file(partial, "*.index.npz" if kind == "import" else "Npix=*.parquet")

        def record(kind, fault, hit_at, first, resume, out) -> None:
            t0 = time.perf_counter()
            same, why = fh.same_output(refs[kind], out)
            row = {
                "stage": kind,
                "fault": fault,
                "rows": sizes.rows,
                "cold_s": round(cold[kind], 1),
                "fault_at_s": round(hit_at, 1) if hit_at is not None else None,
                "first_run": first,
                "resume_s": round(resume, 1) if resume is not None else None,
                "identical": same,
                "compared": why,
            }
            rows.append(row)
            _say(f"compared in {time.perf_counter() - t0:.1f} s")
            print(json.dumps(row), flush=True)
            if a.json:
                a.json.write_text(json.dumps(rows, indent=1))

        for kind, fault in cases:
            try:  # a case that fails is a row of the table, and the next case runs
                _say(f"{kind}: {fault}")
                if fault == "worker":
                    out = root / f"{kind}-worker" / "out"
                    shutil.rmtree(out.parent, ignore_errors=True)
                    out.parent.mkdir()
                    running = fh.Running(fh.cli(*args_for(kind, out)))
                    hit = fh.wait_for(
                        marker(kind, out.with_name("out.partial")), running, "progress", a.timeout
                    )
                    fh.kill_local_workers(running, count=1)
                    done = running.wait(a.timeout)
                    _check(done, f"{kind} with a worker killed")
                    record(kind, "worker killed", hit, f"completed in {done.seconds:.1f} s", None, out)
                    shutil.rmtree(out.parent, ignore_errors=True)
                elif fault == "scheduler":
                    base = root / f"{kind}-scheduler"
                    shutil.rmtree(base, ignore_errors=True)
                    base.mkdir()
                    spec = fh.job_spec(
                        base / "job.yaml", sizes, **({"sky": sky} if kind == "import" else {"catalog": cat})
                    )
                    work, stage = base / "work", "cat" if kind == "import" else "pairs"
                    with fh.dask_processes(sizes.workers) as first:
                        running = fh.Running(fh.cli(*fh.submit_args(spec, first.address, work)))
                        hit = fh.wait_for(marker(kind, work), running, "progress", a.timeout)
                        first.kill_scheduler()
                        done = running.wait(a.timeout)
                    line = _one_line(done) + (
                        "; nothing looks complete"
                        if not fh.looks_complete(work)
                        else "; SOMETHING LOOKS COMPLETE"
                    )
                    with fh.dask_processes(sizes.workers) as second:
                        again = fh.run(fh.cli(*fh.submit_args(spec, second.address, work)), timeout=a.timeout)
                    _check(again, f"{kind} resumed after the scheduler was killed")
                    record(kind, "scheduler killed", hit, line, again.seconds, work / stage)
                    shutil.rmtree(base, ignore_errors=True)
                elif fault == "disk":
                    base, ondisk = root / f"{kind}-disk", root / f"{kind}-disk-moved"
                    shutil.rmtree(ondisk, ignore_errors=True)
                    # a quarter of what the output needs (an import also needs its shards: about as much again)
                    size_mib = a.disk_mib or max(2, int(cold[f"{kind}_mib"] / 4))
                    room_mib = int(cold[f"{kind}_mib"] * 4) + 256
                    with fh.small_tmpfs(base, f"{size_mib}m") as disk:
                        out = disk / "out"
                        done = fh.run(fh.cli(*args_for(kind, out)), timeout=a.timeout)
                        line = _one_line(done) + (
                            "; nothing looks complete"
                            if not fh.looks_complete(disk)
                            else "; SOMETHING LOOKS COMPLETE"
                        )
                        if room_mib <= a.tmpfs_max_mib:
                            fh.grow_tmpfs(disk, f"{room_mib}m")
                            how = "tmpfs grown"
                        else:
                            t0 = time.perf_counter()
                            fh.move_to_disk(disk, ondisk)
                            how = f"moved to disk in {time.perf_counter() - t0:.1f} s"
                        _say(f"first run: {line}; room made: {how}")
                        again = fh.run(fh.cli(*args_for(kind, out)), timeout=a.timeout)
                        _check(again, f"{kind} resumed after the disk filled up")
                        record(
                            kind, f"disk full ({size_mib} MiB tmpfs)", done.seconds, line, again.seconds, out
                        )
                    shutil.rmtree(ondisk, ignore_errors=True)
                else:
                    raise SystemExit(f"unknown fault {fault!r} (worker, scheduler, disk)")
            except (SystemExit, AssertionError, OSError, subprocess.SubprocessError) as exc:
                rows.append(
                    {
                        "stage": kind,
                        "fault": fault,
                        "rows": sizes.rows,
                        "cold_s": round(cold.get(kind, 0), 1),
                        "fault_at_s": None,
                        "first_run": f"CASE FAILED: {str(exc)[-600:]}",
                        "resume_s": None,
                        "identical": False,
                        "compared": "",
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
                if a.json:
                    a.json.write_text(json.dumps(rows, indent=1))
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
