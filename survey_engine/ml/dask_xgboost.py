"""XGBoost on the Dask cluster: the device, the booster parameters, a fixed partition -> worker
placement (so a seed reproduces its model), and training watched for workers that leave."""

from __future__ import annotations

import sys

import numpy as np

from survey_engine.ml.options import TrainingError


def choose_device(gpu: bool) -> str:
    """ "cuda" when asked for and usable, else "cpu" (with a message saying why)."""
    if not gpu:
        return "cpu"
    import xgboost

    from survey_engine.runtime import gpu_available

    if not xgboost.build_info().get("USE_CUDA"):
        print(
            "survey-engine: --gpu asked for, but this xgboost build has no CUDA (xgboost-cpu?); "
            "training on the CPU. Install survey_engine[gpu] for the GPU path.",
            file=sys.stderr,
        )
        return "cpu"
    usable, why = gpu_available()
    if not usable:
        print(
            f"survey-engine: --gpu asked for, but no usable GPU ({why}); training on the CPU.",
            file=sys.stderr,
        )
        return "cpu"
    return "cuda"


def xgb_params(base: dict, overrides: dict, device: str, seed: int) -> tuple[dict, int]:
    p = {**base, **overrides}
    rounds = int(p.pop("rounds"))
    p.update({"tree_method": "hist", "device": device, "seed": seed, "nthread": 1, "verbosity": 0})
    return p, rounds


def _by_name(info: dict) -> list[str]:
    """Worker addresses in name order (xgboost ranks its workers so too): the fixed placement's order."""
    return sorted(info, key=lambda addr: (str(info[addr].get("name", addr)), addr))


