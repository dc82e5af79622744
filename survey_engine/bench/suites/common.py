"""What every benchmark suite shares: the measurement plan per size, the peer row limits, a fresh
LocalCluster per measurement, per-task profiles, the report row, the mock inputs made once per
size, peers run in fresh processes, and the install command of a peer that is not installed."""

from __future__ import annotations

import contextlib
import json
import re
from importlib.util import find_spec
from pathlib import Path

import numpy as np

# Peers run up to these sizes (above them a row says they were not run: hats-import at 10^8 rows
# alone would take the better part of an hour here). ``--max-peer-rows`` moves the default; the
# per-suite / per-tool caps stay (one-process HDBSCAN and astropy's matcher grow too slowly).
MAX_PEER_ROWS = {"default": 10_000_000, "clustering": 200_000, "astropy": 10_000_000}
BIG = 10_000_000  # from this size on: no warm-up run and a single repetition (said in each row)


def install_command(distribution: str) -> str:
    """``pip install NAME==VERSION`` with the version survey_engine pins for ``distribution`` (in
    any extra of its own metadata, e.g. ``[test]``), else ``pip install NAME``."""
    import importlib.metadata as md

    try:
        requirements = md.requires("survey_engine") or []
    except md.PackageNotFoundError:
        requirements = []
    pattern = re.compile(rf"^{re.escape(distribution)}\s*(==\s*[^;,\s]+)", re.IGNORECASE)
    for requirement in requirements:
        pinned = pattern.match(requirement)
        if pinned:
            return f"pip install {distribution}{pinned.group(1).replace(' ', '')}"
    return f"pip install {distribution}"


def peer_missing(module: str, distribution: str) -> str | None:
    """The report note for a peer library that is not installed (``not installed: pip install
    lsdb==0.11.1``), or None when ``module`` can be imported. A plain ``pip install .`` has no
    peers; the suites then measure survey_engine alone and say how to add each peer."""
    if find_spec(module) is None:
        return f"not installed: {install_command(distribution)}"
    return None


def repeat_plan(n: int | None, repeats: int) -> dict:
    """Warm-up and repetitions for a size: the full discipline below ``BIG``, one run above."""
    return {"repeats": repeats, "warmup": 1} if not n or n < BIG else {"repeats": 1, "warmup": 0}


def peer_limit(suite: str, limits: dict | None = None, tool: str | None = None) -> int:
    limits = limits or MAX_PEER_ROWS
    return limits.get(tool, limits.get(suite, limits["default"]))


def peer_allowed(suite: str, n: int | None, limits: dict | None = None, tool: str | None = None) -> bool:
    return n is None or n <= peer_limit(suite, limits, tool)


@contextlib.contextmanager
def task_profile(client, into: list):
    """Per-task compute times while the block runs, on the workers (Dask's task stream) and on this
    process's threads (``runtime.local_task_times``: a LocalCluster's match tasks run here); appends
    a summary to ``into``. These per-partition times feed the cost model."""
    from distributed import get_task_stream

    from survey_engine.runtime import local_task_times

    with get_task_stream(client) as ts, local_task_times() as here:
        yield
    durations, on_workers = list(here), 0
    for t in ts.data:
        for ss in t.get("startstops", ()):
            if ss.get("action") == "compute":
                durations.append(ss["stop"] - ss["start"])
                on_workers += 1
    d = np.asarray(durations) if durations else np.zeros(1)
    into.append(
        {
            "tasks": len(durations),
            "worker_tasks": on_workers,  # of those, run by Dask workers (the rest on threads here)
            "task_seconds": float(d.sum()),
            "task_s_median": float(np.median(d)),
            "task_s_p95": float(np.percentile(d, 95)),
            "task_s_max": float(d.max()),
        }
    )


def profiled(client, fn, into: list):
    def run():
        with task_profile(client, into):
            return fn()

    return run


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def local_cluster(workers: int):
    """A fresh LocalCluster of exactly ``workers`` for one measurement (never a client already
    around: the scaling suite needs the worker count it asks for).

    Starting one writes the workers' settings into this process's environment (OMP_NUM_THREADS=1,
    MALLOC_TRIM_THRESHOLD_=65536, ...); an OpenMP library loaded afterwards here (XGBoost) would
    use one thread, and every tool process started afterwards (the cross-match's, the one-process
    peers') would inherit them, so the driver's environment is put back on exit
    (``runtime.environment_kept``). The stages' own ``runtime.fresh_local_client``: the same quiet
    logs, the same close."""
    from survey_engine.runtime import fresh_local_client

    with fresh_local_client(workers) as client:
        yield client


