"""Run-time plumbing: the huge-page hint is off only inside plain_pages(), and a user's setting wins;
concat_releasing gives pd.concat's frame while emptying the list of pieces."""

import numpy as np
import pandas as pd
import pytest

from survey_engine.runtime import concat_releasing, plain_pages


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


def _piece(start: int, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(start, start + n, dtype=np.int64),
        "ra": rng.uniform(0, 360, n),
        "mag": rng.uniform(10, 20, n).astype(np.float32),
        "name": np.array([f"s{i}" for i in range(start, start + n)], dtype=object),
        "label": pd.array([("star", "galaxy", None)[i % 3] for i in range(n)], dtype="string"),
        "n_obs": pd.array([None if i % 3 == 0 else i for i in range(n)], dtype="Int64"),
        "flag": rng.uniform(0, 1, n) < 0.5,
    }, index=pd.Index(np.arange(start, start + n, dtype=np.int64) * 7, name="_healpix_29"))


def test_concat_releasing_equals_pd_concat_and_empties_the_list():
    pieces = [_piece(0, 5, 1), _piece(5, 0, 2), _piece(5, 7, 3), _piece(12, 1, 4)]
    expected = pd.concat([p for p in pieces if len(p)])
    given = list(pieces)
    out = concat_releasing(given)
    assert given == []  # the caller's list no longer holds the pieces
    pd.testing.assert_frame_equal(out, expected)
    assert out.index.name == "_healpix_29" and list(out.dtypes) == list(expected.dtypes)


def test_concat_releasing_edge_cases():
    one = _piece(0, 4, 1)
    assert concat_releasing([one]) is one  # a single piece: no copy
    assert concat_releasing([]) is None
    empty = _piece(0, 0, 1)
    assert concat_releasing([empty, empty.copy()]) is empty  # all empty: the first, for its columns
    a, b = _piece(0, 3, 1), _piece(3, 3, 2).astype({"mag": np.float64})  # dtypes differ: pd.concat's promotion
    pd.testing.assert_frame_equal(concat_releasing([a, b]), pd.concat([a, b]))
    c = _piece(6, 2, 3)[["ra", "id", "mag", "name", "label", "n_obs", "flag"]]  # columns in another order
    pd.testing.assert_frame_equal(concat_releasing([a, c]), pd.concat([a, c]))


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
