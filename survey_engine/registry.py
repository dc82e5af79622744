"""The registry: every stage, kind -> (Arguments, run). The CLI's sub-commands and flags, the job
spec's stage and source keys, the job runner and the Python API are all built from it, so an option
added to a stage's Arguments (one field in one file) reaches every door. (The commands that run
job specs and benchmarks are added on top of it in ``survey_engine/commands.py``: the job runner
reads this registry, so it cannot be part of it.)

Each Arguments dataclass lives beside its stage (``crossmatch/arguments.py``, ``ml/arguments.py``,
...); its fields declare their public name, default, help and check (``survey_engine.arguments``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from survey_engine.arguments import StageResult

WORKERS = "local Dask workers, one process and thread each (default: one per core, at most 8)"
NO_PROGRESS = "show no progress bars"


@dataclass(frozen=True)
class Stage:
    """One command: its Arguments, its run, and how the doors treat it."""

    kind: str
    help: str
    arguments: type
    run: Callable[..., StageResult]
    produces: str | None = None  # a job stage's output: catalog | model | report; None: not a job stage
    cluster: bool = True  # the CLI and the API give ``run`` a Dask client (``--workers``)
    progress: bool = True  # takes ``--no-progress``
    lock: bool = False  # the CLI holds OUT.lock before it starts a cluster (one writer per output)
    workers_flags: tuple[str, ...] = ("--workers",)
    storage: bool = True  # takes ``--storage-options`` (https:// and s3:// locations)
    source: str | None = None  # also a job spec source of this name


def _run_import(args, client=None, progress: bool = True) -> StageResult:
    from survey_engine.ingest.file_import.run import run_import

    r = run_import(args, client=client, progress=progress)
    info = {
        "rows": r.rows,
        "partitions": r.partitions,
        "margin_rows": r.margin_rows,
        "ra": args.ra_column,
        "dec": args.dec_column,
    }
    return StageResult(r.summary(), info, r.out, r)


def _run_ingest(args, client=None, progress: bool = True) -> StageResult:
    import survey_engine.ingest.tap.run as tap_run

    r = tap_run.run_ingest(args, client=client, progress=progress)
    info = {
        "rows": getattr(r, "rows", None),
        "pages": getattr(r, "pages", None),
        "verified": getattr(r, "verification", {}).get("ok"),
    }
    return StageResult(r.summary(), info, getattr(r, "out", None), r)


def _run_lightcurves(args, client=None, progress: bool = True) -> StageResult:
    from survey_engine.ingest.lightcurves import attach_lightcurves

    r = attach_lightcurves(args, client=client, progress=progress)
    info = {"objects": r.objects, "detections": r.detections, "unmatched_detections": r.unmatched_detections}
    return StageResult(r.summary(), info, r.out, r)


@cache
def stages() -> dict[str, Stage]:
    """Every stage and catalog command by name: the job stages, the mock sources, ``info`` and
    ``verify``. The commands that run jobs and benchmarks sit above them, in ``commands.py``.
    Long on purpose: it is the one table of stages, one ``Stage(...)`` entry each, read top to bottom."""
    from survey_engine.catalog.arguments import (
        InfoArguments,
        MarginArguments,
        VerifyArguments,
        run_info,
        run_margin,
        run_verify,
    )
    from survey_engine.crossmatch.arguments import CrossmatchArguments, run_crossmatch
    from survey_engine.features.arguments import (
        FeaturesArguments,
        VariabilityArguments,
        run_features,
        run_variability,
    )
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.lightcurves import LightcurveArguments
    from survey_engine.ingest.tap.arguments import TapIngestArguments
    from survey_engine.ml.arguments import (
        ClusterArguments,
        EvaluateArguments,
        PredictArguments,
        TrainArguments,
        run_cluster,
        run_evaluate,
        run_predict,
        run_train,
    )
    from survey_engine.mock.arguments import (
        MockArguments,
        MockLightcurvesArguments,
        run_mock,
        run_mock_lightcurves,
    )

    every = [
        Stage(
            "import",
            "import CSV / Parquet / FITS / VOTable files into a HATS collection",
            ImportArguments,
            _run_import,
            "catalog",
            lock=True,
        ),
        Stage(
            "ingest",
            "ingest a table from a TAP service (paged ADQL) into a HATS collection",
            TapIngestArguments,
            _run_ingest,
            "catalog",
            lock=True,
            workers_flags=("--workers", "--dask-workers"),
        ),
        Stage(
            "margin",
            "add a margin catalog to an existing catalog or collection",
            MarginArguments,
            run_margin,
            "catalog",
        ),
        Stage(
            "mock",
            "write a deterministic mock sky (Parquet files) of any size",
            MockArguments,
            run_mock,
            source="mock",
            storage=False,
        ),
        Stage(
            "crossmatch",
            "cross-match two catalogs (exact at every partition edge)",
            CrossmatchArguments,
            run_crossmatch,
            "catalog",
        ),
        Stage(
            "features",
            "compute features (colours, dered(), snr(), ...) as columns of a new catalog",
            FeaturesArguments,
            run_features,
            "catalog",
        ),
        Stage(
            "train", "train a model: photoz | classify | anomaly | pca", TrainArguments, run_train, "model"
        ),
        Stage(
            "predict",
            "apply a model to a whole catalog, writing a new one with the prediction columns",
            PredictArguments,
            run_predict,
            "catalog",
        ),
        Stage(
            "evaluate",
            "metrics of a model on a labelled catalog",
            EvaluateArguments,
            run_evaluate,
            "report",
            progress=False,
        ),
        Stage(
            "cluster",
            "find clusters: kmeans (global) or dbscan / hdbscan (per tile + margin, merged)",
            ClusterArguments,
            run_cluster,
            "catalog",
        ),
        Stage(
            "lightcurves",
            "attach a detection table to an object catalog as nested per-object light curves",
            LightcurveArguments,
            _run_lightcurves,
            "catalog",
        ),
        Stage(
            "variability",
            "variability features of every object's light curve, per band",
            VariabilityArguments,
            run_variability,
            "catalog",
        ),
        Stage(
            "mock-lightcurves",
            "write deterministic mock objects and their detections (variable stars)",
            MockLightcurvesArguments,
            run_mock_lightcurves,
            source="mock_lightcurves",
            storage=False,
        ),
        Stage(
            "info", "describe a catalog or collection", InfoArguments, run_info, cluster=False, progress=False
        ),
        Stage(
            "verify",
            "check a whole catalog or collection (every file, the metadata, the margin); exit 0 when "
            "intact, 1 when damaged",
            VerifyArguments,
            run_verify,
        ),
    ]
    return {s.kind: s for s in every}


def job_stages() -> dict[str, Stage]:
    """The stage kinds a job spec may use."""
    return {k: s for k, s in stages().items() if s.produces}


STORAGE_OPTIONS = (
    "fsspec storage options (a JSON object) for https:// and s3:// catalogs and outputs, e.g. "
    '\'{"anon": true}\' or \'{"endpoint_url": "http://127.0.0.1:9000", "key": "...", "secret": "..."}\'; '
    "over $SURVEY_ENGINE_STORAGE_OPTIONS"
)


def runtime_names(stage: Stage) -> list[str]:
    """The public names the doors add to a stage's own arguments: ``workers``, ``no_progress`` and
    ``storage_options``."""
    return (
        (["workers"] if stage.cluster else [])
        + (["no_progress"] if stage.progress else [])
        + (["storage_options"] if stage.storage else [])
    )
