"""Shared run-time plumbing: getting a Dask client and running tasks with a progress bar.

Progress has one mechanism: a tqdm bar on the driver per stage, advanced as tasks finish
(``run_tasks``, ``compute_with_progress``) or as tasks report steps from the workers
(``event_progress`` + ``report_progress``: boosting rounds). The terminal shows nothing else
unless ``set_verbose(True)`` (the CLI's ``--verbose``): no INFO lines from distributed, no
per-worker lines from native libraries, no killed workers at shutdown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from tqdm.auto import tqdm

_VERBOSE = False
# XGBoost's collective prints "[12:27:48] Task [xgboost.dask-0]:tcp://... got rank 0" once per
# worker and training, from C++ straight to file descriptor 2 of the worker process: past Python's
# logging, and before xgboost.dask applies the caller's verbosity. It tells a user nothing.
NATIVE_NOISE = re.compile(rb"\[\d\d:\d\d:\d\d\] Task \[[^\]\n]*\]:\S* got rank \d+")
# How long a worker may take to close before its nanny kills it (distributed's default is 4 s,
# which a loaded machine misses, and then says "Worker process still alive ... killing").
WORKER_CLOSE_TIMEOUT = 60.0


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def set_verbose(verbose: bool) -> None:
    """Show (True) or hide (False, the default) distributed's INFO lines and native libraries'
    per-worker chatter, in this process and in the workers of clusters started after the call."""
    global _VERBOSE
    _VERBOSE = bool(verbose)
    quiet_distributed_logs()


def is_verbose() -> bool:
    return _VERBOSE


def quiet_distributed_logs() -> None:
    """distributed logs its life cycle at INFO by default; keep warnings and errors only, unless verbose."""
    logging.getLogger("distributed").setLevel(logging.INFO if _VERBOSE else logging.WARNING)
    # a hash-partitioned value_counts starts a P2P shuffle, which logs its life cycle as warnings
    logging.getLogger("distributed.shuffle").setLevel(logging.INFO if _VERBOSE else logging.ERROR)


def quiet_local_cluster_logs() -> None:
    """Before starting a LocalCluster in this process: its scheduler's, nannies' and workers' INFO
    lines hidden unless verbose (``quiet_distributed_logs``, and those loggers follow it)."""
    quiet_distributed_logs()
    for name in ("distributed.scheduler", "distributed.nanny", "distributed.core", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.NOTSET)  # follow "distributed" (set above)


@contextmanager
def environment_kept() -> Iterator[None]:
    """The variables a Nanny sets in this process's environment before it spawns a worker put back,
    after the block, as they were before it: ``distributed.nanny.pre-spawn-environ``'s
    (``MALLOC_TRIM_THRESHOLD_=65536``, ``OMP_NUM_THREADS=1``, ...), ``PYTHONHASHSEED`` and
    ``__DASK_PARENT_PID``.

    The Nanny writes them into the environment of the process that starts a LocalCluster and never
    takes them back, so every process started later inherits the workers' settings: a cross-match
    run in such a child faulted 3x the pages (glibc's malloc with a fixed trim threshold returns
    and re-maps every large block) and took 1.5x the time, and an OpenMP library loaded later in
    this process would use one thread. Other variables are left alone."""
    import dask.config
    import distributed  # noqa: F401 - registers distributed's configuration defaults

    spawn = dask.config.get("distributed.nanny.pre-spawn-environ", default=None) or {}
    # what the Nanny adds to them: a fixed hash seed, and its pid (for its children's process titles)
    saved = {key: os.environ.get(key) for key in [*spawn, "PYTHONHASHSEED", "__DASK_PARENT_PID"]}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def dask_client(client=None, n_workers: int | None = None, memory_limit: str | None = "auto") -> Iterator:
    """Use the given client, else the current one, else a LocalCluster (processes) for the block."""
    from distributed import get_client

    if client is None:
        try:
            client = get_client()
        except ValueError:  # no current client (and only that: errors of the block must pass through)
            pass
    if client is not None:
        yield client
        return
    with fresh_local_client(n_workers or default_workers(), memory_limit) as new_client:
        yield new_client


@contextmanager
def fresh_local_client(n_workers: int, memory_limit: str | None = "auto") -> Iterator:
    """A client of a new LocalCluster of ``n_workers`` processes x 1 thread, for the block: quiet
    (no INFO lines, native libraries' noise filtered unless verbose), this process's environment put
    back after the workers' settings were written into it (``environment_kept``), failed tasks'
    tracebacks kept off the workers' logs, the workers closed before the scheduler on exit."""
    from distributed import Client, LocalCluster

    quiet_local_cluster_logs()
    with (
        environment_kept(),
        filtered_stderr(None if _VERBOSE else NATIVE_NOISE) as stderr_filter,  # the workers inherit it
    ):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=":0",
            silence_logs=logging.INFO if _VERBOSE else logging.WARNING,
        )
        if stderr_filter is not None:
            stderr_filter.release()  # this process's own output goes straight to the terminal
        # closing the workers after a failed task is not worth a warning each
        logging.getLogger("distributed.nanny").setLevel(logging.INFO if _VERBOSE else logging.ERROR)
        try:
            new_client = Client(cluster)
            try:
                new_client.register_plugin(quiet_task_failures(), name="survey-engine-quiet-failures")
                yield new_client
            finally:
                close_client(new_client)
        finally:
            close_cluster(cluster)


