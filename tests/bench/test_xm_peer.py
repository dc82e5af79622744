"""The cross-match bench runs the tools' repeats interleaved (A, B, A, B), each tool in its own process."""

from __future__ import annotations

import numpy as np

from survey_engine.bench.suites.crossmatch import interleaved_peers, pair_inputs


def test_tools_runs_are_interleaved(tmp_path):
    a, b = pair_inputs(3000)
    a.to_parquet(tmp_path / "A.parquet")
    b.to_parquet(tmp_path / "B.parquet")

    def spec(tool):
        return {
            "left_file": str(tmp_path / "A.parquet"),
            "right_file": str(tmp_path / "B.parquet"),
            "radius": 1.0,
            "workers": 1,
            "runs": 3,
            "pairs_out": str(tmp_path / f"{tool}.npy"),
        }

    chosen = {
        "ckdtree_global": ("ckdtree_global", spec("ckdtree_global")),
        "astropy": ("astropy", spec("astropy")),
        "missing": ("no_such_tool", spec("missing")),
    }
    results = interleaved_peers(chosen, 3)
    assert isinstance(results["missing"], RuntimeError) and "no_such_tool" in str(results["missing"])
    starts = sorted(
        (run["started"], label) for label in ("ckdtree_global", "astropy") for run in results[label]["runs"]
    )
    assert [label for _, label in starts] == ["ckdtree_global", "astropy"] * 3
    truth, other = np.load(tmp_path / "ckdtree_global.npy"), np.load(tmp_path / "astropy.npy")
    assert len(truth) == results["astropy"]["pairs"] > 2500 and np.array_equal(truth, other)


def test_the_other_tools_processes_are_paused_while_one_runs():
    """``paused`` stops a process and its children (a tool's Dask workers) inside the block: they use
    no CPU there, and run again after it."""
    import subprocess
    import sys
    import time

    import psutil

    from survey_engine.bench.suites.crossmatch import paused

    spin = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'while True: pass'])\nwhile True: pass"
    proc = subprocess.Popen([sys.executable, "-c", spin])
    try:
        root = psutil.Process(proc.pid)
        deadline = time.time() + 30
        while not root.children() and time.time() < deadline:
            time.sleep(0.05)
        tree = [root, *root.children()]
        assert len(tree) == 2

        def cpu() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in tree)

        time.sleep(0.3)
        with paused([proc.pid]):
            time.sleep(0.2)  # the stop has taken effect
            before = cpu()
            time.sleep(0.6)
            assert cpu() - before < 0.05
            assert all(p.status() == psutil.STATUS_STOPPED for p in tree)
        before = cpu()
        time.sleep(0.6)
        assert cpu() - before > 0.3  # both spinning again
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True):
            p.kill()
        proc.kill()
        proc.wait()