def peer_environment(threads: int) -> dict:
    """The environment of a fresh single-process peer using ``threads`` threads."""
    import os

    return {**os.environ, **{k: str(threads) for k in THREAD_VARIABLES}}


def bench_row(
    suite, case, tool, rows, workers, m=None, agree=None, note=None, profile: list | None = None, **extra
) -> dict:
    r = {
        "suite": suite,
        "case": case,
        "tool": tool,
        "rows": rows,
        "workers": workers,
        "agree": agree,
        "note": note,
    }
    if m is not None:
        r.update({k: m[k] for k in ("seconds", "min_s", "max_s", "first_s", "repeats", "peak_rss_bytes")})
        r["peak_rss_process_bytes"] = m.get("peak_rss_process_bytes")
        r["warmup"] = m.get("warmup", 1)
        r["rows_per_s"] = rows / m["seconds"] if rows and m["seconds"] > 0 else None
    if profile:
        r.update(profile[-1])  # the last timed run's per-task times
    r.update(extra)
    return r


def not_run_row(suite, case, tool, rows, workers, limits=None) -> dict:
    return bench_row(
        suite,
        case,
        tool,
        rows,
        workers,
        note=f"not run above {peer_limit(suite, limits, tool):,} rows (time budget of the full run)",
    )


def mock_files(rows: int, work: Path, client) -> Path:
    from survey_engine.mock.sky import write_mock_sky

    out = work / f"mock_{rows}"
    if not out.exists():
        write_mock_sky(rows, out, seed=11, client=client, progress=False)
    return out


def import_max_rows(n: int) -> int:
    """Rows per partition for an n-row import: about 20 partitions, at least 10k, at most 1M rows."""
    return int(min(1_000_000, max(10_000, n // 20)))


def ids_in_files(path: Path) -> np.ndarray:
    import pyarrow.dataset as ds

    files = sorted(str(f) for f in Path(path).rglob("Npix=*.parquet"))
    if not files:
        return np.zeros(0, dtype=np.int64)
    return ds.dataset(files, format="parquet").to_table(columns=["source_id"]).column(0).to_numpy()


def catalog_ids(path: Path) -> np.ndarray:
    import pyarrow.dataset as ds

    from survey_engine.catalog.catalog import open_catalog

    cat = open_catalog(path)
    return (
        ds.dataset([str(f) for f in cat.partition_files()], format="parquet")
        .to_table(columns=["source_id"])
        .column(0)
        .to_numpy()
    )


def hats_import_catalog(src: Path, out: Path, client, max_rows: int) -> None:
    """hats-import's catalog + 5" margin from a Parquet file or a folder of them."""
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    files = sorted(str(p) for p in src.glob("*.parquet")) if src.is_dir() else [str(src)]
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
        .add_margin(margin_threshold=5.0)
    )
    pipeline_with_client(args, client)


def pair_array(left_ids: np.ndarray, right_ids: np.ndarray) -> np.ndarray:
    """A pair set as a sorted (n, 2) int64 array: equal sets give equal arrays. Every tool's time
    includes building it (a Python set of 50M tuples would not fit the harness in memory)."""
    pairs = np.column_stack([np.asarray(left_ids, dtype=np.int64), np.asarray(right_ids, dtype=np.int64)])
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def xyz(df):
    from survey_engine.catalog.healpix import radec_to_xyz

    return radec_to_xyz(df.ra.to_numpy(), df.dec.to_numpy())


def peer_process(module: str, args: list[str], what: str, env: dict | None = None) -> dict:
    """Run ``python -m module args`` in a fresh process; its last stdout line is a JSON result.
    A peer library that is not installed is an ImportError (the row then says so)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        if "ModuleNotFoundError" in proc.stderr:
            raise ImportError(proc.stderr.strip().splitlines()[-1])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mock_catalog(n: int, work: Path, client, margin: float = 0.0, max_rows: int | None = None) -> Path:
    """The mock sky of n rows as a HATS catalog (made once per size and margin, then reused)."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    cat_path = work / f"mock_cat_{n}_m{margin:g}"
    if not cat_path.exists():
        src = mock_files(n, work, client)
        run_import(
            ImportArguments(
                [str(src)],
                str(cat_path),
                id_column="source_id",
                max_rows=max_rows or max(20_000, n // 20),
                margin_arcsec=margin,
            ),
            client=client,
            progress=False,
        )
    return cat_path
