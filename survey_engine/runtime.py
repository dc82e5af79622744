"""Shared run-time plumbing: getting a Dask client and running tasks with a progress bar."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from tqdm.auto import tqdm


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


@contextmanager
def dask_client(client=None, n_workers: int | None = None, memory_limit: str | None = "auto") -> Iterator:
    """Use the given client, else the current one, else a LocalCluster (processes) for the block."""
    from distributed import Client, LocalCluster, get_client

    if client is None:
        try:
            client = get_client()
        except ValueError:  # no current client (and only that: errors of the block must pass through)
            pass
    if client is not None:
        yield client
        return
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # a hash-partitioned value_counts starts a P2P shuffle, which logs its life cycle as warnings
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    cluster = LocalCluster(
        n_workers=n_workers or default_workers(),
        threads_per_worker=1,
        processes=True,
        memory_limit=memory_limit,
        dashboard_address=":0",
        silence_logs=logging.WARNING,
    )
    # closing the workers after a failed task is not worth a warning each
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
    try:
        with Client(cluster) as new_client:
            new_client.register_plugin(quiet_task_failures(), name="survey-engine-quiet-failures")
            yield new_client
    finally:
        cluster.close()


class _DropComputeFailed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Compute Failed" not in str(record.msg)


def quiet_task_failures():
    """A worker plugin for the CLI's own cluster: a failed task is not logged on the worker (about
    ten lines per task, with its traceback); the driver re-raises the same exception, which the
    CLI prints as one line (a user's error) or with its traceback (a bug). Built on first use, so
    importing this module does not import distributed."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietTaskFailures(WorkerPlugin):
        idempotent = True

        def setup(self, worker) -> None:
            logging.getLogger("distributed.worker").addFilter(_DropComputeFailed())

    return QuietTaskFailures()


def run_tasks(client, func, calls: Sequence[tuple], desc: str, progress: bool = True, key_prefix: str = "se",
              sink: Callable[[int, object], None] | None = None) -> list:
    """Submit ``func(*args)`` for each tuple in ``calls``; return results in call order.

    With ``sink``, each result is handed to ``sink(position, result)`` as soon as it arrives and
    not kept (the list then holds None). The first failure cancels the rest and re-raises the
    worker's exception unchanged.
    """
    from distributed import as_completed

    if not calls:
        return []
    run_id = uuid.uuid4().hex[:10]  # unique per run: a key reused from an earlier (failed) run would return its result
    futures = [client.submit(func, *args, pure=False, key=f"{key_prefix}-{desc.replace(' ', '_')}-{run_id}-{i}") for i, args in enumerate(calls)]
    position = {f.key: i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    direct = workers_reachable(client)
    bar = tqdm(total=len(futures), desc=desc, disable=not progress, leave=False, unit="task")
    try:
        for fut in as_completed(futures):  # each result fetched as soon as it is ready: transfers
            if fut.status == "error":      # overlap the remaining work
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
        return meta.columns.is_unique and not isinstance(meta.index, pd.MultiIndex) and plain(meta.index.dtype) \
            and all(plain(t) for t in meta.dtypes)

    def put(self, position: int, piece) -> None:
        start, n = int(self.starts[position]), len(piece)
        if n > self.starts[position + 1] - start:
            raise RuntimeError(f"piece {position} has {n} rows, more than the {int(self.starts[position + 1]) - start} bound for it")
        if not piece.columns.equals(self.meta.columns):
            raise RuntimeError(f"piece {position} has columns {list(piece.columns)}, expected {list(self.meta.columns)}")
        for c, values in self.columns.items():
            values[start:start + n] = piece[c].to_numpy()
        self.index[start:start + n] = piece.index.to_numpy()
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
                    ctypes.memmove(a.ctypes.data + end * a.itemsize, a.ctypes.data + start * a.itemsize, n * a.itemsize)
            end += n
        data = {c: values[:end] for c, values in self.columns.items()}
        return pd.DataFrame(data, index=pd.Index(self.index[:end], name=self.meta.index.name), columns=self.meta.columns, copy=False)


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
