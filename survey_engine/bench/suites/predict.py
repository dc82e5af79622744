"""predict suite: the default models applied to a whole catalog (a new catalog written), each
against one fresh process running XGBoost's ``inplace_predict`` of the same boosters with as many
threads as the cluster has workers in total (``bench/predict_peer.py``): the default photo-z model
(``PHOTOZ_ENSEMBLE``, the distilled booster, with the calibrated p(z)) at every size and the
default classifier (``CLASSIFY_ENSEMBLE``, one stacked booster) on at most ``REFERENCE_ROWS``; and
there, without a peer, the members' photo-z model and members' classifier the defaults replaced
(their rates and held-out sigma_NMAD / accuracy beside the defaults')."""

from __future__ import annotations

import json
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
from survey_engine.ml.options import default_ensemble

# The members' models predict 10-20x slower than the defaults: they and the default classifier are
# measured on at most this many rows (a 10^7-row run of a members' model would take 10-20 minutes
# on 2 cores); rows per second, not the size, is what is compared.
REFERENCE_ROWS = 1_000_000
TRAINING_ROWS = 100_000  # the mock catalog each bench model is trained on (without the refit)


def bench_model(
    work: Path, client, task: str, ensemble: str | None = None, rounds: int | None = None
) -> tuple[Path, dict]:
    """A model of ``task`` with the default options (``ensemble`` for photo-z: the default
    ``PHOTOZ_ENSEMBLE`` unless named; ``rounds``: each booster's rounds capped, as ``--rounds``
    does, for ``bench --quick``) trained once on the ``TRAINING_ROWS`` mock catalog, without the
    refit (the held-out metrics are the saved model's): its folder and ``metrics.json``."""
    from survey_engine.ml.supervised import TrainOptions, train

    layout = ensemble or default_ensemble(task)
    model = work / f"bench_{task}_model_{layout}{f'_{rounds}_rounds' if rounds else ''}"
    params = {"rounds": rounds} if rounds else {}
    if not (model / "metrics.json").exists():
        cat = mock_catalog(TRAINING_ROWS, work, client)
        if task == "photoz":
            opts = TrainOptions(
                "photoz",
                TRAIN_FEATURES,
                target="redshift",
                where="obj_class == 'GALAXY'",
                refit=False,
                ensemble=ensemble,
                params=params,
            )
        else:
            opts = TrainOptions(
                "classify",
                TRAIN_FEATURES,
                label="obj_class",
                refit=False,
                ensemble=ensemble,
                params=params,
            )
        train(str(cat), opts, str(model), client=client, progress=False)
    return model, json.loads((model / "metrics.json").read_text())


def trees_per_row(model: Path) -> int:
    """Trees every row goes through (all boosters; a multi-output booster counts each output's)."""
    from survey_engine.ml.artifact import load_model

    _, models = load_model(str(model))
    return int(sum(len(b.get_dump()) for b in models.values()))


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


def predictions_agree(written: Path, peer_file: Path, task: str) -> bool:
    """The same predictions for every row with all features: photo-z the same z_phot (where the
    calibrated median is the boosters'), classification the same ``class_pred`` and probabilities."""
    import pandas as pd
    import pyarrow.dataset as ds

    from survey_engine.catalog.catalog import open_catalog

    files = [str(f) for f in open_catalog(written, margin=None).partition_files()]
    peer = pd.read_parquet(peer_file)
    cols = [c for c in peer.columns if c not in ("z_lo", "z_hi")]
    ours = ds.dataset(files, format="parquet").to_table(columns=[*cols, "quality"]).to_pandas()
    both = ours[ours["quality"] == 0].merge(peer[cols], on="source_id", suffixes=("", "_peer"))
    if len(both) <= 0.5 * len(ours):
        return False
    if task == "classify":
        probs = [c for c in cols if c.startswith("prob_")]
        same_class = bool((both["class_pred"].astype(str) == both["class_pred_peer"].astype(str)).all())
        return same_class and all(
            np.allclose(both[c], both[f"{c}_peer"], rtol=1e-5, atol=1e-6) for c in probs
        )
    return bool(np.allclose(both["z_phot"], both["z_phot_peer"], rtol=1e-5, atol=1e-6))


def _measure(client, model: Path, cat_path: Path, n: int, plan: dict, work: Path) -> tuple[dict, list, Path]:
    """survey_engine's ``predict`` of ``model`` on the catalog (a new catalog written and read back
    for its row count): the measurement, the last run's task profile and the written catalog."""
    import pyarrow.dataset as ds

    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ml.apply import predict

    out = work / f"pred_{model.name}_{n}"
    prof: list = []

    def ours():
        shutil.rmtree(out, ignore_errors=True)
        written = predict(str(model), str(cat_path), str(out), client=client, progress=False)
        files = [str(f) for f in open_catalog(written, margin=None).partition_files()]
        return ds.dataset(files, format="parquet").count_rows()

    m = timed(profiled(client, ours, prof), **plan)
    return m, prof, out


