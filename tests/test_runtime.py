"""Run-time plumbing: the huge-page hint is off only inside plain_pages(), and a user's setting wins."""

import numpy as np
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
