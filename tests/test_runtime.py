"""Run-time plumbing: the huge-page hint is off only inside plain_pages(), and a user's setting wins;
ColumnSlots assembles pieces arriving in any order into one frame."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from survey_engine.runtime import plain_pages


def test_plain_pages_turns_the_hint_off_for_the_block_only(monkeypatch):
    from numpy._core.multiarray import _set_madvise_hugepage

    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    before = _set_madvise_hugepage(True)
    try:
        with plain_pages():
            assert _set_madvise_hugepage(False) is False  # off inside
            assert np.concatenate([np.ones(600_000), np.zeros(600_000)]).sum() == 600_000
        assert _set_madvise_hugepage(True) is True  # back on after
        with pytest.raises(RuntimeError):
            with plain_pages():
                raise RuntimeError("a failing gather")
        assert _set_madvise_hugepage(True) is True  # restored on errors too
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
        with plain_pages():
            assert _set_madvise_hugepage(True) is True  # the user's choice is left alone
    finally:
        _set_madvise_hugepage(before)


def test_column_slots_give_the_pieces_in_order_whatever_the_arrival_order():
    from survey_engine.runtime import ColumnSlots

    def piece(start, n):
        return pd.DataFrame(
            {
                "id": np.arange(start, start + n, dtype=np.int64),
                "sep": np.arange(start, start + n) / 10.0,
                "ok": np.arange(n) % 2 == 0,
            },
            index=pd.Index(np.arange(start, start + n, dtype=np.int64) * 3, name="_healpix_29"),
        )

    pieces = [piece(0, 4), piece(4, 0), piece(4, 9), piece(13, 1), piece(14, 6)]
    capacities = [4, 3, 12, 5, 6]  # gaps of 0, 3, 3, 4 and 0 rows to close
    meta = pieces[0].iloc[:0]
    assert ColumnSlots.usable(meta)
    slots = ColumnSlots(meta, capacities)
    for position in (3, 0, 4, 2, 1):
        slots.put(position, pieces[position])
    pd.testing.assert_frame_equal(slots.frame(), pd.concat(pieces))
    with pytest.raises(RuntimeError, match="piece 1 has 4 rows, more than the 3 bound"):
        ColumnSlots(meta, capacities).put(1, piece(0, 4))
    assert not ColumnSlots.usable(pieces[0].assign(name="x"))  # object columns: references, not bytes
    assert not ColumnSlots.usable(pieces[0].astype({"id": "Int64"}))

    # a task may write its rows into its slot itself and hand over only their count
    slots = ColumnSlots(meta, capacities)
    for position in (4, 0, 3):
        slots.put(position, pieces[position])
    columns, index = slots.target(2).arrays(9)
    for c in columns:
        columns[c][:] = pieces[2][c].to_numpy()
    index[:] = pieces[2].index.to_numpy()
    slots.put(2, 9)
    slots.put(1, 0)
    pd.testing.assert_frame_equal(slots.frame(), pd.concat(pieces))
    with pytest.raises(RuntimeError, match="piece 1 has 4 rows, more than the 3 bound"):
        slots.target(1).arrays(4)
    with pytest.raises(RuntimeError, match="piece 1 has 4 rows, more than the 3 bound"):
        slots.written(1, 4)


def test_an_error_inside_the_block_on_the_current_client_passes_through(client):
    """A ValueError raised in the block (e.g. an InputError) reaches the caller unchanged; it used
    to be taken for "no current client" and end as "generator didn't stop after throw()"."""
    import pytest

    from survey_engine.ingest.readers import InputError
    from survey_engine.runtime import dask_client

    with pytest.raises(InputError, match="bad.csv: broken"):
        with dask_client() as current:
            assert current is client
            raise InputError("bad.csv: broken")


def test_filtered_stderr_drops_native_noise_of_child_processes_and_keeps_the_rest(tmp_path):
    """XGBoost's collective writes "Task [...] got rank N" to descriptor 2 of each worker process;
    processes started inside the block inherit the filter. Everything else passes, in order,
    including a progress bar's carriage-return updates."""
    import subprocess
    import sys

    script = tmp_path / "child.py"
    script.write_text(
        "import os, sys, subprocess, time\n"
        "from survey_engine.runtime import NATIVE_NOISE, filtered_stderr\n"
        "with filtered_stderr(NATIVE_NOISE):\n"
        "    os.write(2, b'before\\n')\n"
        "    os.write(2, b'[12:27:48] Task [xgboost.dask-1]:tcp://127.0.0.1:38445 got rank 1')\n"
        "    os.write(2, b'[12:27:48] Task [xgboost.dask-0]:tcp://127.0.0.1:34151 got rank 0')\n"
        "    os.write(2, b'\\n'); os.write(2, b'\\n')\n"
        "    subprocess.run([sys.executable, '-c', \"import os; os.write(2, b'[09:00:00] Task [xgboost.dask-3]:tcp://10.0.0.1:1 got rank 3\\\\nworker line\\\\n')\"])\n"
        "    sys.stderr.write('\\rbar 1'); sys.stderr.flush(); time.sleep(0.3); sys.stderr.write('\\rbar 2\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=120)
    assert run.returncode == 0
    assert run.stderr == b"before\nworker line\n\rbar 1\rbar 2\nafter\n"


def test_shared_value_goes_to_the_workers_once_and_tasks_carry_only_its_key(client):
    import pickle

    from survey_engine.runtime import Shared, shared_value

    big = {"weights": np.arange(3_000_000, dtype=np.float64)}  # 24 MB: more than Dask's 10 MB graph warning
    shared = Shared(client, big)
    assert len(pickle.dumps(shared)) < 200
    assert shared_value(shared) is big  # on the driver: the value itself, no round trip

    def use(handle, i):
        value = shared_value(handle)
        return float(value["weights"][i]), id(value)

    futures = [client.submit(use, shared, i, pure=False) for i in range(6)]
    results = client.gather(futures)
    assert [r[0] for r in results] == [float(i) for i in range(6)]
    assert len({r[1] for r in results}) <= len(
        client.scheduler_info()["workers"]
    )  # read once per worker process
    assert shared_value({"a": 1}) == {"a": 1}


def test_run_in_threads_keeps_call_order_feeds_the_sink_and_stops_at_the_first_failure():
    import threading
    import time

    from survey_engine.runtime import run_in_threads

    def slow_square(x, delay):
        time.sleep(delay)
        return x * x, threading.current_thread().name

    calls = [(i, 0.05 * (5 - i)) for i in range(5)]  # the last calls finish first
    results = run_in_threads(slow_square, calls, 2, "squares", progress=False)
    assert [r for r, _ in results] == [0, 1, 4, 9, 16]
    assert {name.rsplit("_", 1)[0] for _, name in results} == {"se-squares"}  # the pool's threads
    arrived: list = []
    sink = lambda i, r: arrived.append((i, r[0], threading.current_thread().name))  # noqa: E731
    assert run_in_threads(slow_square, calls, 3, "squares", False, sink=sink) == [None] * 5
    # handed over as they came, by the thread that made each
    assert sorted(i for i, _, _ in arrived) == [0, 1, 2, 3, 4] and [i for i, _, _ in arrived] != [
        0,
        1,
        2,
        3,
        4,
    ]
    assert all(square == i * i and name.startswith("se-squares") for i, square, name in arrived)

    started: list = []

    def fail_on_two(x):
        started.append(x)
        if x == 2:
            raise KeyError("task 2")
        time.sleep(0.2)
        return x

    with pytest.raises(KeyError, match="task 2"):
        run_in_threads(fail_on_two, [(i,) for i in range(40)], 2, "failing", progress=False)
    assert len(started) < 10  # the calls not yet started were cancelled


def test_local_threads_only_for_a_local_cluster_of_this_process(client):
    from distributed import Client

    from survey_engine.runtime import local_threads

    assert local_threads(client) == 2  # the session's LocalCluster: 2 workers x 1 thread
    with Client(client.scheduler.address, set_as_default=False) as by_address:  # a scheduler elsewhere
        assert local_threads(by_address) == 0
    assert local_threads(None) == 0


def test_local_task_times_records_each_threaded_call_only_inside_the_block():
    import time

    from survey_engine.runtime import local_task_times, run_in_threads

    def nap(seconds):
        time.sleep(seconds)
        return seconds

    run_in_threads(nap, [(0.01,)], 1, "before", progress=False)  # no block open: nothing kept
    with local_task_times() as outer:
        with local_task_times() as inner:
            run_in_threads(nap, [(0.05,), (0.1,), (0.15,)], 2, "naps", progress=False)
        run_in_threads(nap, [(0.02,)], 1, "after inner", progress=False)
    run_in_threads(nap, [(0.01,)], 1, "after", progress=False)
    assert len(inner) == 3 and sorted(inner) == pytest.approx([0.05, 0.1, 0.15], abs=0.04)
    assert len(outer) == 4 and sorted(outer)[0] == pytest.approx(0.02, abs=0.02)


def _heartbeat_record():
    import logging

    return logging.LogRecord(
        "distributed.worker",
        logging.ERROR,
        __file__,
        1,
        "Failed to communicate with scheduler during heartbeat.",
        None,
        None,
    )


def _worker_log_rules(dask_worker) -> tuple[list[str], bool]:
    import logging

    log = logging.getLogger("distributed.worker")
    return sorted(type(rule).__name__ for rule in log.filters), bool(log.filter(_heartbeat_record()))


def test_a_heartbeat_failing_while_its_worker_closes_is_not_logged():
    """The CLI's own cluster: a heartbeat in flight while a worker closes fails when the worker's
    connections close under it; distributed logs that with a 30-line traceback, which once ended on
    a user's terminal after a one-line error. While the worker runs, the message is kept."""
    import ast
    import subprocess
    import sys
    import types
    from pathlib import Path

    from distributed.core import Status

    from survey_engine.runtime import _DropHeartbeatWhileClosing

    # in a process of its own: here another test's client may be current, and dask_client would use it
    script = (
        "from survey_engine.runtime import dask_client\n"
        "from tests.test_runtime import _worker_log_rules\n"
        "if __name__ == '__main__':\n"
        "    with dask_client(n_workers=1) as client:\n"
        "        print(list(client.run(_worker_log_rules).values()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [(rules, kept)] = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert "_DropHeartbeatWhileClosing" in rules and kept  # a running worker keeps the message
    for status, kept in [
        (Status.running, True),
        (Status.paused, True),
        (Status.closing, False),
        (Status.closed, False),
        (Status.closing_gracefully, False),
    ]:
        rule = _DropHeartbeatWhileClosing(types.SimpleNamespace(status=status))
        assert rule.filter(_heartbeat_record()) is kept, status
    other = _heartbeat_record()
    other.msg = "Compute Failed"  # not this rule's message: kept whatever the status
    assert _DropHeartbeatWhileClosing(types.SimpleNamespace(status=Status.closed)).filter(other)


def test_closing_a_client_whose_scheduler_is_gone_never_replaces_the_jobs_own_error():
    """distributed's close can raise on a client whose scheduler was killed (its reconnect loop races
    the futures dict: "dictionary changed size during iteration"); raised from the job's ``finally`` it
    replaced the one-line "lost the Dask scheduler" error (exit 2) with a traceback (exit 1)."""
    from distributed import Client, LocalCluster

    from survey_engine.runtime import close_client

    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
        client = Client(cluster)
        real_close, raised = client.close, []

        def close_that_raises(*args, **kwargs):  # once: distributed closes again when the client goes
            real_close(*args, **kwargs)
            if not raised:
                raised.append(True)
                raise RuntimeError("dictionary changed size during iteration")

        client.close = close_that_raises
        with pytest.raises(ConnectionError, match="the job's own error"):
            try:
                raise ConnectionError("the job's own error")
            finally:
                close_client(client)
        assert raised and client.status == "closed"


_ENVIRONMENT_SCRIPT = """
import json, os, subprocess, sys
from {module} import {name} as cluster
if __name__ == "__main__":
    before = dict(os.environ)
    with cluster({arg}) as client:
        inside = sorted(k for k in os.environ if os.environ.get(k) != before.get(k))
        [worker] = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()
    after = dict(os.environ)
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('MALLOC_TRIM_THRESHOLD_'), os.environ.get('PYTHONHASHSEED'))"],
        capture_output=True, text=True,
    ).stdout.strip()
    print(json.dumps({{"inside": inside, "worker": worker, "changed_after": sorted(k for k in {{*before, *after}} if before.get(k) != after.get(k)), "child": child}}))
"""


def run_environment_script(module: str, name: str, arg: str) -> dict:
    """Start and close a LocalCluster through ``module.name`` in a fresh process; what the
    process's environment was inside, after, and in a child started after."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    nanny_sets = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "PYTHONHASHSEED", "__DASK_PARENT_PID")
    env = {k: v for k, v in os.environ.items() if k not in nanny_sets}  # as a user's shell has it
    done = subprocess.run(
        [sys.executable, "-c", _ENVIRONMENT_SCRIPT.format(module=module, name=name, arg=arg)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_local_cluster_leaves_the_environment_of_its_process_as_it_found_it():
    """A Nanny writes the workers' settings (MALLOC_TRIM_THRESHOLD_=65536, OMP_NUM_THREADS=1) into
    the environment of the process that starts it and never takes them back: a process started
    later inherited them (a cross-match there faulted 3x the pages and ran 1.5x slower). The
    workers keep their settings; the driver gets its own environment back."""
    seen = run_environment_script("survey_engine.runtime", "dask_client", "n_workers=1")
    assert "MALLOC_TRIM_THRESHOLD_" in seen["inside"] and "OMP_NUM_THREADS" in seen["inside"]
    assert seen["worker"] == "65536"
    assert seen["changed_after"] == []
    assert seen["child"] == "None None"


def test_environment_kept_puts_back_the_nannys_variables_and_only_them(monkeypatch):
    """A user's own thread setting comes back after a cluster set it to 1; a variable the block
    set for its own reasons, not one a Nanny writes, stays."""
    import os

    from survey_engine.runtime import environment_kept

    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("SURVEY_ENGINE_TEST_OTHER", raising=False)
    with environment_kept():
        os.environ.update(
            {"OMP_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": "65536", "SURVEY_ENGINE_TEST_OTHER": "x"}
        )
    assert os.environ["OMP_NUM_THREADS"] == "4"
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert os.environ.pop("SURVEY_ENGINE_TEST_OTHER") == "x"


def test_heap_allocations_keep_a_worker_s_repeated_arrays_off_fresh_memory_maps():
    """In a process started as distributed starts its workers (MALLOC_TRIM_THRESHOLD_=65536), arrays of
    256 KiB made and freed 200 times fault in ~26,000 fresh pages; inside the block none (the heap is
    reused), and after it the worker's settings are back."""
    script = """
import resource
import numpy as np
from survey_engine.runtime import heap_allocations

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        a = np.ones(1 << 15)
        b = a * 2
        del a, b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = faults()
with heap_allocations():
    faults()
    inside = faults()
print(plain, inside, faults())
"""
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    plain, inside, after = map(int, out.stdout.split())
    assert plain > 20_000 and after > 20_000  # 64 pages x 2 arrays x 200
    assert inside < 1_000