def close_client(client) -> None:
    """Close a Dask client. An error raised by closing itself (distributed's reconnect loop, racing a
    scheduler that is gone: "RuntimeError: dictionary changed size during iteration") is logged, not
    raised: raised from a ``finally`` it would replace the job's own outcome, the one-line "lost the
    Dask scheduler" error or a finished job's summary, with distributed's traceback."""
    try:
        client.close()
    except Exception as exc:  # noqa: BLE001 - the client is being dropped either way
        logging.getLogger("survey_engine").debug("closing the Dask client: %s: %s", type(exc).__name__, exc)


def close_cluster(cluster, timeout: float = WORKER_CLOSE_TIMEOUT) -> None:
    """Close a LocalCluster in order: its workers first, each given ``timeout`` seconds to finish
    (distributed's own close allows 4 s, then kills the process and says so), then the scheduler."""

    async def close_workers() -> None:
        await asyncio.gather(
            *(w.close(timeout=timeout) for w in list(cluster.workers.values())), return_exceptions=True
        )

    with suppress(Exception):
        cluster.sync(close_workers)
    cluster.close(timeout=timeout)


class StderrFilter:
    """A pipe in place of file descriptor 2 while processes are started (they inherit it), and a
    thread that copies what they write to the real descriptor 2 without what ``noise`` matches.

    For native libraries that write to the descriptor directly (XGBoost's collective in the
    workers, see ``NATIVE_NOISE``): Python-level redirection does not see them. This process
    gets its own descriptor back at once (``release``), so its tracebacks and bars go straight
    to the terminal; the pump runs until the children close the pipe (``close``). Partial lines
    (a progress bar's carriage-return updates) are passed on within a tenth of a second."""

    def __init__(self, noise: re.Pattern):
        sys.stderr.flush()
        self.saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.stop = threading.Event()
        self.pump = threading.Thread(
            target=_pump,
            args=(read_fd, self.saved, noise, self.stop),
            name="survey-engine stderr filter",
            daemon=True,
        )
        self.pump.start()
        self.released = False

    def release(self) -> None:
        """This process writes to its own descriptor 2 again; children started so far stay filtered."""
        if not self.released:
            with suppress(Exception):
                sys.stderr.flush()
            os.dup2(self.saved, 2)
            self.released = True

    def close(self, timeout: float = 2.0) -> None:
        """Stop pumping (after what the children wrote so far); call when they have exited."""
        self.release()
        self.stop.set()
        self.pump.join(timeout=timeout)
        if not self.pump.is_alive():
            os.close(self.saved)


