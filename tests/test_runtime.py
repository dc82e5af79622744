"""Run-time plumbing: the huge-page hint is off only inside plain_pages(), and a user's setting wins;
ColumnSlots assembles pieces arriving in any order into one frame."""

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
        return pd.DataFrame({"id": np.arange(start, start + n, dtype=np.int64), "sep": np.arange(start, start + n) / 10.0,
                             "ok": np.arange(n) % 2 == 0}, index=pd.Index(np.arange(start, start + n, dtype=np.int64) * 3, name="_healpix_29"))

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
