"""Benchmark suites: each stage against its peers on the same data and cores, in one run.

One module per suite, each with ``run(sizes, repeats, workers, work, peer_limits=None) -> rows``;
``RUNNERS`` maps a suite's name to it; what they share is in ``common``. Every row states whether
the tools agree (same rows, same pair set, equal metrics within a tolerance), so speed is never
bought with wrong answers. A peer that is not installed or a service that is not reachable gives a
row saying so, never a silent gap.
"""

from __future__ import annotations

from survey_engine.bench.suites import (
    clustering,
    crossmatch,
    e2e,
    features,
    import_,
    margins,
    predict,
    real,
    scaling,
    skew,
    tap,
    train,
)

RUNNERS = {
    "import": import_.run,
    "margins": margins.run,
    "crossmatch": crossmatch.run,
    "features": features.run,
    "train": train.run,
    "predict": predict.run,
    "clustering": clustering.run,
    "real": real.run,
    "tap": tap.run,
    "e2e": e2e.run,
    "scaling": scaling.run,
    "skew": skew.run,
}
SUITES = tuple(RUNNERS)
QUICK_SIZES = {
    "import": [100_000],
    "margins": [100_000],
    "crossmatch": [100_000],
    "features": [100_000],
    "train": [100_000],
    "predict": [100_000],
    "clustering": [100_000],
    "real": [None],
    "tap": [None],
    "e2e": [100_000],
    "scaling": [200_000],
    "skew": [204_800],  # 2,048 partitions of ~100 rows
}
# --quick trains its models (predict, e2e) with each booster's rounds capped at this (as --rounds does)
QUICK_MODEL_ROUNDS = 100
# The full run: 10^5 .. 10^8 rows where a stage can take them on this 24 GiB, 2-core machine.
FULL_SIZES = {
    "import": [100_000, 1_000_000, 10_000_000, 100_000_000],
    "margins": [1_000_000, 10_000_000],
    "crossmatch": [100_000, 1_000_000, 5_000_000],
    "features": [1_000_000, 10_000_000],
    "train": [1_000_000, 10_000_000, 50_000_000],
    "predict": [1_000_000, 10_000_000],
    "clustering": [100_000, 1_000_000],
    "real": [None],
    "tap": [None],
    "e2e": [1_000_000],
    "scaling": [5_000_000],
    "skew": [9_830_400],  # 98,304 partitions of ~100 rows
}
