"""Distributed training is reproducible: xgboost.dask trains on a fixed partition -> worker
placement (``placed``), so the same seed gives the same model on any cluster of the same size."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd

from survey_engine.ml.supervised import _dask_train, placed


def _frame(n_parts: int = 8, rows: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n_parts * rows, 4))
    y = np.abs(x[:, 0] + 0.5 * x[:, 1] ** 2 - x[:, 2] * x[:, 3]) + rng.exponential(0.3, n_parts * rows)
    # partitions that differ from each other (as sky tiles do): sorted by the first feature
    order = np.argsort(x[:, 0])
    return pd.DataFrame({"a": x[order, 0], "b": x[order, 1], "c": x[order, 2], "d": x[order, 3], "_y": y[order]})


def _persisted(client, frame: pd.DataFrame, layout) -> dd.DataFrame:
    """The frame as a Dask dataframe of 8 partitions, partition i computed on worker layout(i)."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    parts = dd.from_pandas(frame, npartitions=8, sort=False).to_delayed()
    futures = [client.compute(p, workers=[workers[layout(i)]], allow_other_workers=False) for i, p in enumerate(parts)]
    return dd.from_delayed(futures, meta=frame.iloc[:0], verify_meta=False)


def test_placed_puts_partition_i_on_worker_i_mod_n(client):
    info = client.scheduler_info(n_workers=-1)["workers"]
    by_name = sorted(info, key=lambda a: (str(info[a].get("name", a)), a))
    frame = _persisted(client, _frame(), lambda i: 0)  # everything on one worker first
    out = placed(client, frame)
    keys = [d.key for d in out.to_delayed()]
    futures = client.compute(out.to_delayed())
    client.gather(futures)
    who = client.who_has(futures)
    assert [next(iter(who[f.key])) for f in futures] == [by_name[i % len(by_name)] for i in range(len(keys))]
    pd.testing.assert_frame_equal(out.compute(), _frame(), check_index_type=False)


def test_xgboost_trains_on_the_fixed_placement(client, monkeypatch):
    """What each xgboost worker trains on is partition i on worker i mod n (name order), whatever
    the layout before, and xgboost's own packing of the parts keeps it. Left to the scheduler,
    partitions 0, 2, 4, ... went to worker "0" on some fresh clusters and to worker "1" on others
    (so this check alone catches a lost placement only on about half of the clusters it runs on);
    the BOSS photo-z then gave sigma_NMAD 0.0189 or 0.0200 for the same seed. With the placement
    fixed, four fresh clusters gave 0.0189 four times."""
    from xgboost import dask as dxgb

    seen = {}

    class Recording(dxgb.DaskDMatrix):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.update({w: sorted(self.partition_order[p.key] for p in parts) for w, parts in self.worker_map.items()})

    monkeypatch.setattr(dxgb, "DaskDMatrix", Recording)
    info = client.scheduler_info(n_workers=-1)["workers"]
    by_name = sorted(info, key=lambda a: (str(info[a].get("name", a)), a))
    params = {"objective": "reg:absoluteerror", "tree_method": "hist", "max_depth": 3, "seed": 7, "nthread": 1, "verbosity": 0}
    for layout in (lambda i: i % 2, lambda i: 1 - i % 2, lambda i: 0):  # wherever the partitions were computed first
        seen.clear()
        _dask_train(client, _persisted(client, _frame(), layout), ["a", "b", "c", "d"], params, 2)
        assert seen == {by_name[0]: [0, 2, 4, 6], by_name[1]: [1, 3, 5, 7]}