@contextmanager
def filtered_stderr(noise: re.Pattern | None) -> Iterator[StderrFilter | None]:
    """A ``StderrFilter`` for the block (None: no filter, or no usable descriptor 2); the caller
    may ``release()`` this process's own descriptor once the children it meant to filter started."""
    if noise is None:
        yield None
        return
    try:
        filt = StderrFilter(noise)
    except (OSError, ValueError):  # no usable descriptor 2 (an embedding host): leave it as it is
        yield None
        return
    try:
        yield filt
    finally:
        filt.close()


def _pump(read_fd: int, out_fd: int, noise: re.Pattern, stop: threading.Event) -> None:
    """Copy ``read_fd`` to ``out_fd`` without what ``noise`` matches (and the line ends it leaves)."""
    import select

    pending, owed_newlines, last, eof = b"", 0, time.monotonic(), False
    try:
        while True:
            ready = select.select([read_fd], [], [], 0.05)[0]
            data = os.read(read_fd, 65536) if ready else b""
            eof = bool(ready and not data)  # every writer closed the pipe
            if eof:
                stop.set()
            pending += data
            if data:
                last = time.monotonic()
            pending, hits = noise.subn(b"\0", pending)
            # complete lines go out now; a tail without a line end waits for its end (a noise
            # line is written as the message, then its newline), at most 0.1 s
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
            if stop.is_set() or time.monotonic() - last > 0.1:
                cut = len(pending)
            out, pending = pending[:cut], pending[cut:]
            kept = []
            for line in out.splitlines(keepends=True):
                body = line.rstrip(b"\r\n")
                if body and set(body) == {0}:  # a line that was only noise: drop it and the
                    owed_newlines += len(body) - (1 if line != body else 0)  # newlines it owes
                    continue
                if not body and line in (b"\n", b"\r\n") and owed_newlines:
                    owed_newlines -= 1
                    continue
                kept.append(line.replace(b"\0", b""))
            if kept:
                os.write(out_fd, b"".join(kept))
            if eof or (stop.is_set() and not ready):
                break
    except OSError:
        pass
    finally:
        with suppress(OSError):
            os.close(read_fd)


class _DropComputeFailed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Compute Failed" not in str(record.msg)


class _DropHeartbeatWhileClosing(logging.Filter):
    """A heartbeat in flight while its worker closes fails when the worker's own connections close
    under it, and distributed logs that with a 30-line traceback (seen on loaded CI machines after
    a command's error). While the worker runs, the same message still tells of a lost scheduler."""

    def __init__(self, worker) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if "during heartbeat" not in str(record.msg):
            return True
        status = getattr(getattr(self.worker, "status", None), "name", "running")
        return status in ("running", "paused")


