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
