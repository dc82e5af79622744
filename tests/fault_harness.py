"""Faults under load, as a user meets them: real processes (the CLI, a `dask scheduler`, `dask worker`s,
LocalCluster worker processes), real signals and a real tmpfs that fills up.

Shared by ``tests/test_faults.py`` (CI sizes) and ``benchmarks/bench_faults.py`` (the largest size the
machine allows). Every fault waits for a progress marker on disk (the first finished shard or partition
file), never a fixed sleep, and fails loudly if the run ended before the fault could hit it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).parent / "dask")


@dataclass(frozen=True)
class Sizes:
    """One fault scenario's scale: a mock sky of ``rows``, imported with ``max_rows`` per partition."""

    rows: int = 100_000
    max_rows: int = 2_000
    margin_arcsec: float = 10.0
    radius_arcsec: float = 5.0
    seed: int = 7
    workers: int = 2


def make_sky(out: Path, sizes: Sizes, block_rows: int = 1_000_000) -> Path:
    """The deterministic mock sky of ``sizes.rows`` rows as Parquet files under ``out`` (in this process)."""
    from survey_engine.mock.sky import generate_block

    out.mkdir(parents=True, exist_ok=True)
    for block, start in enumerate(range(0, sizes.rows, block_rows)):
        frame = generate_block(sizes.seed, block, min(block_rows, sizes.rows - start))
        frame.to_parquet(out / f"part-{block:05d}.parquet", index=False)
    return out


def env() -> dict:
    """This checkout first on the path, in the CLI and in every Dask process it starts."""
    return dict(os.environ, PYTHONPATH=str(REPO))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "survey_engine.cli", *map(str, args)]


def import_args(sizes: Sizes, sky: Path, out: Path) -> list[str]:
    return [
        "import",
        str(sky),
        "--out",
        str(out),
        "--id",
        "source_id",
        "--max-rows",
        str(sizes.max_rows),
        "--margin",
        str(sizes.margin_arcsec),
        "--workers",
        str(sizes.workers),
        "--no-progress",
    ]


def crossmatch_args(
    sizes: Sizes, catalog: Path, out: Path, how: str = "nearest", join: str = "left"
) -> list[str]:
    """A self-match within the radius, by default the nearest neighbour with every left row kept
    (left join); ``how`` / ``join`` as the CLI's --how / --join."""
    return [
        "crossmatch",
        str(catalog),
        str(catalog),
        "--radius",
        str(sizes.radius_arcsec),
        "--self",
        "--how",
        how,
        "--join",
        join,
        "--out",
        str(out),
        "--workers",
        str(sizes.workers),
        "--no-progress",
    ]


@dataclass
class Done:
    returncode: int
    seconds: float
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "error:" in line]


def run(args: list[str], timeout: float = 1800) -> Done:
    t0 = time.perf_counter()
    done = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=timeout)
    return Done(done.returncode, time.perf_counter() - t0, done.stdout, done.stderr)


class Running:
    """A command started in its own session (so it and its children can be killed together)."""

    def __init__(self, args: list[str]):
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            args, env=env(), stdout=self.out, stderr=self.err, start_new_session=True
        )

    def wait(self, timeout: float = 1800) -> Done:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        seconds = time.perf_counter() - self.t0
        self.out.seek(0)
        self.err.seek(0)
        return Done(code, seconds, self.out.read(), self.err.read())


def wait_for(ready: Callable[[], bool], running: Running, what: str, timeout: float = 600) -> float:
    """Poll until ``ready()`` while the command still runs; the seconds since it started. A command
    that ended first fails the caller: the fault would not have hit a run (make the input larger)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if running.proc.poll() is not None:
            done = running.wait()
            raise AssertionError(
                f"the run ended (exit {done.returncode}) before {what}; make the input larger\n"
                + done.stderr[-2000:]
            )
        if ready():
            return time.perf_counter() - running.t0
        time.sleep(0.02)
    raise AssertionError(f"no {what} after {timeout} s")


def has_file(folder: Path, pattern: str) -> Callable[[], bool]:
    """True once ``folder`` holds a finished file matching ``pattern`` (temporaries start with a dot)."""

    def ready() -> bool:
        return folder.exists() and any(not p.name.startswith(".") for p in folder.rglob(pattern))

    return ready


def local_worker_pids(pid: int) -> list[int]:
    """The Dask worker processes of a command's LocalCluster (spawned children of its nannies)."""
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return sorted(found)