def _model_rows(
    client,
    task: str,
    ensemble: str | None,
    n: int,
    repeats: int,
    workers: int,
    work: Path,
    peer,
    rounds: int | None = None,
) -> list[dict]:
    """One model on an n-row catalog: survey_engine's row, then the one-process peer's (a row saying
    it was not run above the peer limits ``peer``; none at all with ``peer=False``)."""
    from survey_engine.catalog.catalog import open_catalog

    plan = repeat_plan(n, repeats)
    model, metrics = bench_model(work, client, task, ensemble, rounds)
    layout = ensemble or default_ensemble(task)
    what = "photo-z" if task == "photoz" else "classification"
    outputs = "z_phot, intervals, p(z)" if task == "photoz" else "class_pred, prob_<class>"
    case = f"{what} ({layout}) on {n} rows ({outputs}), catalog written"
    cat_path = mock_catalog(n, work, client)
    m, prof, written = _measure(client, model, cat_path, n, plan, work)
    n_ours = m.pop("value")
    test = metrics["test"]
    quality = {"sigma_nmad": test["sigma_nmad"]} if task == "photoz" else {"accuracy": test["accuracy"]}
    info = {
        "model": f"{task} {layout}",
        "trees_per_row": trees_per_row(model),
        "train_s": metrics.get("seconds"),
    }
    note = (
        f"the {layout} model{f' (rounds capped at {rounds})' if rounds else ''}, {info['trees_per_row']} "
        f"trees per row, trained on {TRAINING_ROWS} mock rows "
        f"in {info['train_s']} s; held-out {', '.join(f'{k} {v:.4g}' for k, v in quality.items())}"
    )

    def ours(agree: bool) -> dict:
        row = bench_row("predict", case, "survey_engine", n, workers, m, agree=agree, profile=prof, note=note)
        return {**row, **info, **quality}

    rows = []
    if peer is False:
        rows.append(ours(n_ours == n))
    elif not peer_allowed("predict", n, peer):
        rows += [ours(n_ours == n), not_run_row("predict", case, "single_process", n, workers, peer)]
    else:
        files = [str(f) for f in open_catalog(cat_path, margin=None).partition_files()]
        peer_out = work / f"pred_single_{model.name}_{n}.parquet"
        ms = xgboost_peer(model, files, peer_out, workers, plan)
        agree = n_ours == n and predictions_agree(written, peer_out, task)
        written_cols = (
            "z_phot and the raw quantiles" if task == "photoz" else "class_pred and the probabilities"
        )
        rows.append(ours(agree))
        rows.append(
            bench_row(
                "predict",
                case,
                "single_process",
                n,
                workers,
                ms,
                agree=agree,
                note=f"one fresh process: pyarrow + XGBoost inplace_predict of the same boosters, "
                f"nthread={workers} (OMP_NUM_THREADS={workers}); {written_cols} to one Parquet file",
            )
        )
        peer_out.unlink(missing_ok=True)
    shutil.rmtree(written, ignore_errors=True)
    _echo(rows)
    return rows


def _echo(rows: list[dict]) -> None:
    """One line per measured row on stderr as it is done (a 10^7-row run takes minutes per model)."""
    import sys

    for r in rows:
        if r.get("seconds"):
            print(
                f"  predict: {r['case']}: {r['tool']} {r['seconds']:.1f} s, {r['rows_per_s']:,.0f} rows/s, "
                f"agree={r['agree']}; {r['note']}",
                file=sys.stderr,
                flush=True,
            )


def against_members(ours: dict, base: dict, quality: str, ref: int) -> None:
    """A default model's row gets its speed-up and held-out ``quality`` against the members' model
    of its task (the default before issue 20): ``speedup_vs_members``, ``<quality>_vs_members``
    (relative for sigma_NMAD, a difference for accuracy) and the members' own values."""
    ours[f"members_{quality}"] = base[quality]
    ours["members_rows_per_s"] = base["rows_per_s"]
    ours["speedup_vs_members"] = ours["rows_per_s"] / base["rows_per_s"]
    if quality == "sigma_nmad":
        ours["sigma_nmad_vs_members"] = ours["sigma_nmad"] / base["sigma_nmad"] - 1
        change = f"sigma_NMAD {ours['sigma_nmad_vs_members']:+.1%}"
    else:
        ours[f"{quality}_vs_members"] = ours[quality] - base[quality]
        change = f"{quality} {ours[f'{quality}_vs_members']:+.4f}"
    ours["note"] += (
        f"; {ours['speedup_vs_members']:.1f}x the members' rows/s ({base['rows_per_s']:,.0f} at {ref} "
        f"rows), held-out {change} against theirs"
    )


def run(sizes, repeats, workers, work: Path, peer_limits=None, model_rounds: int | None = None) -> list[dict]:
    """Full-catalog prediction rates: survey_engine's ``predict`` (partition by partition on the
    cluster, a new HATS catalog written) vs one process with as many threads reading, predicting
    with the same boosters and writing one file. Per size: the default photo-z model; then, on at
    most ``REFERENCE_ROWS``, the default classifier (with its peer), and the members' photo-z model
    and classifier, the defaults before issue 20 (no peer: each default's speed-up and quality
    against them go into the default's row). ``model_rounds`` caps the models' boosting rounds (``bench --quick``)."""
    out_rows = []
    for n in sizes:
        with local_cluster(workers) as client:
            rows = _model_rows(client, "photoz", None, n, repeats, workers, work, peer_limits, model_rounds)
            ref = min(n, REFERENCE_ROWS)
            classify = _model_rows(
                client, "classify", None, ref, repeats, workers, work, peer_limits, model_rounds
            )
            members = _model_rows(
                client, "photoz", "members", ref, repeats, workers, work, False, model_rounds
            )
            class_members = _model_rows(
                client, "classify", "members", ref, repeats, workers, work, False, model_rounds
            )
        against_members(rows[0], members[0], "sigma_nmad", ref)
        against_members(classify[0], class_members[0], "accuracy", ref)
        for r in classify + members + class_members:
            r["modelled"] = False  # the predict stage's cost model: the default photo-z model's rows only
        out_rows += rows + classify + members + class_members
    return out_rows
