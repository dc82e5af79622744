"""crossmatch suite: survey_engine against LSDB, astropy and one global cKDTree, each tool in a fresh
process (``bench/xm_peer.py``), cold and warm, with the same pair set."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.bench.measure import run_summary
from survey_engine.bench.suites.common import (
    bench_row,
    local_cluster,
    not_run_row,
    peer_allowed,
    peer_missing,
    repeat_plan,
)


def pair_inputs(n: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    a = pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
        }
    )
    sigma = 0.35 / 3600
    cosd = np.maximum(np.cos(np.radians(a.dec.to_numpy())), 1e-6)
    b = pd.DataFrame(
        {
            "ra": (a.ra + rng.normal(0, sigma, n) / cosd) % 360,
            "dec": np.clip(a.dec + rng.normal(0, sigma, n), -90, 90),
        }
    )
    extra = n // 5
    b = pd.concat(
        [
            b,
            pd.DataFrame(
                {"ra": rng.uniform(0, 360, extra), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, extra)))}
            ),
        ],
        ignore_index=True,
    )
    b.insert(0, "id", np.arange(len(b), dtype=np.int64) + 10**10)
    return a, b


XM_SMALL_PARTITIONS = 40  # LSDB also runs on catalogs of n / 40 rows per partition: its best size is not ours


def run(
    sizes,
    repeats,
    workers,
    work: Path,
    peer_limits=None,
    radius: float = 1.0,
    partition_rows: int | None = None,
) -> list[dict]:
    """Nearest neighbour within ``radius`` of A (n uniform rows) in B (A jittered by 0.35" per axis
    plus n/5 extra rows): survey_engine, LSDB (on the same catalogs, at most ``partition_rows`` rows
    per partition, default n/10, and on n/40-row partitions),
    astropy and one global cKDTree, each in a fresh process (``bench/xm_peer.py``): a cold run
    (imports, opening, matching) then warm runs, the tools' runs interleaved (A, B, A, B). The
    driver keeps only the truth and one tool's pair array at a time, so 5x10^7 rows fit this machine."""
    out_rows = []
    for n in sizes:
        out_rows += _size_rows(n, repeats, workers, work, peer_limits, radius, partition_rows)
    return out_rows


XM_TOOLS = (  # (label, tool, catalog layout)
    ("ckdtree_global", "ckdtree_global", "default"),
    ("survey_engine", "survey_engine", "default"),
    ("lsdb", "lsdb", "default"),
    ("lsdb_small_partitions", "lsdb", "small"),
    ("astropy", "astropy", "default"),
)


