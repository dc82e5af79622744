"""One cross-match tool of the benchmark, run in a fresh process of its own.

``python -m survey_engine.bench.xm_peer TOOL SPEC_JSON`` runs the tool ``runs`` times in this
process (``--serve TOOL SPEC_JSON``: one run per request on stdin, so that the benchmark runs the
tools' repeats interleaved, A, B, A, B, and no ratio depends on when a tool happened to run): the first run is cold (the tool's imports, opening both catalogs or reading both input
files, matching, the result in memory; for the Dask tools a fresh LocalCluster started before the
clock, so worker-side imports and JIT compilation count too), the later ones warm (the same
match again on the already opened catalogs / loaded arrays). It saves the pair set as a sorted
(n, 2) int64 array (``pair_array``, built after the clock stops) and prints one JSON line with
each run's seconds and peak memory (this process and its workers).

Each tool in its own process keeps the benchmark driver lean at 50M rows (it never holds the
inputs or any tool's result: only the truth and one tool's pair array, to compare), and makes
"cold" mean what a user sees on a first call.

TOOL: ``survey_engine``, ``lsdb`` (catalogs), ``astropy``, ``ckdtree_global`` (input files).
SPEC_JSON: {"left": catalog dir, "right": catalog dir, "left_file": parquet, "right_file": parquet,
"radius": arcsec, "workers": n, "runs": n, "pairs_out": .npy path}.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time

import numpy as np


def _ours(spec: dict, client):
    from survey_engine.catalog.catalog import open_catalog

    left, right = open_catalog(spec["left"]), open_catalog(spec["right"])

    def run():
        res = left.crossmatch(
            right, spec["radius"], left_columns=["id"], right_columns=["id"], client=client
        ).compute()
        return res.id_1.to_numpy(), res.id_2.to_numpy()

    return run


def _lsdb(spec: dict, client):
    import lsdb

    left = lsdb.open_catalog(spec["left"], columns=["id", "ra", "dec"])
    right = lsdb.open_catalog(spec["right"], columns=["id", "ra", "dec"])

    def run():
        res = left.crossmatch(
            right,
            radius_arcsec=spec["radius"],
            n_neighbors=1,
            suffixes=("_1", "_2"),
            suffix_method="all_columns",
        ).compute()
        return res.id_1.to_numpy(), res.id_2.to_numpy()

    return run


def _read_inputs(spec: dict):
    import pandas as pd

    a = pd.read_parquet(spec["left_file"], columns=["id", "ra", "dec"])
    b = pd.read_parquet(spec["right_file"], columns=["id", "ra", "dec"])
    return a, b


def _astropy(spec: dict, client):
    import astropy.units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    a, b = _read_inputs(spec)

    def run():
        idx, sep, _ = match_coordinates_sky(
            SkyCoord(a.ra.values * u.deg, a.dec.values * u.deg),
            SkyCoord(b.ra.values * u.deg, b.dec.values * u.deg),
        )
        ok = sep.arcsec <= spec["radius"]
        return a.id.to_numpy()[ok], b.id.to_numpy()[idx[ok]]

    return run


def _ckdtree(spec: dict, client):
    from scipy.spatial import cKDTree

    from survey_engine.catalog.healpix import radec_to_xyz

    a, b = _read_inputs(spec)
    chord = 2 * np.sin(np.radians(spec["radius"] / 3600) / 2)

    def run():
        xa = radec_to_xyz(a.ra.to_numpy(), a.dec.to_numpy())
        d, i = cKDTree(radec_to_xyz(b.ra.to_numpy(), b.dec.to_numpy())).query(
            xa, k=1, distance_upper_bound=chord, workers=spec["workers"]
        )
        ok = np.isfinite(d)
        return a.id.to_numpy()[ok], b.id.to_numpy()[i[ok]]

    return run


TOOLS = {
    "survey_engine": (_ours, True),
    "lsdb": (_lsdb, True),
    "astropy": (_astropy, False),
    "ckdtree_global": (_ckdtree, False),
}


class ToolRuns:
    """One tool's runs in this process, taken one at a time: the first is cold, the rest warm."""

    def __init__(self, tool: str, spec: dict):
        self.tool, self.spec = tool, spec
        self.prepare, needs_cluster = TOOLS[tool]
        self.stack = contextlib.ExitStack()
        self.client = self.stack.enter_context(self._cluster(spec["workers"])) if needs_cluster else None
        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.fn = None
        self.ids = None
        self.runs: list[dict] = []
        self.profile: list = []

    @staticmethod
    @contextlib.contextmanager
    def _cluster(workers: int):
        import dask

        from survey_engine.bench.suites.common import local_cluster

        # the driver pauses this process tree while other tools run (``crossmatch.paused``): no
        # heartbeat deadline, or a scheduler resumed after a long pause could drop its own workers
        with dask.config.set({"distributed.scheduler.worker-ttl": None}), local_cluster(workers) as client:
            yield client

    def run_once(self, last: bool) -> dict:
        from survey_engine.bench.measure import PeakMemory
        from survey_engine.bench.suites.common import task_profile

        self.ids = None
        started = time.time()  # wall clock: lets the driver show the runs were interleaved
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            if self.fn is None:
                self.fn = self.prepare(self.spec, self.client)  # cold: imports and opening count
            if self.client is not None and self.tool == "survey_engine" and last:
                with task_profile(self.client, self.profile):
                    self.ids = self.fn()
            else:
                self.ids = self.fn()
            seconds = time.perf_counter() - t0
        run = {
            "seconds": seconds,
            "peak_rss_bytes": mem.peak,
            "peak_rss_process_bytes": mem.peak_process,
            "started": started,
        }
        self.runs.append(run)
        if not last:
            self.ids = None
        return run

    def finish(self) -> dict:
        from survey_engine.bench.suites.common import pair_array

        self.stack.close()
        pairs = pair_array(*self.ids)
        self.ids = None
        np.save(self.spec["pairs_out"], pairs)
        return {
            "runs": self.runs,
            "pairs": int(len(pairs)),
            "profile": self.profile[-1] if self.profile else None,
        }


def run_tool(tool: str, spec: dict) -> dict:
    """All of one tool's runs in a row."""
    runs = ToolRuns(tool, spec)
    for i in range(spec["runs"]):
        runs.run_once(last=i == spec["runs"] - 1)
    return runs.finish()


def serve(tool: str, spec: dict) -> None:
    """Runs on request, so that a driver can interleave tools (A, B, A, B): prints ``{"ready": true}``
    once the process (and its cluster) is up, then answers each stdin line ``run`` / ``last`` with
    that run's JSON line, and ``finish`` with the result of ``run_tool``."""
    runs = ToolRuns(tool, spec)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command in ("run", "last"):
            print(json.dumps(runs.run_once(last=command == "last")), flush=True)
        elif command == "finish":
            print(json.dumps(runs.finish()), flush=True)
            return


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--serve":
        serve(argv[1], json.loads(argv[2]))
        return
    print(json.dumps(run_tool(argv[0], json.loads(argv[1]))))


if __name__ == "__main__":
    main(sys.argv[1:])
