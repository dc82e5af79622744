"""Fixtures shared by the cross-match tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def threads():
    """A cluster of threads in this process, so that a reader or writer patched by a test is the one
    the tasks call."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        yield c