def quiet_task_failures():
    """A worker plugin for the CLI's own cluster: a failed task is not logged on the worker (about
    ten lines per task, with its traceback); the driver re-raises the same exception, which the
    CLI prints as one line (a user's error) or with its traceback (a bug). Built on first use, so
    importing this module does not import distributed."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietTaskFailures(WorkerPlugin):
        idempotent = True

        def setup(self, worker) -> None:
            worker_log = logging.getLogger("distributed.worker")
            worker_log.addFilter(_DropComputeFailed())
            worker_log.addFilter(_DropHeartbeatWhileClosing(worker))

    return QuietTaskFailures()


def run_tasks(
    client,
    func,
    calls: Sequence[tuple],
    desc: str,
    progress: bool = True,
    key_prefix: str = "se",
    sink: Callable[[int, object], None] | None = None,
    local: bool = False,
    threads: int | None = None,
) -> list:
    """Submit ``func(*args)`` for each tuple in ``calls``; return results in call order.

    With ``sink``, each result is handed to ``sink(position, result)`` as soon as it arrives and
    not kept (the list then holds None). The first failure cancels the rest and re-raises the
    worker's exception unchanged. With ``local``, on a LocalCluster of this process the calls run
    here on as many threads as it has (``local_threads``, or ``threads`` where the caller has asked
    already), for results this process keeps anyway.
    """
    if not calls:
        return []
    if not local:
        threads = 0
    elif threads is None:
        threads = local_threads(client)
    if threads:
        return run_in_threads(func, calls, threads, desc, progress, sink)
    run_id = uuid.uuid4().hex[
        :10
    ]  # unique per run: a key reused from an earlier (failed) run would return its result
    futures = [
        client.submit(func, *args, pure=False, key=f"{key_prefix}-{desc.replace(' ', '_')}-{run_id}-{i}")
        for i, args in enumerate(calls)
    ]
    return _collect(client, futures, desc, progress, sink)


def local_threads(client) -> int:
    """The worker threads of ``client``'s cluster when that cluster is a ``LocalCluster`` started in
    this process (``--workers N``, no scheduler of its own), else 0 (a scheduler given by address,
    SLURM / PBS jobs: their workers may be elsewhere, and only they may see the data).

    On such a cluster, work whose result comes back to this process anyway is cheaper run here on
    that many threads (``run_tasks(..., local=True)``): nothing is pickled, sent or copied between
    processes. It pays where the work releases the GIL (numba ``nogil`` kernels, pyarrow reads)."""
    try:
        from distributed import LocalCluster
    except ImportError:
        return 0
    if not isinstance(getattr(client, "cluster", None), LocalCluster):
        return 0
    try:
        return int(sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - a scheduler that cannot answer: take the cluster's path
        return 0


_LOCAL_TIMES: list[list[float]] = []  # one list per open ``local_task_times`` block


@contextmanager
def local_task_times() -> Iterator[list[float]]:
    """The seconds each call ``run_in_threads`` makes takes while the block runs: the twin, for work
    run here on threads, of Dask's task stream (which sees only what workers run). The benchmarks'
    cost model reads per-task times from both."""
    times: list[float] = []
    _LOCAL_TIMES.append(times)
    try:
        yield times
    finally:
        _LOCAL_TIMES[:] = [t for t in _LOCAL_TIMES if t is not times]  # by identity: equal lists differ


def _timed(func):
    """``func`` that appends its own duration to every open ``local_task_times`` list."""
    if not _LOCAL_TIMES:
        return func
    listeners = list(_LOCAL_TIMES)

    def timed(*args):
        start = time.perf_counter()
        try:
            return func(*args)
        finally:
            elapsed = time.perf_counter() - start
            for times in listeners:
                times.append(elapsed)  # list.append is atomic under the GIL

    return timed


def run_in_threads(
    func,
    calls: Sequence[tuple],
    threads: int,
    desc: str,
    progress: bool = True,
    sink: Callable[[int, object], None] | None = None,
) -> list:
    """``run_tasks`` on a pool of ``threads`` threads in this process: results in call order (or
    each handed to ``sink`` by the thread that made it, as soon as it is made: ``sink`` must take
    different positions at once, as ``ColumnSlots.put`` does, so the copies run side by side);
    the first failure cancels the calls not yet started, waits for the running ones and re-raises."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    if not calls:
        return []
    results: list = [None] * len(calls)
    func = _timed(func)

    def sunk(position: int, args: tuple) -> None:
        sink(position, func(*args))

    bar = tqdm(total=len(calls), desc=desc, disable=not progress, leave=False, unit="task")
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix=f"se-{desc.replace(' ', '_')}")
    try:
        if sink is None:
            pending = {pool.submit(func, *args): i for i, args in enumerate(calls)}
        else:
            pending = {pool.submit(sunk, i, args): i for i, args in enumerate(calls)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=pending.__getitem__):
                results[pending.pop(fut)] = fut.result()  # raises the task's own exception
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return results