def kill_local_workers(running: Running, count: int = 1, timeout: float = 60) -> list[int]:
    """SIGKILL ``count`` worker processes of the command's LocalCluster at once; their pids."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = local_worker_pids(running.proc.pid)
        if len(pids) >= count:
            for pid in pids[:count]:
                os.kill(pid, signal.SIGKILL)
            return pids[:count]
        time.sleep(0.05)
    raise AssertionError(f"found fewer than {count} Dask worker processes to kill")


def pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskProcesses:
    """A real `dask scheduler` and `dask worker`s (one thread each) on loopback."""

    def __init__(self, workers: int = 2):
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:  # the port answers: the scheduler is up
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        self.workers = [
            subprocess.Popen(
                [DASK, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(workers)
        ]

    def kill_scheduler(self) -> None:
        os.kill(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait()

    def stop(self) -> None:
        """Kill every process (and its children), the workers of a lost scheduler included."""
        for proc in [self.scheduler, *self.workers]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in [self.scheduler, *self.workers]:
            proc.wait(timeout=60)


@contextmanager
def dask_processes(workers: int = 2) -> Iterator[DaskProcesses]:
    cluster = DaskProcesses(workers)
    try:
        yield cluster
    finally:
        cluster.stop()


def job_spec(
    path: Path,
    sizes: Sizes,
    sky: Path | None = None,
    catalog: Path | None = None,
    how: str = "nearest",
    join: str = "left",
) -> Path:
    """A job that imports ``sky`` (stage ``cat``), or cross-matches ``catalog`` with itself (stage
    ``pairs``), with the same options as ``import_args`` / ``crossmatch_args``."""
    if sky is not None:
        text = f"""\
name: faults
sources:
  sky:
    files: {{paths: ["{sky}"], id: source_id}}
stages:
  - id: cat
    import: {{source: sky, id: source_id, max_rows: {sizes.max_rows}, margin: {sizes.margin_arcsec}}}
"""
    else:
        text = f"""\
name: faults
sources:
  cat:
    catalog: {{path: "{catalog}"}}
stages:
  - id: pairs
    crossmatch: {{left: cat, right: cat, radius: {sizes.radius_arcsec}, self: true, how: {how}, join: {join}}}
"""
    path.write_text(text)
    return path


def scheduler_running(address: str, prefix: str) -> Callable[[], bool]:
    """True once the scheduler at ``address`` has a task whose key starts with ``prefix`` processing
    on a worker (for a run that writes no file until its tasks are all done)."""
    from distributed import Client

    client = Client(address, timeout=30)

    def ready() -> bool:
        return any(str(k).startswith(prefix) for keys in client.processing().values() for k in keys)

    ready.client = client  # type: ignore[attr-defined] # closed by the caller before the fault
    return ready


def submit_args(spec: Path, address: str, workdir: Path, workers: int = 2) -> list[str]:
    return [
        "submit",
        str(spec),
        "--scheduler",
        address,
        "--workdir",
        str(workdir),
        "--no-progress",
        "--min-workers",
        str(workers),
    ]


@contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (as root, as CI runs the tests): a disk that fills up."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"cannot mount a tmpfs (run as root, as CI does): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def grow_tmpfs(mount: Path, size: str) -> None:
    """Make room: remount the tmpfs larger, keeping what is on it."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True, capture_output=True)


def looks_complete(folder: Path) -> list[str]:
    """What under ``folder`` a reader would take for a finished catalog or collection, outside
    staging folders (``*.partial``, ``.tmp-*``): should be nothing after an interrupted run."""
    found = []
    for name in ("collection.properties", "hats.properties"):
        for path in folder.rglob(name):
            parts = path.relative_to(folder).parts
            if not any(p.endswith(".partial") or p.startswith(".tmp-") for p in parts):
                found.append(str(path))
    return found


def partition_inodes(folder: Path) -> dict[str, int]:
    """Finished partition files under ``folder`` by their path below ``dataset/``, with their inodes:
    a file a re-run kept (renamed along with its folder) keeps its inode, one it rewrote does not."""
    found = {}
    for path in folder.rglob("Npix=*.parquet"):
        if path.name.startswith("."):
            continue
        parts = path.parts
        at = parts.index("dataset")
        found["/".join(parts[at - 1 :])] = path.stat().st_ino
    return found


def digest(path: Path) -> dict:
    """What must be identical between an undisturbed and a disturbed run: the rows (count and an
    order-free checksum of every row), the partition files, the schema, and the margin's rows."""
    from survey_engine import open_catalog

    cat = open_catalog(path)

    def rows(c) -> tuple[int, int]:
        frame = c.compute().reset_index()
        frame = frame[sorted(frame.columns)]
        return len(frame), int(pd.util.hash_pandas_object(frame, index=False).sum())

    n, checksum = rows(cat)
    root = Path(str(cat.path))
    found = {
        "rows": n,
        "checksum": checksum,
        "partitions": sorted(str(Path(p).relative_to(root)) for p in cat.partition_files()),
        "schema": str(cat.schema) if hasattr(cat, "schema") else None,
    }
    if cat.margin is not None:
        found["margin_rows"], found["margin_checksum"] = rows(cat.margin)
    return found
