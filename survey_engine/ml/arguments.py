"""Arguments and runs of the model stages: ``train``, ``predict``, ``evaluate`` and ``cluster``
(declared once; see ``survey_engine.arguments``). ``cluster`` here is ML clustering (HDBSCAN,
DBSCAN, k-means over catalog rows), not a Dask cluster."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from survey_engine.arguments import (
    AT_LEAST_1,
    NAME_LIST,
    NAMES,
    POSITIVE,
    StageResult,
    param,
    positive_int,
)
from survey_engine.catalog.row_filter import WHERE_HELP, normalise_where

TASKS = ("photoz", "classify", "anomaly", "pca")
MISSING_CHOICES = ("nan", "impute", "drop")
CLASS_WEIGHT_CHOICES = ("none", "sqrt", "balanced")  # ml.supervised.CLASS_WEIGHTS
METHODS = ("kmeans", "dbscan", "hdbscan")
PHOTOZ_KEYS = (
    "n",
    "bias",
    "sigma_nmad",
    "sigma_iqr",
    "outlier_rate_015",
    "outlier_rate_lsst",
    "interval_coverage",
    "interval_coverage_95",
    "pit_ks",
    "crps",
)
CLASSIFY_KEYS = ("n", "accuracy", "macro_f1", "macro_roc_auc")
FEATURES_HELP = "comma-separated features: columns, colours like u-g, dered(r), snr(err), absmag(g), ..."


@dataclass
class TrainArguments:
    """Fit a model on a labelled catalog and save it with its metrics and report."""

    task: str = param(
        help="photoz (redshift regression), classify (labels), anomaly (Isolation Forest) or pca",
        role="positional",
        choices=TASKS,
    )
    catalog: str = param(
        help="training data: a HATS catalog/collection, or files (CSV, Parquet, FITS, VOTable)",
        required=True,
        ref="catalog",
    )
    features: list[str] = param(help=FEATURES_HELP, type=NAME_LIST, required=True, check=NAMES)
    model_out: str = param(
        help="folder for the model, its report.html and metrics.json",
        role="output",
        required=True,
        yaml=None,
        job="output",
    )
    target: str | None = param(None, "photoz: the spectroscopic redshift column")
    label: str | None = param(None, "classify: the class label column")
    gpu: bool = param(
        False, "train XGBoost on the GPU (device=cuda); falls back to the CPU with a message", type=bool
    )
    where: str | None = param(None, WHERE_HELP.format("training rows"), convert=normalise_where)
    test_fraction: float = param(
        0.2,
        "held-out share, 0.05..0.35 (spatial folds when positions exist; default 0.2)",
        type=float,
        check=(lambda v: 0.05 <= v <= 0.35, "within 0.05..0.35 (the training rows keep an inner fold)"),
    )
    cv: int = param(
        0,
        "also run K-fold cross-validation over every labelled row (K folds of its own) and report mean and spread",
        type=int,
        check=(lambda v: v == 0 or v >= 2, "0 or >= 2"),
    )
    search: bool = param(False, "small hyperparameter search on an inner validation fold", type=bool)
    baselines: bool = param(
        False, "compare with the textbook XGBoost and random forest on the same split", type=bool
    )
    seed: int = param(42, "seed of the folds, the ensemble's rotations and XGBoost (default 42)", type=int)
    members: int | None = param(
        None,
        "photoz/classify: boosters in the ensemble, each on the features plus one "
        "rotation of them (default 4; 1 = one booster)",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
    )
    rounds: int | None = param(
        None,
        "photoz/classify: boosting rounds of each member (default: the model's own); photo-z's quantile "
        "and distilled boosters train at most as many",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
    )
    eta: float | None = param(
        None, "photoz/classify: XGBoost learning rate (default: the model's own)", type=float, check=POSITIVE
    )
    ensemble: str | None = param(
        None,
        "photo-z model: distilled (the default: one early-stopped booster on all views that "
        "learns the 4 members' mean, about a tenth of their trees per row), stacked (one "
        "early-stopped booster on all views, trained on the truth) or members (4 boosters on rotated views); "
        "classifier: stacked (the default, about a twentieth of the members' trees per row) or members",
        choices=("members", "stacked", "distilled"),
    )
    class_weight: str = param(
        "none",
        "classify: weight rare classes up (balanced = equal total weight per class; default none)",
        choices=CLASS_WEIGHT_CHOICES,
    )
    ebv: str | None = param(None, "E(B-V) column: colours and dered() are corrected for extinction")
    missing: str | None = param(
        None,
        "missing/sentinel values: pass NaN to XGBoost (default), impute medians, or drop "
        "rows; given explicitly, text in a feature column counts as missing (else it is an "
        "error)",
        choices=MISSING_CHOICES,
    )
    ra: str | None = param(None, "RA column for spatial folds (default: the catalog's, or ra)")
    dec: str | None = param(None, "Dec column for spatial folds (default: the catalog's, or dec)")
    components: int = param(3, "pca: number of components", type=int, check=AT_LEAST_1, parse=positive_int)
    mag_column: str | None = param(
        None,
        "column for the metrics in magnitude bins (default: r when present, else a band magnitude feature)",
    )
    no_refit: bool = param(
        False, "save the evaluated model instead of refitting it on every labelled row", type=bool
    )


def run_train(args: TrainArguments, client=None, progress: bool = True) -> StageResult:
    out = str(args.model_out)
    if args.task in ("photoz", "classify"):
        from survey_engine.ml.supervised import CLASS_WEIGHTS, MEMBERS, TrainOptions, train

        params = {k: v for k, v in (("rounds", args.rounds), ("eta", args.eta)) if v is not None}
        if args.task == "classify":
            params["class_weight_power"] = CLASS_WEIGHTS[args.class_weight]
        opts = TrainOptions(
            args.task,
            args.features,
            target=args.target,
            label=args.label,
            seed=args.seed,
            test_fraction=args.test_fraction,
            cv=args.cv,
            search=args.search,
            baselines=args.baselines,
            gpu=args.gpu,
            ebv_column=args.ebv,
            missing=args.missing or "nan",
            ra_column=args.ra,
            dec_column=args.dec,
            where=args.where,
            members=args.members or MEMBERS,
            magnitude=args.mag_column,
            refit=not args.no_refit,
            text_as_missing=args.missing is not None,
            params=params,
            ensemble=args.ensemble,
        )
        metrics = train(str(args.catalog), opts, out, client=client, progress=progress)
        keys = PHOTOZ_KEYS if args.task == "photoz" else CLASSIFY_KEYS
        shown = {
            "held_out": {k: metrics["test"][k] for k in keys if k in metrics["test"]},
            **{k: metrics[k] for k in ("headline", "baselines") if k in metrics},
        }
        line = f"{json.dumps(shown, indent=1)}\nmodel written to {out} (report: {out}/report.html)"
        return StageResult(line, {"held_out": shown["held_out"]}, Path(out), metrics)
    from survey_engine.ml.unsupervised import train_anomaly, train_pca

    common = {"ebv": args.ebv, "where": args.where, "client": client}
    if args.task == "anomaly":
        metrics = train_anomaly(str(args.catalog), args.features, out, seed=args.seed, **common)
    else:
        metrics = train_pca(str(args.catalog), args.features, out, n_components=args.components, **common)
    return StageResult(
        f"{json.dumps(metrics, indent=1)}\nmodel written to {out}", metrics, Path(out), metrics
    )


@dataclass
class PredictArguments:
    """Apply a saved model to a whole catalog, writing a new one with the prediction columns."""

    model: str = param(help="model folder written by train", required=True, ref="model")
    catalog: str = param(
        help="a HATS catalog/collection, or files (CSV, Parquet, FITS, VOTable)", required=True, ref="catalog"
    )
    out: str = param(
        help="output: a collection for a catalog, a folder of Parquet files for files",
        role="output",
        required=True,
        yaml=None,
        job="output",
    )
    missing: str | None = param(
        None,
        "text in a feature column counts as missing, handled so (default: text is an "
        "error naming the column and row)",
        choices=MISSING_CHOICES,
    )


def run_predict(args: PredictArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.ml.apply import predict

    out = predict(
        str(args.model),
        str(args.catalog),
        str(args.out),
        client=client,
        progress=progress,
        missing=args.missing,
    )
    return StageResult(f"predictions written to {out}", {}, out, {"model": str(args.model)})


@dataclass
class EvaluateArguments:
    """Metrics of a saved model on a labelled catalog."""

    model: str = param(help="model folder written by train", required=True, ref="model")
    catalog: str = param(
        help="labelled data: a HATS catalog/collection, or files", required=True, ref="catalog"
    )
    truth: str | None = param(None, "truth column (default: the model's target or label)")
    where: str | None = param(None, WHERE_HELP.format("the rows to evaluate on"), convert=normalise_where)
    out: str | None = param(
        None, "also write the metrics as JSON here", role="output", yaml=None, job="output_file:metrics.json"
    )


def run_evaluate(args: EvaluateArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.catalog.layout import atomic_write_text
    from survey_engine.ml.supervised import evaluate

    metrics = evaluate(str(args.model), str(args.catalog), client=client, truth=args.truth, where=args.where)
    text = json.dumps(metrics, indent=1, default=float)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), text)
    info = {k: metrics[k] for k in ("n", "sigma_nmad", "accuracy", "macro_f1") if k in metrics}
    return StageResult(text, info, Path(args.out) if args.out else None, metrics)


@dataclass
class ClusterArguments:
    """Find clusters of catalog rows: k-means over the whole catalog, or DBSCAN / HDBSCAN per tile plus its
    margin, merged across tiles."""

    catalog: str = param(
        help="a HATS catalog or collection (with a margin for dbscan/hdbscan)", required=True, ref="catalog"
    )
    features: list[str] = param(
        help="e.g. pmra,pmdec,parallax,pos_x,pos_y,pos_z", type=NAME_LIST, required=True, check=NAMES
    )
    out: str = param(
        help="output collection folder (with cluster_id) and clusters.json",
        role="output",
        required=True,
        yaml=None,
        job="output",
    )
    method: str = param(
        "hdbscan",
        "hdbscan (default) or dbscan per tile plus margin, merged across tiles; kmeans over "
        "the whole catalog",
        choices=METHODS,
    )
    id: str | None = param(None, "unique id column (default: the catalog's)")
    min_cluster_size: int = param(
        20, "hdbscan (default 20)", type=int, check=(lambda v: v >= 2, ">= 2"), parse=positive_int
    )
    min_samples: int | None = param(None, "dbscan / hdbscan", type=int, check=AT_LEAST_1, parse=positive_int)
    eps: float = param(
        0.3, "dbscan radius in robust-standardised units (default 0.3)", type=float, check=POSITIVE
    )
    max_cluster_fraction: float = param(
        0.5,
        "hdbscan: largest share of a tile one cluster may hold (of the "
        "whole catalog where a cluster found in several tiles is clustered again)",
        type=float,
        check=(lambda v: 0 < v <= 1, "within (0, 1]"),
    )
    n_clusters: int = param(8, "kmeans", type=int, check=AT_LEAST_1, parse=positive_int)
    where: str | None = param(
        None, WHERE_HELP.format("the rows that take part (others get -1)"), convert=normalise_where
    )
    build_margin: bool = param(
        False,
        "dbscan / hdbscan: build a margin as wide as the clusters reach where the stored "
        "one is narrower (else an error)",
        type=bool,
    )
    skip_margin_check: bool = param(
        False,
        "dbscan / hdbscan: cluster with the stored margin even where it is narrower "
        "than the clusters' reach (a cluster wider than it may be split across tiles)",
        type=bool,
    )


def run_cluster(args: ClusterArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.ml.cluster import cluster_catalog

    params = {
        "min_cluster_size": args.min_cluster_size,
        "min_samples": args.min_samples,
        "eps": args.eps,
        "max_cluster_fraction": args.max_cluster_fraction,
        "n_clusters": args.n_clusters,
    }
    if args.min_samples is None:
        params.pop("min_samples")
    summary = cluster_catalog(
        str(args.catalog),
        args.features,
        args.method,
        str(args.out),
        id_column=args.id,
        params=params,
        client=client,
        progress=progress,
        where=args.where,
        build_margin=args.build_margin,
        check_margin=not args.skip_margin_check,
    )
    shown = {k: summary[k] for k in ("rows", "noise", "n_clusters")} | {"largest": summary["clusters"][:5]}
    info = {
        "n_clusters": summary["n_clusters"],
        "noise": summary["noise"],
        "largest": [c["members"] for c in summary["clusters"][:5]],
    }
    return StageResult(json.dumps(shown, indent=1, default=float), info, Path(args.out), summary)
