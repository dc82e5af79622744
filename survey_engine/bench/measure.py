"""Measurement discipline: warm-ups, repetitions, medians and spread, peak memory of all processes,
and the machine (cores, memory, CPU, library versions, git commit) a number was taken on."""

from __future__ import annotations

import platform
import statistics
import subprocess
import time
from pathlib import Path

import psutil

# PeakMemory lives in runtime (the job runner measures with it too); the benchmarks import it from here
from survey_engine.runtime import PeakMemory, library_versions  # noqa: F401


def timed(fn, repeats: int, warmup: int = 1) -> dict:
    """Run ``fn`` warmup + repeats times; the median and spread of the timed runs, the peak memory,
    and ``fn``'s last return value (what agreement is checked on)."""
    times, peak, peak_process, value = [], 0, 0, None
    first = None
    for i in range(warmup + repeats):
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            value = fn()
            dt = time.perf_counter() - t0
        if i == 0:
            first = dt
        if i >= warmup:
            times.append(dt)
            peak, peak_process = max(peak, mem.peak), max(peak_process, mem.peak_process)
    return {**run_summary(times, first, warmup, peak, peak_process), "value": value}


def run_summary(times: list[float], first: float, warmup: int, peak: int, peak_process: int) -> dict:
    """The row fields of a measurement: median and spread of the timed runs, the first run (cold),
    the discipline used, and peak memory (all processes / the largest one)."""
    return {
        "seconds": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "first_s": first,
        "repeats": len(times),
        "warmup": warmup,
        "peak_rss_bytes": peak,
        "peak_rss_process_bytes": peak_process,
    }


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = library_versions(
        (
            "survey_engine",
            "dask",
            "distributed",
            "numpy",
            "pandas",
            "pyarrow",
            "scipy",
            "astropy",
            "lsdb",
            "hats",
            "hats-import",
            "xgboost-cpu",
            "xgboost",
            "scikit-learn",
            "pyvo",
        )
    )
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parent,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    gpu = None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        gpu = out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "cores": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": commit,
        "gpu": gpu,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