def _size_rows(
    n: int, repeats, workers: int, work: Path, peer_limits, radius: float, partition_rows: int | None
) -> list[dict]:
    """The rows of one size: inputs written and imported once per layout, every tool run interleaved,
    each tool's pairs compared with the global cKDTree's."""
    from survey_engine.catalog.catalog import open_catalog

    plan = repeat_plan(n, repeats)
    a, b = pair_inputs(n)
    case = f"{n} x {len(b)}" + (f", partitions of {partition_rows:,} rows" if partition_rows else "")
    files = {"A": work / f"xm_A_{n}.parquet", "B": work / f"xm_B_{n}.parquet"}
    a.to_parquet(files["A"])
    b.to_parquet(files["B"])
    del a, b
    layouts = {"default": partition_rows or max(20_000, n // 10)}
    # module and distribution names agree
    missing = {tool: peer_missing(tool, tool) for tool in ("lsdb", "astropy")}
    if peer_allowed("crossmatch", n, peer_limits, "lsdb") and not missing["lsdb"]:
        layouts["small"] = max(5_000, n // XM_SMALL_PARTITIONS)
    cats = _import_layouts(files, layouts, n, work, workers)
    parts = {lay: len(open_catalog(cats[("A", lay)]).partitions) for lay in layouts}

    def spec_of(tool, lay="default"):
        return {
            "left": str(cats[("A", lay)]),
            "right": str(cats[("B", lay)]),
            "left_file": str(files["A"]),
            "right_file": str(files["B"]),
            "radius": radius,
            "workers": workers,
            "runs": 1 + plan["repeats"],
            "pairs_out": str(work / f"xm_pairs_{tool}_{lay}_{n}.npy"),
        }

    def allowed(label, tool):
        return (
            label == "ckdtree_global"
            or tool == "survey_engine"
            or peer_allowed("crossmatch", n, peer_limits, tool)
        )

    chosen = {
        label: (tool, spec_of(tool, lay))
        for label, tool, lay in XM_TOOLS
        if lay in layouts and not missing.get(tool) and allowed(label, tool)
    }
    # the default kernel's one-time compilation after an install (numba's on-disk cache) is not part
    # of a cold run, as a peer's byte-compilation at install is not part of its cold run
    from survey_engine.crossmatch.algorithms import DEFAULT_ALGORITHM, get_algorithm

    get_algorithm(DEFAULT_ALGORITHM).prepare()
    # A, B, A, B: no tool measured alone in a quiet spell
    results = interleaved_peers(chosen, 1 + plan["repeats"])
    if isinstance(results["ckdtree_global"], Exception):
        raise results["ckdtree_global"]
    truth_file = chosen["ckdtree_global"][1]["pairs_out"]
    truth = np.load(truth_file)
    out_rows = []
    for label, tool, lay in XM_TOOLS:
        if not allowed(label, tool):
            out_rows.append(not_run_row("crossmatch", case, label, n, workers, peer_limits))
        elif missing.get(tool):
            out_rows.append(bench_row("crossmatch", case, label, n, workers, note=missing[tool]))
        elif lay in layouts:
            note = (
                f"partitions: {parts[lay]} left"
                if tool in ("survey_engine", "lsdb")
                else "in-memory arrays; cold includes reading the Parquet inputs"
            )
            out_rows += _tool_rows(case, label, n, workers, results[label], chosen[label][1], truth, note)
    del truth
    Path(truth_file).unlink(missing_ok=True)
    return out_rows


def _import_layouts(
    files: dict, layouts: dict, n: int, work: Path, workers: int
) -> dict[tuple[str, str], Path]:
    """A and B (B with a 5" margin) imported once per partition layout, on a cluster closed before the
    tools run (each starts its own)."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    cats: dict[tuple[str, str], Path] = {}
    with local_cluster(workers) as client:
        for lay, max_rows in layouts.items():
            for name, margin in (("A", 0.0), ("B", 5.0)):
                out = work / f"xm_{name}_{n}_{lay}"
                shutil.rmtree(out, ignore_errors=True)
                run_import(
                    ImportArguments(
                        [str(files[name])], str(out), id_column="id", max_rows=max_rows, margin_arcsec=margin
                    ),
                    client=client,
                    progress=False,
                )
                cats[(name, lay)] = out
    return cats


def _tool_rows(case: str, label: str, n: int, workers: int, res, spec: dict, truth, note: str) -> list[dict]:
    """A tool's warm and cold rows, its pairs compared with ``truth`` (its pair file removed after)."""
    pairs_file = spec["pairs_out"]
    if isinstance(res, ImportError):
        return [bench_row("crossmatch", case, label, n, workers, note=f"not installed: {res}")]
    if isinstance(res, Exception):
        raise res
    agree = True if label == "ckdtree_global" else bool(np.array_equal(np.load(pairs_file), truth))
    warm, cold = _xm_measure(res["runs"][1:]), _xm_measure(res["runs"][:1])
    profile = [res["profile"]] if res.get("profile") else None
    rows = [
        bench_row(
            "crossmatch",
            case,
            label,
            n,
            workers,
            warm,
            agree=agree,
            pairs=res["pairs"],
            note=note,
            profile=profile,
        ),
        bench_row(
            "crossmatch",
            f"{case}, cold",
            label,
            n,
            workers,
            cold,
            agree=agree,
            pairs=res["pairs"],
            note=note + "; a fresh process: imports, opening, matching",
        ),
    ]
    if label != "ckdtree_global":
        Path(pairs_file).unlink(missing_ok=True)
    return rows


def _xm_measure(runs: list[dict]) -> dict:
    return run_summary(
        [r["seconds"] for r in runs],
        runs[0]["seconds"],
        0,
        max(r["peak_rss_bytes"] for r in runs),
        max(r["peak_rss_process_bytes"] for r in runs),
    )


@contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """The processes ``pids`` and all their children stopped (SIGSTOP) inside the block, resumed
    (SIGCONT) after. Two idle Dask clusters beside it (event loops, heartbeats, the workers' 10 ms
    stack profilers) made a 0.3 s cross-match 1.5x slower here: a short run loses more to them
    than a long one, so the ratios depended on it. Their schedulers have no worker time-to-live
    (``xm_peer``), so a long pause drops no worker."""
    import psutil

    stopped = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            try:
                proc.suspend()
                stopped.append(proc)
            except psutil.NoSuchProcess:
                pass
    try:
        yield
    finally:
        for proc in reversed(stopped):
            try:
                proc.resume()
            except psutil.NoSuchProcess:
                pass


def _settle(quiet_percent: float = 15.0, quiet_windows: int = 5, longest: float = 10.0) -> float:
    """Wait (at most ``longest`` seconds) until the machine's CPUs have been quiet for
    ``quiet_windows`` 0.1 s windows in a row: the tool that ran last (its workers freeing memory,
    collecting garbage) and the resumed process of the next (its cluster catching up on the
    heartbeats and timers of the pause) must not run into the clock. Returns the seconds waited."""
    import time

    import psutil

    t0 = time.perf_counter()
    quiet = 0
    while quiet < quiet_windows and time.perf_counter() - t0 < longest:
        quiet = quiet + 1 if psutil.cpu_percent(interval=0.1) <= quiet_percent else 0
    return time.perf_counter() - t0


def interleaved_peers(chosen: dict[str, tuple[str, dict]], runs: int) -> dict[str, dict | Exception]:
    """Each tool in a fresh process of its own (``xm_peer --serve``), started one after another
    before any clock runs; then run 1 (cold) of every tool, run 2 of every tool, ... (A, B, A, B),
    so that load from elsewhere on the machine falls on all tools alike. During each run the other
    tools' processes are paused (``paused``) and the run starts once the CPUs are quiet
    (``_settle``). A tool whose process fails gets its exception (an ImportError when its library
    is not installed) and leaves the rotation."""
    import subprocess
    import sys
    import tempfile

    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, object] = {}  # stderr to a file: a full pipe would stall a tool mid-run
    results: dict[str, dict | Exception] = {}

    def failed(label: str) -> Exception:
        proc = procs.pop(label)
        proc.kill()
        proc.wait()
        logs[label].seek(0)
        err = logs[label].read()
        if "ModuleNotFoundError" in err:
            return ImportError(err.strip().splitlines()[-1])
        return RuntimeError(
            f"cross-match benchmark of {chosen[label][0]} failed (exit {proc.returncode}):\n{err[-3000:]}"
        )

    def ask(label: str, command: str | None) -> dict | None:
        proc = procs[label]
        try:
            if command is not None:
                proc.stdin.write(command + "\n")
                proc.stdin.flush()
            line = proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            results[label] = failed(label)
            return None
        return json.loads(line)

    try:
        for label, (tool, spec) in chosen.items():
            logs[label] = tempfile.TemporaryFile("w+")
            procs[label] = subprocess.Popen(
                [sys.executable, "-m", "survey_engine.bench.xm_peer", "--serve", tool, json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logs[label],
                text=True,
            )
            ask(label, None)  # wait for "ready": startups never overlap a timed run
        for i in range(runs):
            for label in list(procs):
                others = [procs[other].pid for other in procs if other != label]
                with paused(others):
                    _settle()
                    ask(label, "last" if i == runs - 1 else "run")
        for label in list(procs):
            res = ask(label, "finish")
            if res is not None:
                results[label] = res
                proc = procs.pop(label)
                proc.wait()
    finally:
        for proc in procs.values():
            proc.kill()
        for log in logs.values():
            log.close()
    return results
