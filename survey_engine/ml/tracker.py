"""XGBoost's collective tracker in a process of its own, on the scheduler's machine.

xgboost.dask starts its tracker (C++) inside the Dask scheduler's process. A worker lost while the
collective bootstraps can make that tracker throw where nothing catches it, and the C++ runtime then
aborts the whole process ("terminate called after throwing an instance of 'dmlc::Error'"): with a
LocalCluster the scheduler is the command itself, so the command died with exit 134 instead of
retrying. Here the tracker runs in a child process of the scheduler: if it aborts, the workers see
a tracker gone (an XGBoost collective error), which ``watch_workers`` turns into the retry or the
one-line error like any other lost peer. ``install()`` puts this in place of xgboost.dask's
``_get_rabit_args``; ``stop_trackers`` ends the trackers a training started once it is over."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import uuid

from distributed.diagnostics.plugin import SchedulerPlugin

# the child: one RabitTracker, its worker arguments as one JSON line, then wait until the workers
# close the group; it leaves when the scheduler that started it does (never an orphan)
TRACKER_PROGRAM = """
import json, os, sys, threading, time
from xgboost.tracker import RabitTracker
host, n_workers, port, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
parent = os.getppid()
def leave_with_parent():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=leave_with_parent, daemon=True).start()
tracker = RabitTracker(n_workers=n_workers, host_ip=host, port=port, sortby="task", timeout=timeout)
tracker.start()
print(json.dumps(tracker.worker_args()), flush=True)
tracker.wait_for()
"""

# scheduler side: the tracker processes by token (module state of the scheduler's process)
_RUNNING: dict[str, asyncio.subprocess.Process] = {}
# client side: the tokens each client's trainings started, so the driver can stop them afterwards
_STARTED: dict[str, list[str]] = {}
_STARTED_LOCK = threading.Lock()


PLUGIN_NAME = "survey_engine-xgboost-trackers"


class StopTrackersOnClose(SchedulerPlugin):
    """Scheduler plugin: the trackers this scheduler started and nobody stopped (a training's driver
    thread that outlived its cluster, a client that vanished) are killed when the scheduler closes,
    so a notebook or test process that runs many clusters keeps no tracker child behind."""

    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.tokens: set[str] = set()

    async def close(self) -> None:
        await stop_tracker_processes(sorted(self.tokens), grace_seconds=0.0)
        self.tokens.clear()


def _closing_plugin(scheduler) -> StopTrackersOnClose:
    plugin = scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None:
        plugin = StopTrackersOnClose()
        scheduler.add_plugin(plugin, name=PLUGIN_NAME)
    plugin.tokens &= set(_RUNNING)  # those stopped since are no longer its to stop
    return plugin


async def start_tracker_process(
    token: str, host: str, n_workers: int, port: int, timeout: int, dask_scheduler=None
) -> dict:
    """Run on the scheduler: start the tracker child and return its worker arguments."""
    import json

    from xgboost.core import XGBoostError

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TRACKER_PROGRAM,
        host,
        str(n_workers),
        str(port),
        str(timeout),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    line = await proc.stdout.readline()
    if not line:
        err = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
        await proc.wait()
        raise XGBoostError(f"XGBoost's tracker could not start on {host}: {err[-1] if err else 'no output'}")
    _RUNNING[token] = proc
    if dask_scheduler is not None:
        _closing_plugin(dask_scheduler).tokens.add(token)
    # keep reading its error stream, so a chatty tracker can never block on a full pipe
    asyncio.get_running_loop().create_task(proc.stderr.read())
    return json.loads(line)


async def stop_tracker_processes(tokens: list[str], grace_seconds: float = 2.0) -> list[int]:
    """Run on the scheduler: end these trackers (a finished training's tracker leaves by itself
    within ``grace_seconds``; one whose training failed is killed). Returns the exit codes of those
    that had already ended abnormally (an abort is -6): a tracker lost, not one stopped here."""
    ended_badly = []
    for token in tokens:
        proc = _RUNNING.pop(token, None)
        if proc is None:
            continue
        if proc.returncode not in (None, 0):
            ended_badly.append(proc.returncode)
            continue
        try:
            await asyncio.wait_for(proc.wait(), grace_seconds)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it ended just now
                proc.kill()
            await proc.wait()
    return ended_badly


async def get_rabit_args(client, n_workers: int, dconfig=None, coll_cfg=None) -> dict:
    """``xgboost.dask._get_rabit_args`` with the tracker in a child process of the scheduler: the
    address XGBoost would use (the user's ``tracker_host_ip``/port, else the scheduler's host)."""
    import distributed
    from xgboost.collective import Config as CollConfig
    from xgboost.core import XGBoostError
    from xgboost.dask.utils import get_address_from_user

    coll_cfg = CollConfig() if coll_cfg is None else coll_cfg
    user_host, user_port = get_address_from_user(dconfig, coll_cfg)
    sched_host = distributed.comm.get_address_host(client.scheduler.address).strip("/:")
    timeout = 0 if coll_cfg.tracker_timeout is None else int(coll_cfg.tracker_timeout)
    tries = [(user_host, user_port)] if user_host else []
    tries.append((sched_host, 0))
    token = uuid.uuid4().hex
    for i, (host, port) in enumerate(tries):
        try:
            env = await client.run_on_scheduler(start_tracker_process, token, host, n_workers, port, timeout)
            break
        except XGBoostError:
            if i == len(tries) - 1:
                raise
    with _STARTED_LOCK:
        _STARTED.setdefault(client.id, []).append(token)
    return coll_cfg.get_comm_config(env)


def install() -> None:
    """Put ``get_rabit_args`` in place of xgboost.dask's (idempotent; xgboost.dask looks the name
    up at each training)."""
    import xgboost.dask

    xgboost.dask._get_rabit_args = get_rabit_args


def started_trackers(client) -> list[str]:
    with _STARTED_LOCK:
        return list(_STARTED.get(client.id, []))


def stop_trackers(client, since: list[str], grace_seconds: float = 2.0) -> list[int]:
    """End the trackers ``client`` started after ``since`` (a ``started_trackers`` answer), each
    given ``grace_seconds`` to leave by itself first. Returns the exit codes of trackers that had
    ended abnormally by themselves (empty when none did, or when the scheduler is gone)."""
    with _STARTED_LOCK:
        mine = _STARTED.get(client.id, [])
        tokens = [t for t in mine if t not in since]
        _STARTED[client.id] = [t for t in mine if t in since]
    if not tokens:
        return []
    try:
        return client.run_on_scheduler(stop_tracker_processes, tokens, grace_seconds)
    except Exception:  # the scheduler is gone: its trackers left with it
        return []
