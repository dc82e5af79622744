"""First use of the zones kernel: a cold numba cache is detected and the kernel compiled once,
with a line saying so, before any progress bar starts; a warm cache says nothing."""

import os
import subprocess
import sys

import pytest

PROBE = (
    "from survey_engine.crossmatch.zones import ensure_compiled, kernels_cached\n"
    "print(kernels_cached(), ensure_compiled(), kernels_cached(), ensure_compiled())\n"
    # columns as the match tasks get them (read-only, from Arrow) use the same compiled code
    "import numpy as np, pyarrow as pa\n"
    "from survey_engine.crossmatch import zones\n"
    "ra = pa.array(np.random.default_rng(1).uniform(0, 1, 500)).to_numpy()\n"
    "dec = pa.array(np.random.default_rng(2).uniform(0, 1, 500)).to_numpy()\n"
    "assert not ra.flags.writeable\n"
    "for k in (1, 3, 0):\n"
    "    zones.zones_match(ra, dec, ra.copy(), dec, 20.0, k, np.arange(500))\n"
    "print(*[len(kernel._cache._cache_file._load_index()) for kernel in zones._KERNELS])\n"
)


@pytest.mark.slow
def test_cold_cache_compiles_once_with_a_message_and_a_warm_one_is_silent(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}  # a cache nobody filled yet
    cold = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert cold.returncode == 0, cold.stderr
    lines = cold.stdout.splitlines()
    assert lines[0].split() == ["False", "True", "True", "False"]  # cold, compiled, then cached: once only
    # one specialisation per kernel (_unit_vectors, _zone_order, _build_zones, _zone_half_widths,
    # _prepare, _scan): real calls compile nothing more
    assert lines[1].split() == ["1"] * 6
    assert "compiling the cross-match kernel once (about 10 s" in cold.stderr and "done (" in cold.stderr
    warm = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert warm.returncode == 0, warm.stderr
    assert (
        warm.stdout.splitlines()[0].split() == ["True", "False", "True", "False"]
        and "compiling" not in warm.stderr
    )
