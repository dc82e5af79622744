"""predict suite: a photo-z model applied to a whole catalog (a new catalog written) against one process."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from survey_engine.bench.measure import timed
from survey_engine.bench.suites.common import (
    bench_row,
    local_cluster,
    mock_catalog,
    not_run_row,
    peer_allowed,
    profiled,
    repeat_plan,
)
from survey_engine.bench.suites.train import TRAIN_FEATURES


def _bench_model(work: Path, client) -> Path:
    """A photo-z model (median + 68% interval) trained once on a 100k-row mock catalog."""
    from survey_engine.ml.supervised import TrainOptions, train

    model = work / "bench_photoz_model"
    if not (model / "model.json").exists() and not model.exists():
        cat = mock_catalog(100_000, work, client)
        train(str(cat), TrainOptions("photoz", TRAIN_FEATURES, target="redshift", where="obj_class == 'GALAXY'", params={"rounds": 200}),
              str(model), client=client, progress=False)
    return model


def run(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    """Full-catalog prediction rate: survey_engine's ``predict`` (partition by partition on the
    cluster, a new HATS catalog written) vs one process reading, predicting and writing one file."""
    import pyarrow.dataset as ds

    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ml.apply import predict
    from survey_engine.ml.artifact import load_model
    from survey_engine.ml.supervised import predict_frame

    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        case = f"photo-z on {n} rows (z_phot, z_phot_lo, z_phot_hi), catalog written"
        with local_cluster(workers) as client:
            model = _bench_model(work, client)
            cat_path = mock_catalog(n, work, client)
            prof: list = []

            def ours():
                out = work / f"pred_{n}"
                shutil.rmtree(out, ignore_errors=True)
                written = predict(str(model), str(cat_path), str(out), client=client, progress=False)
                t = ds.dataset([str(f) for f in open_catalog(written, margin=None).partition_files()], format="parquet").to_table(columns=["z_phot"])
                return len(t), float(np.sum(t.column(0).to_numpy(), dtype=np.float64))

            m = timed(profiled(client, ours, prof), **plan)
            n_ours, sum_ours = m.pop("value")
            if not peer_allowed("predict", n, peer_limits):
                out_rows.append(bench_row("predict", case, "survey_engine", n, workers, m, agree=n_ours == n, profile=prof))
                out_rows.append(not_run_row("predict", case, "single_process", n, 1, peer_limits))
                continue
            meta, models = load_model(model)
            files = [str(f) for f in open_catalog(cat_path, margin=None).partition_files()]

            def single():
                df = ds.dataset(files, format="parquet").to_table().to_pandas()
                res = predict_frame(df, meta, models)
                res.to_parquet(work / f"pred_single_{n}.parquet", index=False)
                return len(res), float(np.sum(res["z_phot"].to_numpy(), dtype=np.float64))

            ms = timed(single, **plan)
            n_s, sum_s = ms.pop("value")
            agree = n_ours == n_s == n and abs(sum_ours - sum_s) <= 1e-6 * abs(sum_s)
            out_rows.append(bench_row("predict", case, "survey_engine", n, workers, m, agree=agree, profile=prof))
            out_rows.append(bench_row("predict", case, "single_process", n, 1, ms, agree=agree, note="pandas + the same boosters, one Parquet file"))
            shutil.rmtree(work / f"pred_{n}", ignore_errors=True)
            (work / f"pred_single_{n}.parquet").unlink(missing_ok=True)
    return out_rows


