"""First use of the zones kernel: a cold numba cache is detected and the kernel compiled once,
with a line saying so, before any progress bar starts; a warm cache says nothing."""

import os
import subprocess
import sys

import pytest

PROBE = ("from survey_engine.crossmatch.zones import ensure_compiled, kernels_cached\n"
         "print(kernels_cached(), ensure_compiled(), kernels_cached(), ensure_compiled())\n")


@pytest.mark.slow
def test_cold_cache_compiles_once_with_a_message_and_a_warm_one_is_silent(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}  # a cache nobody filled yet
    cold = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout.split() == ["False", "True", "True", "False"]  # cold, compiled, then cached: once only
    assert "compiling the cross-match kernel once (about 10 s" in cold.stderr and "done (" in cold.stderr
    warm = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.split() == ["True", "False", "True", "False"] and "compiling" not in warm.stderr
