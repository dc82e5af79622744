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


def _sky_block(out: Path, seed: int, block: int, rows: int) -> None:
    from survey_engine.mock.sky import generate_block

    path = out / f"part-{block:05d}.parquet"
    tmp = path.with_name(f".{path.name}.tmp")
    generate_block(seed, block, rows).to_parquet(tmp, index=False)
    tmp.rename(path)


def make_sky(out: Path, sizes: Sizes, block_rows: int = 1_000_000, processes: int = 1) -> Path:
    """The deterministic mock sky of ``sizes.rows`` rows as Parquet files under ``out``: in this
    process, or on ``processes`` processes (each block is drawn from its own seed: the same files)."""
    out.mkdir(parents=True, exist_ok=True)
    blocks = [
        (out, sizes.seed, b, min(block_rows, sizes.rows - start))
        for b, start in enumerate(range(0, sizes.rows, block_rows))
    ]
    if processes <= 1:
        for block in blocks:
            _sky_block(*block)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_sky_block, *zip(*blocks)))
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


def _relative(path: Path, root: Path) -> str:
    """``path`` below ``root``, with the collection's own name (which its catalog folders carry:
    ``NAME/``, ``NAME_10arcsec/``) written as ``*``, so two collections of other names compare."""
    rel = path.relative_to(root).as_posix()
    if rel.startswith((root.name + "/", root.name + "_")):
        rel = "*" + rel[len(root.name) :]
    return rel


def partition_files(path: Path) -> dict[str, Path]:
    """Every finished partition file of a catalog or collection (its margins too), by relative path
    (``_relative``)."""
    return {_relative(p, path): p for p in sorted(path.rglob("Npix=*.parquet")) if not p.name.startswith(".")}


def _file_rows(path: Path) -> tuple[int, int]:
    """One partition file's row count and order-free checksum of its rows (columns by name)."""
    import pyarrow.parquet as pq

    frame = pq.read_table(path).to_pandas()
    frame = frame[sorted(frame.columns)]
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return len(frame), int(hashed.sum(dtype="uint64"))


def _same_bytes(a: Path, b: Path, block: int = 1 << 24) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(block), fb.read(block)
            if x != y:
                return False
            if not x:
                return True


def same_output(ref: Path, out: Path) -> tuple[bool, str]:
    """Whether ``out`` holds the same data as ``ref`` (main and margin catalogs), file by file, without
    loading a whole catalog (``digest`` does, which 5x10^7 rows do not fit): the same partition
    files, each byte-identical or else holding the same rows (an order-free checksum), the same
    schema and the same total of rows in each catalog's hats.properties. The reason when not."""
    import pyarrow.parquet as pq

    from survey_engine.catalog import layout

    want, got = partition_files(ref), partition_files(out)
    if set(want) != set(got):
        return False, f"partition files differ: {sorted(set(want) ^ set(got))[:5]}"
    reordered = 0
    for rel, path in want.items():
        if _same_bytes(path, got[rel]):
            continue
        if pq.read_schema(path) != pq.read_schema(got[rel]) or _file_rows(path) != _file_rows(got[rel]):
            return False, f"{rel}: other rows"
        reordered += 1

    def nrows(root: Path) -> dict[str, str | None]:
        return {
            _relative(p, root): layout.read_properties(p).get("hats_nrows")
            for p in root.rglob(layout.PROPERTIES_FILE)
            if not any(
                part.endswith(".partial") or part.startswith(".") for part in p.relative_to(root).parts
            )
        }

    if nrows(ref) != nrows(out):
        return False, f"hats_nrows differ: {nrows(ref)} against {nrows(out)}"
    return True, f"{len(want)} files identical" + (
        f" ({reordered} with rows in another order)" if reordered else ""
    )


def move_to_disk(mount: Path, folder: Path) -> None:
    """Make room the other way: copy what the tmpfs at ``mount`` holds to ``folder`` (a real disk),
    unmount it and bind ``folder`` at the same path (a re-run sees the same files, with room). For
    outputs too large to hold in RAM (a tmpfs large enough for the whole output would be)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", f"{mount}/.", str(folder)], check=True, capture_output=True)
    subprocess.run(["umount", str(mount)], check=True, capture_output=True)
    subprocess.run(["mount", "--bind", str(folder), str(mount)], check=True, capture_output=True)