def workers_by_name(client, timeout: float = 60) -> list[str]:
    """The cluster's workers in name order; while there are none (a nanny bringing back a lost
    one, between two steps of a training), waits ``timeout`` seconds for one, then says so."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    if not info:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise TrainingError(
                f"the Dask cluster has no workers (none joined within {timeout:g} s); start workers, "
                "or run again on a working cluster"
            ) from None
        info = client.scheduler_info(n_workers=-1)["workers"]
    return _by_name(info)


def placed(client, collection):
    """``collection`` computed with partition i on the (i mod n)-th worker in name order.

    xgboost.dask trains each worker on the partitions it holds, and its model depends on that
    split (each worker sketches its own feature quantiles, and absolute-error leaves are per-worker
    medians averaged): left to the scheduler, the same seed gave BOSS sigma_NMAD 0.0189 or 0.0200
    between identical runs on fresh clusters. Fixed placement makes a seed reproduce the model on
    any cluster with the same number of workers (xgboost ranks workers by name too)."""
    import dask.dataframe as dd

    workers = workers_by_name(client)
    futures = [
        client.compute(part, workers=[workers[i % len(workers)]], allow_other_workers=False)
        for i, part in enumerate(collection.to_delayed())
    ]
    return dd.from_delayed(futures, meta=collection._meta, verify_meta=False)


def pinned(client, dmatrix):
    """``dmatrix`` (a ``DaskDMatrix``) with partition i trained on the (i mod n)-th worker in name
    order, wherever its pieces happen to be held.

    xgboost.dask gives each worker the packed partitions it holds once they are built; ``placed``
    computes them there, but the packing tasks that follow can be moved by Dask's work stealing
    or a scheduler's choice, and then one worker trains on a different share of the rows: the same
    seed gave BOSS sigma_NMAD 0.01876 and 0.01900 in two runs on fresh 2-worker clusters (one
    matrix held as partitions [0, 1, 2, 3] and [4]); pinned, 0.01900 in both. A part held
    elsewhere is fetched by the worker that trains on it."""
    from collections import defaultdict

    workers = workers_by_name(client)
    parts = sorted(
        (part for held in dmatrix.worker_map.values() for part in held),
        key=lambda part: dmatrix.partition_order[part.key],
    )
    worker_map = defaultdict(list)
    for i, part in enumerate(parts):
        worker_map[workers[i % len(workers)]].append(part)
    dmatrix.worker_map = worker_map
    return dmatrix


def dask_train(
    client,
    frame,
    features: list[str],
    params: dict,
    rounds: int,
    weight=None,
    topic: str | None = None,
    stop_on=None,
    stopping_rounds: int = 0,
    stop_tolerance: float = 0.0,
):
    """One booster trained by xgboost.dask; its rounds advance the driver's bar ``topic``. With
    ``stop_on`` (rows with the same columns and ``_y``), training stops once the loss on them has
    not improved for ``stopping_rounds`` rounds, and the booster is cut back to its best round, or
    with ``stop_tolerance`` to the first round whose loss is within that share of the best
    (``fewest_rounds``)."""
    import xgboost
    from xgboost import dask as dxgb

    from survey_engine.ml import tracker
    from survey_engine.ml.progress import RoundProgress
    from survey_engine.runtime import xgboost_collective

    tracker.install()  # XGBoost's tracker in a child of the scheduler: its abort is not the command's

    since = tracker.started_trackers(client)

    def run():
        try:
            return train_booster()
        except Exception as exc:
            # the tracker itself lost (it aborts when a peer vanishes as the ring forms): a lost peer,
            # retried like a lost worker, not an XGBoost error for the user to decipher
            codes = tracker.stop_trackers(client, since, 0.0) if is_collective_failure(exc) else []
            if codes:
                raise WorkerLostError(
                    f"XGBoost training: its tracker process ended (exit {codes[0]}) while the workers "
                    "formed their collective; run the same command again to retrain"
                ) from exc
            raise
        finally:
            tracker.stop_trackers(client, since)

    def train_booster():
        X, y = placed(client, frame[features]), placed(client, frame["_y"])
        w = None if weight is None else placed(client, weight)
        callbacks, evals = [RoundProgress(topic)], None
        with xgboost.config_context(verbosity=0):
            dtrain = pinned(client, dxgb.DaskDMatrix(client, X, y, weight=w))
            if stop_on is not None:
                dstop = pinned(
                    client,
                    dxgb.DaskDMatrix(
                        client, placed(client, stop_on[features]), placed(client, stop_on["_y"])
                    ),
                )
                evals = [(dstop, "stop")]
                callbacks.append(
                    xgboost.callback.EarlyStopping(rounds=max(1, stopping_rounds), save_best=True)
                )
            out = dxgb.train(
                client,
                params,
                dtrain,
                num_boost_round=rounds,
                evals=evals,
                callbacks=callbacks,
                verbose_eval=False,
                coll_cfg=xgboost_collective(client),
            )
        if stop_on is not None and stop_tolerance > 0:
            return fewest_rounds(out["booster"], list(out["history"]["stop"].values())[-1], stop_tolerance)
        return out["booster"]

    # a worker lost: its training's tracker goes at once, so that workers still bootstrapping the
    # collective fail now (and can train again) instead of waiting on the tracker for ever
    return watch_workers(
        client, run, "XGBoost training", on_lost=lambda: tracker.stop_trackers(client, since, 0.0)
    )


def fewest_rounds(booster, losses: list[float], tolerance: float):
    """``booster`` cut back to the first round whose stopping loss (``losses``, one per round, lower
    is better, the last metric as early stopping reads it) is within ``tolerance`` (a share) of the
    best. On a flat loss curve the rounds after it buy less than that on rows the booster never
    trained on, and every round is a tree that each predicted row goes through. (XGBoost's own
    ``EarlyStopping(min_delta=...)`` is not this: its delta is absolute and judged round by round,
    so a slow steady gain still moves its best round to the end.)"""
    loss = np.asarray(losses, dtype=np.float64)
    if not len(loss) or not np.isfinite(loss).any():
        return booster
    best = np.nanmin(loss)
    first = int(np.flatnonzero(loss <= best + tolerance * abs(best))[0])
    return booster[: first + 1] if first + 1 < booster.num_boosted_rounds() else booster


class WorkerLostError(TrainingError, RuntimeError):
    """A worker left the cluster while a collective step (XGBoost training) needed it. ``training``
    is the driver thread of that training, which ends once the workers left give up their step."""

    training = None


def watch_workers(client, run, what: str, poll_seconds: float = 1.0, on_lost=None):
    """``run()`` on a driver thread, while this one watches the cluster's workers.

    XGBoost trains with a collective ring over the workers it started on: when one of them dies
    the others wait in allreduce for it forever (or fail with "Ring allreduce failed"), and
    partitions placed on it can never be recomputed elsewhere. So a worker that leaves ends ``run``
    within ``poll_seconds`` with a clear ``WorkerLostError`` naming it, instead of hanging;
    ``supervised.train`` then trains once more from the start on the workers present
    (``settle_lost_training``). ``on_lost()`` is called first, when a worker has left."""
    import threading
    import time

    def workers() -> set[str]:
        # a fresh answer from the scheduler: scheduler_info() hands back the client's shared copy,
        # which a concurrent call (with another n_workers) may have just rewritten
        return set(client.nthreads())

    start = workers()
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = run()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"survey_engine {what}", daemon=True)
    thread.start()

    seen = set(start)

    def gone() -> set[str]:
        # every worker seen during the run, not only at its start: a worker that joined after the
        # start (a nanny's replacement of one lost before) can be in XGBoost's ring too
        try:
            present = workers()
        except Exception:  # the scheduler itself is gone: the run's own error says so
            return set()
        seen.update(present)
        return seen - present

    lost: set[str] = set()
    while thread.is_alive() and not lost:
        thread.join(poll_seconds)
        lost = gone() if thread.is_alive() else set()
        if lost:  # seen twice, a second apart: a worker that really left, not a passing glitch
            thread.join(poll_seconds)
            lost = gone() & lost if thread.is_alive() else set()
    if not lost and "error" in outcome:  # failed fast ("Ring allreduce failed") rather than hanging:
        settle = time.monotonic() + 10 * poll_seconds  # give the scheduler time to see a worker leave
        while not (lost := gone()) and time.monotonic() < settle and is_collective_failure(outcome["error"]):
            time.sleep(poll_seconds / 4)
    if lost:
        if on_lost is not None:
            on_lost()
        names = ", ".join(sorted(lost))
        error = WorkerLostError(
            f"{what}: worker(s) {names} left the cluster during training ({len(seen) - len(lost)} of {len(seen)} remain); "
            "XGBoost's collective step cannot finish without them: run the same command again to retrain on the workers present"
        )
        error.training = thread
        raise error from outcome.get("error")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def is_collective_failure(error: BaseException) -> bool:
    """An XGBoost error from its collective (a peer gone: "Ring allreduce failed", "Failed to bootstrap
    the communication group"), which a worker's departure explains once the scheduler sees it."""
    text = str(error)
    return type(error).__name__ == "XGBoostError" and any(
        word in text for word in ("collective", "Ring all", "bootstrap", "socket", "Connection reset")
    )


def settle_lost_training(
    client, lost: str, training, held_before: set, wait_seconds: float | None = None
) -> list[str]:
    """Make the cluster ready to train again after a ``WorkerLostError`` (message ``lost``, driver
    thread ``training``; call it outside the ``except`` so the failed attempt's frames can go): wait
    for that thread to end (the workers left give up their collective step within
    ``runtime.COLLECTIVE_TIMEOUT_SECONDS``, and a lost worker's tracker is stopped at once, which
    frees their threads and xgboost's per-worker locks), then release on the scheduler every key the
    client took since ``held_before`` (a set of keys): the failed attempt's data, pinned to its
    workers, on the survivors' memory or waiting for ever for the lost one. (The retry's tasks are
    named apart, ``prepare_table(attempt=1)``, so nothing of the failed attempt is waited on.)

    A training still not ended after that wait is unblocked: workers still running its tasks are
    restarted by their nannies (seen: a survivor left in the collective's bootstrap, in C++, for a peer
    that died as the ring formed; no XGBoost timeout covers it, and a thread cannot be interrupted, a
    process can), and its keys are released at once (a task of it rescheduled after the restart waits
    for ever for data pinned to a worker that is gone; released, the driver's wait ends with a
    cancellation). The addresses restarted are returned. Raises ``WorkerLostError`` if the thread does
    not end even so, or if no worker is left. Each wait is ``wait_seconds``, by default a minute longer
    than a collective step may take."""
    from survey_engine import runtime

    bound = runtime.COLLECTIVE_TIMEOUT_SECONDS + 60 if wait_seconds is None else wait_seconds
    restarted: list[str] = []
    if training is not None:
        training.join(bound)
        if training.is_alive():
            restarted = restart_blocked_workers(client, set(client.futures) - held_before)
            release_since(client, held_before, wake_waiters=True)
            training.join(bound)
        if training.is_alive():
            raise WorkerLostError(
                f"{lost} (the workers left stayed blocked in XGBoost's collective step for more than "
                f"{bound} s, so training was not retried)"
            )
    release_since(client, held_before)
    try:
        client.wait_for_workers(1, timeout=60)
    except TimeoutError:
        raise WorkerLostError(f"{lost} (no worker left to retry on)") from None
    return restarted


def release_since(client, held_before: set, wake_waiters: bool = False) -> None:
    """Release on the scheduler every key ``client`` took since ``held_before`` (a set of keys). With
    ``wake_waiters``, their futures are also cancelled on the client, so that a thread waiting on one
    (a driver's gather) ends: the scheduler does not tell a client about keys it released itself."""
    stale = list(set(client.futures) - held_before)
    if not stale:
        return
    # not client.cancel(force=True): distributed's forced cancel trips ``assert ts.who_wants`` on
    # dependents no client holds, which can drop the client's connection and every future with it
    client.run_on_scheduler(release_keys, stale, client.id)
    if wake_waiters:
        client.sync(_cancel_on_client, client, stale)


async def _cancel_on_client(client, keys: list) -> None:
    # on the client's event loop, as distributed's own Client._cancel does
    for key in keys:
        state = client.futures.pop(key, None)
        if state is not None:
            state.cancel(reason="survey_engine: a training left blocked after a worker was lost")


def restart_blocked_workers(client, keys: set) -> list[str]:
    """Restart (through their nannies) the workers still running any of ``keys``, a failed
    training's tasks. Returns the addresses restarted; none when no worker runs them, or when they
    cannot be restarted (no nanny)."""
    busy = sorted(w for w, running in client.processing().items() if keys.intersection(running))
    if not busy:
        return []
    try:
        client.restart_workers(busy, timeout=120)
    except Exception:  # noqa: BLE001 - workers without a nanny: the caller's error says they stayed blocked
        return []
    return busy


def release_keys(keys: list, client_id: str, dask_scheduler=None) -> None:
    """Run on the scheduler: ``client_id`` no longer wants ``keys`` (those no one else wants go)."""
    import time

    dask_scheduler.client_releases_keys(
        keys=[k for k in keys if k in dask_scheduler.tasks],
        client=client_id,
        stimulus_id=f"survey-engine-retry-{time.time()}",
    )
