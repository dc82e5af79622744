"""A quiet, honest terminal: train and predict through the CLI as a user runs them show a
progress bar per stage and none of the noise they used to (XGBoost's per-worker rank lines,
Dask's large-graph warnings, workers killed at shutdown, distributed's INFO lines)."""

import os
import subprocess
import sys

import pytest

from survey_engine.ml.options import QUANTILE_PARAMS

NOISE = (
    "got rank",
    "Sending large graph",
    "still alive",
    "killing",
    "INFO",
    "distributed.",
    "Traceback",
    "WARNING",
)


def _cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
        env=env,
    )


@pytest.mark.slow
def test_train_and_predict_show_progress_and_no_noise(tmp_path):
    # any model shipped inside the task graph would now trip Dask's large-graph warning
    env = {**os.environ, "DASK_DISTRIBUTED__ADMIN__LARGE_GRAPH_WARNING_THRESHOLD": "512kB"}
    assert (
        _cli(
            "mock",
            "--rows",
            "20000",
            "--out",
            "sky",
            "--seed",
            "7",
            "--workers",
            "1",
            "--no-progress",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    imp = _cli(
        "import",
        "sky",
        "--out",
        "cat",
        "--id",
        "source_id",
        "--max-rows",
        "4000",
        "--margin",
        "2",
        "--workers",
        "2",
        "--no-progress",
        cwd=tmp_path,
    )
    assert imp.returncode == 0, imp.stderr
    train = _cli(
        "train",
        "photoz",
        "--catalog",
        "cat",
        "--features",
        "u-g,g-r,r-i,i-z,r",
        "--target",
        "redshift",
        "--where",
        "obj_class == 'GALAXY'",
        "--members",
        "1",
        "--rounds",
        "200",  # the bars and the noise, not the model: a sixth of the default rounds
        "--model-out",
        "pz",
        "--workers",
        "2",
        cwd=tmp_path,
        env=env,
    )
    assert train.returncode == 0, train.stderr
    assert '"sigma_nmad"' in train.stdout and "model written to pz" in train.stdout
    # one bar for the stage, counting every boosting round: the one member's median booster and the
    # quantile booster, capped by --rounds (with one member there is nothing to distil)
    rounds = 200 + min(200, QUANTILE_PARAMS["rounds"])
    assert "train photoz:" in train.stderr and f"/{rounds} [" in train.stderr and "round/s" in train.stderr
    for noise in NOISE:
        assert noise not in train.stderr, (noise, train.stderr[-2000:])
    predict = _cli(
        "predict",
        "--model",
        "pz",
        "--catalog",
        "cat",
        "--out",
        "cat_z",
        "--workers",
        "2",
        cwd=tmp_path,
        env=env,
    )
    assert predict.returncode == 0, predict.stderr
    assert "predictions written to cat_z" in predict.stdout
    assert "write cat_z:" in predict.stderr and "task/s" in predict.stderr  # a bar over the partitions
    for noise in NOISE:
        assert noise not in predict.stderr, (noise, predict.stderr[-2000:])
    # --verbose brings distributed's INFO lines back
    verbose = _cli(
        "evaluate",
        "--model",
        "pz",
        "--catalog",
        "cat",
        "--where",
        "obj_class == 'GALAXY'",
        "--workers",
        "1",
        "--verbose",
        cwd=tmp_path,
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "INFO" in verbose.stderr and '"sigma_nmad"' in verbose.stdout
