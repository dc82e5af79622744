"""predict suite: the default photo-z model (``PHOTOZ_ENSEMBLE``, the distilled booster) applied to
a whole catalog (a new catalog written, with the calibrated p(z)) against one fresh process running
XGBoost's ``inplace_predict`` of the same boosters with as many threads as the cluster has workers (``bench/predict_peer.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from survey_engine.bench.measure import PeakMemory, run_summary, timed
from survey_engine.bench.suites.common import (
    bench_row,
    local_cluster,
    mock_catalog,
    not_run_row,
    peer_allowed,
    peer_environment,
    peer_process,
    profiled,
    repeat_plan,
)
from survey_engine.bench.suites.train import TRAIN_FEATURES
from survey_engine.ml.options import PHOTOZ_ENSEMBLE


def _bench_model(work: Path, client) -> Path:
    """The default photo-z model (``PHOTOZ_ENSEMBLE``: one student booster distilled from the
    members on their views side by side, early-stopped; calibrated p(z)) trained once on a
    100k-row mock catalog, without the refit. The members' ensemble predicts about 20x slower
    (README, photo-z)."""
    from survey_engine.ml.supervised import TrainOptions, train

    model = work / f"bench_photoz_model_{PHOTOZ_ENSEMBLE}"
    if not (model / "model.json").exists() and not model.exists():
        cat = mock_catalog(100_000, work, client)
        train(
            str(cat),
            TrainOptions(
                "photoz",
                TRAIN_FEATURES,
                target="redshift",
                where="obj_class == 'GALAXY'",
                refit=False,
                ensemble=PHOTOZ_ENSEMBLE,
            ),
            str(model),
            client=client,
            progress=False,
        )
    return model


def xgboost_peer(model: Path, files: list[str], out: Path, nthread: int, plan: dict) -> dict:
    """The peer's time (reading, features, boosters, writing; not its imports), over the plan's runs."""
    args = [str(model), str(out), str(nthread), *files]
    runs, peak, peak_process = [], 0, 0
    for i in range(plan["warmup"] + plan["repeats"]):
        with PeakMemory() as mem:
            runs.append(
                peer_process(
                    "survey_engine.bench.predict_peer",
                    args,
                    "single-process XGBoost predict",
                    env=peer_environment(nthread),
                )
            )
        if i >= plan["warmup"]:
            peak, peak_process = max(peak, mem.peak), max(peak_process, mem.peak_process)
    seconds = [r["seconds"] for r in runs[plan["warmup"] :]]
    return run_summary(seconds, runs[0]["seconds"], plan["warmup"], peak, peak_process)


def z_phot_agree(written: Path, peer_file: Path) -> bool:
    """The same z_phot for every row with all features (where the calibrated median is the boosters')."""
    import pandas as pd
    import pyarrow.dataset as ds

    from survey_engine.catalog.catalog import open_catalog

    files = [str(f) for f in open_catalog(written, margin=None).partition_files()]
    ours = (
        ds.dataset(files, format="parquet").to_table(columns=["source_id", "z_phot", "quality"]).to_pandas()
    )
    peer = pd.read_parquet(peer_file, columns=["source_id", "z_phot"])
    both = ours[ours["quality"] == 0].merge(peer, on="source_id", suffixes=("", "_peer"))
    return len(both) > 0.5 * len(ours) and bool(
        np.allclose(both["z_phot"], both["z_phot_peer"], rtol=1e-5, atol=1e-6)
    )


def run(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    """Full-catalog prediction rate: survey_engine's ``predict`` (partition by partition on the
    cluster, a new HATS catalog written) vs one process with as many threads reading, predicting
    with the same boosters and writing one file."""
    import pyarrow.dataset as ds

    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ml.apply import predict

    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        case = f"photo-z on {n} rows (z_phot, intervals, p(z)), catalog written"
        with local_cluster(workers) as client:
            model = _bench_model(work, client)
            cat_path = mock_catalog(n, work, client)
            prof: list = []

            def ours():
                out = work / f"pred_{n}"
                shutil.rmtree(out, ignore_errors=True)
                written = predict(str(model), str(cat_path), str(out), client=client, progress=False)
                t = ds.dataset(
                    [str(f) for f in open_catalog(written, margin=None).partition_files()], format="parquet"
                ).to_table(columns=["z_phot"])
                return len(t), float(np.sum(t.column(0).to_numpy(), dtype=np.float64))

            m = timed(profiled(client, ours, prof), **plan)
            n_ours, _ = m.pop("value")
            if not peer_allowed("predict", n, peer_limits):
                out_rows.append(
                    bench_row(
                        "predict", case, "survey_engine", n, workers, m, agree=n_ours == n, profile=prof
                    )
                )
                out_rows.append(not_run_row("predict", case, "single_process", n, workers, peer_limits))
                continue
            files = [str(f) for f in open_catalog(cat_path, margin=None).partition_files()]
            peer_out = work / f"pred_single_{n}.parquet"
            ms = xgboost_peer(model, files, peer_out, workers, plan)
            agree = n_ours == n and z_phot_agree(work / f"pred_{n}", peer_out)
            out_rows.append(
                bench_row(
                    "predict",
                    case,
                    "survey_engine",
                    n,
                    workers,
                    m,
                    agree=agree,
                    profile=prof,
                    note=f"the default model ({PHOTOZ_ENSEMBLE}: one early-stopped booster); z_phot, 68% / 95% intervals, p(z) grid",
                )
            )
            out_rows.append(
                bench_row(
                    "predict",
                    case,
                    "single_process",
                    n,
                    workers,
                    ms,
                    agree=agree,
                    note=f"one fresh process: pyarrow + XGBoost inplace_predict of the same boosters, nthread={workers}; "
                    "z_phot and the raw quantiles to one Parquet file",
                )
            )
            shutil.rmtree(work / f"pred_{n}", ignore_errors=True)
            peer_out.unlink(missing_ok=True)
    return out_rows