def compute_with_progress(client, collections: Sequence, desc: str, progress: bool = True) -> list:
    """Compute Dask collections (e.g. ``ddf.to_delayed()``) on the cluster with the same bar as
    ``run_tasks``: one step per collection. Results in order."""
    if not collections:
        return []
    return _collect(client, client.compute(list(collections)), desc, progress, None)


def _collect(
    client, futures: list, desc: str, progress: bool, sink: Callable[[int, object], None] | None
) -> list:
    from distributed import as_completed

    position = {f.key: i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    direct = workers_reachable(client)
    bar = tqdm(total=len(futures), desc=desc, disable=not progress, leave=False, unit="task")
    try:
        for fut in as_completed(futures):  # each result fetched as soon as it is ready: transfers
            if fut.status == "error":  # overlap the remaining work
                exc = fut.exception()
                client.cancel(futures)
                raise exc
            result = client.gather(fut, direct=direct)
            if sink is None:
                results[position[fut.key]] = result
            else:
                sink(position[fut.key], result)
            del result
            fut.release()  # and the worker's copy is freed at once (large results: GiBs at 10^7+ rows)
            bar.update(1)
    finally:
        bar.close()
    return results


@contextmanager
def event_progress(
    client, total: int, desc: str, progress: bool = True, unit: str = "step"
) -> Iterator[str | None]:
    """A bar on the driver for work that runs inside tasks (e.g. boosting rounds): yields a topic
    name that those tasks pass to ``report_progress(topic, n)``; None when no bar is shown."""
    if not progress or total <= 0:
        yield None
        return
    topic = f"se-progress-{uuid.uuid4().hex[:10]}"
    bar = tqdm(total=total, desc=desc, leave=False, unit=unit)
    lock = threading.Lock()

    def advance(event) -> None:
        _, steps = event
        with lock:
            if not bar.disable and bar.n < total:
                bar.update(min(int(steps), total - bar.n))

    client.subscribe_topic(topic, advance)
    try:
        yield topic
        with lock:  # done: the last reports may still be on their way
            bar.update(total - bar.n)
    finally:
        with suppress(Exception):
            client.unsubscribe_topic(topic)
        with lock:
            bar.close()


def report_progress(topic: str | None, steps: int) -> None:
    """From a task on a worker: advance the driver's ``event_progress`` bar by ``steps``."""
    if topic is None or steps <= 0:
        return
    from distributed import get_worker

    with suppress(ValueError):  # not on a worker (a local run): nothing listens
        get_worker().log_event(topic, int(steps))


def _same(value):
    return value


def task_value(client, value):
    """A future of ``value`` for many tasks to share, made by a task rather than scattered.

    When the worker holding it dies the scheduler computes it again from the task (the value is
    in the task's spec). A scattered value is lost with its last copy, and Dask's memory manager
    keeps one copy even of a broadcast, so one killed worker failed every task that used it
    ("lost scattered data"). The value goes to the scheduler once (MBs for a fine margin plan),
    so Dask's "Sending large graph" warning is silenced here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return client.submit(_same, value, pure=False)


class Shared:
    """A value sent to every worker once (``client.scatter(..., broadcast=True)``) instead of
    inside each task: tasks carry only its key and read it with ``get()``, once per worker
    process. For large read-only inputs such as fitted boosters (Dask warns about task graphs of
    more than 10 MB: "Sending large graph"). Use it as a context manager: the value stays on the
    cluster (also published under its key, for a worker that lacks a copy) until the block ends."""

    _cache: OrderedDict = OrderedDict()  # per process: key -> value, the most recent few
    _lock = threading.Lock()

    def __init__(self, client, value):
        self._value, self._client = value, client
        [self._future] = client.scatter(
            [value], broadcast=True, hash=False
        )  # a list: a dict would be scattered per key
        self.key = self._future.key
        client.publish_dataset(self._future, name=self.key)

    def __enter__(self) -> "Shared":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Let the cluster forget the value (on the driver; tasks using it must have finished)."""
        if self._future is not None:
            with suppress(Exception):
                self._client.unpublish_dataset(self.key)
            self._future.release()

    def __getstate__(self) -> dict:
        return {"key": self.key}

    def __setstate__(self, state: dict) -> None:
        self.key, self._value, self._future, self._client = state["key"], None, None, None

    def get(self):
        if self._future is not None:  # on the driver
            return self._value
        with Shared._lock:
            if self.key in Shared._cache:
                Shared._cache.move_to_end(self.key)
                return Shared._cache[self.key]
        value = _fetch_shared(self.key)
        with Shared._lock:
            Shared._cache[self.key] = value
            while len(Shared._cache) > 4:
                Shared._cache.popitem(last=False)
        return value


def _fetch_shared(key):
    """The value of a scattered key, from this worker's memory (broadcast put it there), else
    through the cluster (a worker that joined, or restarted, after the scatter)."""
    from distributed import get_client, get_worker

    try:
        return get_worker().data[key]
    except (ValueError, KeyError):
        return get_client().get_dataset(key).result()


def shared_value(value):
    """``value.get()`` for a ``Shared``, else ``value`` itself."""
    return value.get() if isinstance(value, Shared) else value


def workers_reachable(client) -> bool:
    """True when every worker listens on a loopback address (a LocalCluster, or a scheduler and
    workers started on this machine): the driver can then fetch results from the workers
    directly instead of through the scheduler, which at hundreds of MB is about twice as fast.
    Remote workers may sit behind a firewall the scheduler can cross and the driver cannot."""
    from urllib.parse import urlparse

    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except Exception:  # a scheduler that cannot answer: take the safe path through it
        return False
    hosts = {urlparse(addr).hostname for addr in workers}
    return bool(hosts) and all(h in ("127.0.0.1", "localhost", "::1") for h in hosts)


class ColumnSlots:
    """Frames of the same columns copied, as they arrive in any order, into columns allocated once,
    each in a slot of at most ``capacities[i]`` rows; ``frame()`` closes the gaps in place.

    For results whose size is bounded in advance (at most k matches per left row): the driver then
    holds the result once, plus one piece in flight, and asks the system for no other memory -
    against the result twice over (every piece, then their concatenation). ``usable(meta)`` says
    whether a frame's columns allow it: numeric, boolean and datetime numpy columns and index
    (object and extension columns hold references, which a byte move would duplicate).
    """

    def __init__(self, meta, capacities: Sequence[int]):
        import numpy as np

        self.meta = meta
        self.starts = np.concatenate([[0], np.cumsum(np.asarray(capacities, dtype=np.int64))])
        total = int(self.starts[-1])
        self.columns = {c: np.empty(total, dtype=t) for c, t in meta.dtypes.items()}
        self.index = np.empty(total, dtype=meta.index.dtype)
        self.lengths = np.zeros(len(capacities), dtype=np.int64)

    @staticmethod
    def usable(meta) -> bool:
        import numpy as np
        import pandas as pd

        def plain(t) -> bool:
            return isinstance(t, np.dtype) and t.kind in "biufcmM"

        return (
            meta.columns.is_unique
            and not isinstance(meta.index, pd.MultiIndex)
            and plain(meta.index.dtype)
            and all(plain(t) for t in meta.dtypes)
        )

    def target(self, position: int) -> "SlotTarget":
        """Where the task at ``position`` may write its rows itself (``SlotTarget.arrays``), instead
        of making a frame that ``put`` copies here: no second copy of the result, no fresh memory."""
        return SlotTarget(self, position)

    def _bounded(self, position: int, n: int) -> int:
        start = int(self.starts[position])
        if n > self.starts[position + 1] - start:
            raise RuntimeError(
                f"piece {position} has {n} rows, more than the {int(self.starts[position + 1]) - start} bound for it"
            )
        return start

    def written(self, position: int, n: int) -> None:
        """Record that the task at ``position`` wrote ``n`` rows into its slot itself (``target``)."""
        self._bounded(position, n)
        self.lengths[position] = n

    def put(self, position: int, piece) -> None:
        """A task's result arriving (``run_tasks``' sink): a frame is copied into its slot; an ``int``
        is the row count of a task that wrote its slot itself (``written``)."""
        if isinstance(piece, int):
            self.written(position, piece)
            return
        start, n = self._bounded(position, len(piece)), len(piece)
        if not piece.columns.equals(self.meta.columns):
            raise RuntimeError(
                f"piece {position} has columns {list(piece.columns)}, expected {list(self.meta.columns)}"
            )
        for c, values in self.columns.items():
            values[start : start + n] = piece[c].to_numpy()
        self.index[start : start + n] = piece.index.to_numpy()
        self.lengths[position] = n

    def frame(self):
        """The pieces in position order, as one frame (views of the columns, no copy)."""
        import ctypes

        import pandas as pd

        arrays = [*self.columns.values(), self.index]
        end = 0
        for start, n in zip(self.starts[:-1].tolist(), self.lengths.tolist()):
            if n and start != end:  # slide the piece down over the gap: memmove allows the overlap
                for a in arrays:
                    ctypes.memmove(
                        a.ctypes.data + end * a.itemsize, a.ctypes.data + start * a.itemsize, n * a.itemsize
                    )
            end += n
        data = {c: values[:end] for c, values in self.columns.items()}
        return pd.DataFrame(
            data,
            index=pd.Index(self.index[:end], name=self.meta.index.name),
            columns=self.meta.columns,
            copy=False,
        )


@dataclass(frozen=True)
class SlotTarget:
    """One slot of a ``ColumnSlots``: its task writes its rows into ``arrays(n)`` and returns ``n``."""

    slots: ColumnSlots
    position: int

    def arrays(self, n: int) -> tuple[dict, object]:
        """Views of the slot's first ``n`` rows: every column by name, then the index."""
        start = self.slots._bounded(self.position, n)
        columns = {c: values[start : start + n] for c, values in self.slots.columns.items()}
        return columns, self.slots.index[start : start + n]


@contextmanager
def plain_pages() -> Iterator[None]:
    """Large allocations in this process without numpy's transparent-huge-page hint, for the block.

    numpy asks the kernel for huge pages on every array of 4 MiB or more. Where transparent huge
    pages are in "madvise" mode with defrag "madvise" (a common Linux default), each such fault
    may stall in direct compaction: concatenating a 350 MB cross-match result on the driver took
    0.1 to 0.8 s here, and a steady 0.17 s without the hint. Used around gathering and
    concatenating results on the driver. A user's own NUMPY_MADVISE_HUGEPAGE setting wins."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # another numpy layout: leave it as it is
        _set_madvise_hugepage = None
    if _set_madvise_hugepage is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        yield
        return
    previous = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(previous)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
GLIBC_MMAP_THRESHOLD = 128 * 1024  # its default, fixed once MALLOC_TRIM_THRESHOLD_ is set
_HEAP_LOCK = threading.Lock()
_HEAP_USERS = 0


@contextmanager
def heap_allocations(threshold: int = 8 * 1024 * 1024) -> Iterator[None]:
    """Allocations below ``threshold`` bytes from the heap, not fresh memory maps, and up to that
    much freed heap kept for reuse, for the block.

    distributed starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap
    threshold at 128 KiB (it no longer adapts): every array of 128 KiB or more is then a new mapping
    whose pages fault in zeroed, and freed, unmapped at once (and freed heap above 64 KiB is given
    back at once too). Work that makes such arrays per item pays that each time: the light-curve
    period search (finufft's transform, a few 128-512 KiB arrays per curve) took 2-3x the CPU in a
    worker. Only where that variable is set (elsewhere glibc adapts by itself), and only on glibc;
    both settings are back when the last block exits (the kept heap is then given back by the
    next free)."""
    global _HEAP_USERS
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_", str(GLIBC_MMAP_THRESHOLD))
    libc = _glibc() if trim.isdigit() and mmap.isdigit() else None
    if libc is None:
        yield
        return
    with _HEAP_LOCK:
        _HEAP_USERS += 1
        if _HEAP_USERS == 1:
            libc.mallopt(M_MMAP_THRESHOLD, threshold)
            libc.mallopt(M_TRIM_THRESHOLD, threshold)
    try:
        yield
    finally:
        with _HEAP_LOCK:
            _HEAP_USERS -= 1
            if _HEAP_USERS == 0:
                libc.mallopt(M_MMAP_THRESHOLD, int(mmap))
                libc.mallopt(M_TRIM_THRESHOLD, int(trim))


@functools.cache
def _glibc():
    """glibc through ctypes (with ``mallopt``), or None elsewhere (macOS, musl)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        return libc if hasattr(libc, "mallopt") else None
    except (OSError, AttributeError):
        return None


def compute_frame(ddf):
    """Compute a Dask dataframe to pandas, gathering its partitions straight to the driver.

    With a distributed client this skips Dask's final concatenation on one worker (and the
    transfer of one large frame from it): at millions of result rows that is a quarter of the
    time. Without a client it is plain ``ddf.compute()``.
    """
    import pandas as pd

    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        return ddf.compute()
    with plain_pages():
        parts = client.gather(client.compute(ddf.to_delayed()), direct=workers_reachable(client))
        parts = [p for p in parts if len(p)] or parts[:1]
        return pd.concat(parts) if parts else ddf._meta


class PeakMemory:
    """Peak summed RSS of this process and all its children (Dask workers), and the peak of the
    largest single process, sampled in a thread."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self.peak_process, self.baseline, self._stop = (
            interval,
            0,
            0,
            None,
            threading.Event(),
        )

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.peak_process = max(self.peak_process, rss)
            self.peak = max(self.peak, total)
            if self.baseline is None:
                self.baseline = total  # before the measured work starts (e.g. the idle cluster)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


MODEL_LIBRARIES = (
    "survey_engine",
    "scikit-learn",
    "dask",
    "distributed",
    "dask-ml",
    "numpy",
    "pandas",
    "pyarrow",
)


def library_versions(names: Sequence[str] = MODEL_LIBRARIES) -> dict:
    """Installed versions of ``names`` (those present), plus xgboost's module version and whether it
    was built with CUDA (the xgboost and xgboost-cpu wheels install the same module). The one place
    models and benchmarks record what they ran on."""
    import importlib.metadata as md

    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    try:
        import xgboost

        out["xgboost"] = xgboost.__version__
        out["xgboost_cuda"] = bool(xgboost.build_info().get("USE_CUDA"))
    except ImportError:
        pass
    return out


def gpu_available() -> tuple[bool, str]:
    """Whether CuPy can use a CUDA device here, and if not, why (the one GPU probe)."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False, "no CUDA device"
        cupy.arange(1).sum()
    except Exception as exc:  # no cupy, no driver, no device
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


# The longest one XGBoost collective step (an allreduce) may wait for the other workers. When a worker
# dies, the ones left wait for it in their step; XGBoost's own default (30 min) kept a survivor's only
# thread busy that long, so training could not be retried on it. A step waits for the slowest
# worker's share of one round, seconds on any balanced placement; this bounds the wait after a loss.
COLLECTIVE_TIMEOUT_SECONDS = 180


def xgboost_collective(client):
    """XGBoost's collective settings for ``client``: its tracker listens on the address the workers
    already reach the Dask scheduler at (left alone, XGBoost picks the scheduler machine's primary
    address, which workers on other hosts or in other network namespaces may not reach), and a step
    waits at most ``COLLECTIVE_TIMEOUT_SECONDS`` for a worker that may be gone."""
    from urllib.parse import urlparse

    from xgboost.collective import Config

    host = urlparse(str(client.scheduler.address)).hostname
    routable = host if host and host not in ("localhost", "::1") else None
    return Config(tracker_host_ip=routable, timeout=int(COLLECTIVE_TIMEOUT_SECONDS))
