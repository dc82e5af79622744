"""Predictions written with ``--out`` as plain Parquet files (``ml/apply.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_engine.ml import apply
from tests.conftest import LateTask


def _predictions(rows: int, partitions: int, z: float):
    import dask.dataframe as dd

    return dd.from_pandas(
        pd.DataFrame({"id": np.arange(rows), "z_phot": np.full(rows, z)}), npartitions=partitions
    )


def test_a_late_task_of_a_failed_predict_adds_no_file_to_the_next(tmp_path, threads, monkeypatch):
    """Both runs of one process build in the same ``.OUT.partial-PID``: the failed run's task still
    writing its part must not add it to the next run's files (500 rows of other predictions)."""
    import threading

    import survey_engine.runtime as runtime
    from survey_engine.catalog import owner

    real_write = pd.DataFrame.to_parquet
    late = LateTask(
        real_write,
        lambda args: OSError(28, "No space left on device", str(args[1])),
        hold=lambda args: "part-00001" in str(args[1]),
    )
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda frame, *args, **kw: late(frame, *args, **kw))
    real_publish, refused = owner.publish, threading.Event()

    def publish(tmp, final, claim):
        try:
            return real_publish(tmp, final, claim)
        except owner.AbandonedWriteError:
            refused.set()
            raise

    monkeypatch.setattr(owner, "publish", publish)
    out = tmp_path / "predicted"
    with pytest.raises(OSError, match="No space left"):
        apply._write_files(_predictions(1_000, 2, 1.0), out, threads, progress=False)
    assert not late.ended.is_set()  # still running on its worker thread

    monkeypatch.setattr(pd.DataFrame, "to_parquet", real_write)
    real_compute = runtime.compute_with_progress

    def late_task_writes_first(*args, **kw):
        late.let_go()  # the next run has made its folder and claimed it; none of its parts written
        assert refused.wait(120)  # the held part was written to its temporary, then refused
        return real_compute(*args, **kw)

    monkeypatch.setattr(runtime, "compute_with_progress", late_task_writes_first)
    apply._write_files(_predictions(500, 1, 2.0), out, threads, progress=False)
    written = pd.read_parquet(out)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet"]  # no temporary either
    assert len(written) == 500 and (written["z_phot"] == 2.0).all()
