"""The Python API: one function per CLI stage, with the same parameters, returning a result object.

``survey_engine.import_catalog``, ``ingest_tap``, ``crossmatch``, ``train``, ``predict``,
``evaluate``, ``cluster`` and ``run_job`` take what their command takes: the command's
positional arguments positionally, its options as keywords named like the flags with ``-`` made
``_`` (as argparse names them: ``--self`` is ``exclude_self``, ``--async`` is ``async_mode``), with
the same defaults. Comma-separated options (``features``, ``columns``, ``suffixes``,
``pm_columns``) also take lists. Each builds the same argument objects as the command and calls
the same stage code; ``client=`` runs it on that Dask client (else on the current one, else on a
``LocalCluster`` of ``workers`` processes for the call). Each returns a dataclass: paths, row
counts, metrics; for a catalog, ``.catalog`` / ``.open()`` give the ``Catalog``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from survey_engine.errors import SurveyEngineError


class ApiError(SurveyEngineError, ValueError):
    """A Python API call with arguments that cannot work (names the keyword)."""


# --- result objects --------------------------------------------------------------------------

@dataclass
class CatalogResult:
    """A stage that wrote a catalog (a HATS collection; ``predict`` on plain files writes Parquet files)."""

    path: Path
    rows: int
    partitions: int
    margin_rows: int | None = None
    details: dict = field(default_factory=dict)

    def open(self, margin: str | None = "default"):
        """The written collection as a lazy ``Catalog`` (with its margin unless ``margin=None``)."""
        from survey_engine.catalog.catalog import open_catalog

        if not _is_hats(self.path):
            raise ApiError(f"{self.path}: holds Parquet files, not a HATS collection; read it with pandas.read_parquet")
        return open_catalog(self.path, margin=margin)

    @property
    def catalog(self):
        return self.open()

    def __repr__(self) -> str:
        margin = f", margin_rows={self.margin_rows:,}" if self.margin_rows is not None else ""
        return f"{type(self).__name__}(path='{self.path}', rows={self.rows:,}, partitions={self.partitions}{margin})"


@dataclass(repr=False)
class ClusterResult(CatalogResult):
    """A clustered catalog (column ``cluster_id``) and what was found."""

    n_clusters: int = 0
    noise: int = 0
    clusters: list = field(default_factory=list)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, n_clusters={self.n_clusters}, noise={self.noise:,})"


@dataclass
class ModelResult:
    """A trained model: its folder, its metrics (held-out, cross-validation, baselines ...) and report."""

    path: Path
    task: str
    metrics: dict

    @property
    def report(self) -> Path | None:
        report = self.path / "report.html"
        return report if report.exists() else None

    def __repr__(self) -> str:
        held_out = self.metrics.get("test", self.metrics)
        shown = {k: v for k, v in held_out.items() if isinstance(v, int | float)}
        return f"ModelResult(path='{self.path}', task={self.task!r}, metrics={json.dumps(shown, default=float)[:300]})"


@dataclass
class MetricsResult:
    """Metrics of a model on a labelled catalog; ``path`` is the JSON written with ``out=``."""

    metrics: dict
    path: Path | None = None

    @property
    def rows(self) -> int:
        return int(self.metrics.get("n", 0))

    def __getitem__(self, key: str):
        return self.metrics[key]


@dataclass
class JobResult:
    """A job run (or, with ``check=True``, only validated): every stage's output under ``workdir``."""

    name: str
    workdir: Path
    status: str
    outputs: dict[str, Path]
    summary: dict = field(default_factory=dict)

    def open(self, stage: str, margin: str | None = "default"):
        """A stage's output catalog."""
        from survey_engine.catalog.catalog import open_catalog

        if stage not in self.outputs:
            raise ApiError(f"job {self.name}: no stage {stage!r}; stages: {', '.join(self.outputs)}")
        return open_catalog(self.outputs[stage], margin=margin)


# --- the stages ------------------------------------------------------------------------------

def import_catalog(inputs: str | Path | Sequence[str | Path], *, out: str | Path, ra: str = "auto", dec: str = "auto",
                   id: str | None = None, max_rows: int = 1_000_000, highest_order: int = 10, margin: float = 5.0,
                   name: str | None = None, drop_invalid: bool = False, workers: int | None = None,
                   no_progress: bool = False, client=None) -> CatalogResult:
    """``survey-engine import``: files, folders or globs (CSV, Parquet, FITS, VOTable) -> a HATS collection."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import
    from survey_engine.runtime import dask_client

    args = ImportArguments(inputs=_paths(inputs), out=str(out), ra_column=ra, dec_column=dec, id_column=id,
                           max_rows=max_rows, highest_order=highest_order, margin_arcsec=margin, name=name,
                           drop_invalid=drop_invalid)
    with dask_client(client, n_workers=workers) as client:
        result = run_import(args, client=client, progress=not no_progress)
    details = {"summary": result.summary(), "dropped": result.dropped, "wrapped_ra": result.wrapped_ra,
               "up_to_date": result.up_to_date, "resumed": result.resumed, "ra": args.ra_column, "dec": args.dec_column}
    return _catalog_result(CatalogResult, result.out, details)


def ingest_tap(*, tap: str, table: str, out: str | Path, columns: str | Sequence[str] | None = None, where: str | None = None,
               ra: str = "ra", dec: str = "dec", id: str | None = None, order: int = 3, max_order: int = 20,
               page_rows: int = 100_000, pages_in_flight: int = 4, paging: str = "auto", async_mode: bool = False, retries: int = 6,
               min_interval: float = 0.0, timeout: float = 300.0, token_env: str = "SURVEY_ENGINE_TAP_TOKEN",
               max_rows: int = 1_000_000, margin: float = 5.0, name: str | None = None, workers: int | None = None,
               no_progress: bool = False, client=None) -> CatalogResult:
    """``survey-engine ingest``: a table (or columns / rows of it) from a TAP service -> a HATS collection."""
    from survey_engine.ingest.tap.arguments import TapIngestArguments
    from survey_engine.ingest.tap.run import run_ingest
    from survey_engine.runtime import dask_client

    args = TapIngestArguments(
        tap_url=tap, table=table, out=str(out), columns=_names(columns, "columns") if columns is not None else None,
        where=where, ra_column=ra, dec_column=dec, id_column=id, order=order, max_order=max_order, page_rows=page_rows,
        pages_in_flight=pages_in_flight, paging=paging, mode="async" if async_mode else "sync", retries=retries, min_interval=min_interval,
        timeout=timeout, token=os.environ.get(token_env) or None, max_rows=max_rows, margin_arcsec=margin, name=name,
    )
    with dask_client(client, n_workers=workers) as client:
        result = run_ingest(args, client=client, progress=not no_progress)
    details = {"summary": result.summary(), "pages": result.pages, "paging": result.paging, "queries": result.queries,
               "retries": result.retries, "verification": result.verification, "up_to_date": result.up_to_date}
    return _catalog_result(CatalogResult, result.out, details)


def crossmatch(left, right, *, radius: float, out: str | Path, how: str = "nearest", k: int = 1, join: str = "inner",
               min_radius: float = 0.0, exclude_self: bool = False, suffixes: str | Sequence[str] = "_1,_2",
               build_margin: bool = False, algorithm: str = "zones", gpu: bool = False, epoch: float | None = None,
               left_epoch: float | str | None = None, right_epoch: float | str | None = None,
               pm_columns: str | Sequence[str] = "pmra,pmdec", workers: int | None = None, no_progress: bool = False,
               client=None) -> CatalogResult:
    """``survey-engine crossmatch``: match LEFT against RIGHT (paths or ``Catalog`` objects) and write the pairs.

    For a lazy match in a notebook, ``Catalog.crossmatch`` returns the plan without writing."""
    from survey_engine.catalog.catalog import Catalog, open_catalog
    from survey_engine.crossmatch.match import crossmatch as plan_crossmatch
    from survey_engine.runtime import dask_client

    suffix_pair = tuple(_names(suffixes, "suffixes", strip=False))
    if len(suffix_pair) != 2:
        raise ApiError(f"suffixes takes two suffixes (left, right), got {suffixes!r}")
    pm = _names(pm_columns, "pm_columns")
    if len(pm) != 2:
        raise ApiError(f"pm_columns takes two names (pmra, pmdec), got {pm_columns!r}")
    sides = [side if isinstance(side, Catalog) else open_catalog(side) for side in (left, right)]
    with dask_client(client, n_workers=workers) as client:
        planned = plan_crossmatch(
            sides[0], sides[1], radius, how=how, k=k, join=join, min_radius_arcsec=min_radius, exclude_self=exclude_self,
            suffixes=suffix_pair, build_margin=build_margin, epoch=epoch, algorithm="gpu" if gpu else algorithm,
            left_epoch=_epoch_spec(left_epoch, pm), right_epoch=_epoch_spec(right_epoch, pm), client=client,
        )
        written = planned.write(out, client=client, progress=not no_progress)
    return _catalog_result(CatalogResult, written, {"how": how, "join": join, "radius_arcsec": radius,
                                                     "algorithm": planned.params.algorithm})


def train(task: str, *, catalog: str | Path, features: str | Sequence[str], model_out: str | Path,
          target: str | None = None, label: str | None = None, gpu: bool = False, where: str | None = None,
          test_fraction: float = 0.2, cv: int = 0, search: bool = False, baselines: bool = False, seed: int = 42,
          members: int | None = None, class_weight: str = "none", ebv: str | None = None, missing: str | None = None,
          ra: str | None = None, dec: str | None = None, components: int = 3, mag_column: str | None = None,
          no_refit: bool = False, workers: int | None = None, no_progress: bool = False, client=None) -> ModelResult:
    """``survey-engine train photoz|classify|anomaly|pca``: fit a model on a catalog, save it with its metrics."""
    from survey_engine.runtime import dask_client

    feats = _names(features, "features")
    with dask_client(client, n_workers=workers) as client:
        if task in ("photoz", "classify"):
            from survey_engine.ml.supervised import CLASS_WEIGHTS, MEMBERS, TrainOptions
            from survey_engine.ml.supervised import train as train_supervised

            if class_weight not in CLASS_WEIGHTS:
                raise ApiError(f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, got {class_weight!r}")
            opts = TrainOptions(task, feats, target=target, label=label, seed=seed, test_fraction=test_fraction, cv=cv,
                                search=search, baselines=baselines, gpu=gpu, ebv_column=ebv, missing=missing or "nan", ra_column=ra,
                                dec_column=dec, where=where, members=members or MEMBERS, magnitude=mag_column,
                                refit=not no_refit, text_as_missing=missing is not None,
                                params={"class_weight_power": CLASS_WEIGHTS[class_weight]} if task == "classify" else {})
            metrics = train_supervised(str(catalog), opts, str(model_out), client=client, progress=not no_progress)
        elif task == "anomaly":
            from survey_engine.ml.unsupervised import train_anomaly

            metrics = train_anomaly(str(catalog), feats, str(model_out), seed=seed, ebv=ebv, client=client)
        elif task == "pca":
            from survey_engine.ml.unsupervised import train_pca

            metrics = train_pca(str(catalog), feats, str(model_out), n_components=components, ebv=ebv, client=client)
        else:
            raise ApiError(f"task must be one of photoz, classify, anomaly, pca; got {task!r}")
    return ModelResult(Path(model_out), task, metrics)


def predict(*, model: str | Path, catalog: str | Path, out: str | Path, missing: str | None = None,
            workers: int | None = None, no_progress: bool = False, client=None) -> CatalogResult:
    """``survey-engine predict``: apply a saved model to a whole catalog, writing a new one with its columns."""
    from survey_engine.ml.apply import predict as apply_model
    from survey_engine.runtime import dask_client

    with dask_client(client, n_workers=workers) as client:
        written = apply_model(str(model), str(catalog), str(out), client=client, progress=not no_progress, missing=missing)
    return _catalog_result(CatalogResult, written, {"model": str(model)})


def evaluate(*, model: str | Path, catalog: str | Path, truth: str | None = None, where: str | None = None,
             out: str | Path | None = None, workers: int | None = None, client=None) -> MetricsResult:
    """``survey-engine evaluate``: metrics of a saved model on a labelled catalog (written as JSON with ``out``)."""
    from survey_engine.catalog.layout import atomic_write_text
    from survey_engine.ml.supervised import evaluate as evaluate_model
    from survey_engine.runtime import dask_client

    with dask_client(client, n_workers=workers) as client:
        metrics = evaluate_model(str(model), str(catalog), client=client, truth=truth, where=where)
    if out is not None:
        atomic_write_text(Path(out), json.dumps(metrics, indent=1, default=float))
    return MetricsResult(metrics, Path(out) if out is not None else None)


def cluster(*, catalog: str | Path, features: str | Sequence[str], out: str | Path, method: str = "hdbscan",
            id: str | None = None, min_cluster_size: int = 20, min_samples: int | None = None, eps: float = 0.3,
            max_cluster_fraction: float = 0.5, n_clusters: int = 8, where: str | None = None, build_margin: bool = False,
            workers: int | None = None, no_progress: bool = False, client=None) -> ClusterResult:
    """``survey-engine cluster``: kmeans (global) or dbscan / hdbscan (per tile + margin, merged) -> ``cluster_id``."""
    from survey_engine.ml.cluster import cluster_catalog
    from survey_engine.runtime import dask_client

    params = {"min_cluster_size": min_cluster_size, "min_samples": min_samples, "eps": eps,
              "max_cluster_fraction": max_cluster_fraction, "n_clusters": n_clusters}
    if min_samples is None:
        params.pop("min_samples")
    with dask_client(client, n_workers=workers) as client:
        summary = cluster_catalog(str(catalog), _names(features, "features"), method, str(out), id_column=id,
                                  params=params, client=client, progress=not no_progress, where=where,
                                  build_margin=build_margin, check_margin=True)
    result = _catalog_result(ClusterResult, Path(out), summary)
    result.n_clusters, result.noise, result.clusters = int(summary["n_clusters"]), int(summary["noise"]), summary["clusters"]
    return result


def run_job(job: str | Path, *, cluster: str | None = None, workdir: str | Path | None = None, security: str | None = None,
            min_workers: int | None = None, check: bool = False, no_progress: bool = False, client=None) -> JobResult:
    """``survey-engine run``: a job spec (YAML) stage by stage; finished stages are reused on a re-run.

    ``cluster`` as for the command (local, tcp://HOST:PORT, slurm, pbs, FILE.yaml); ``client=``
    runs the job on that client instead. ``check=True`` validates the spec and runs nothing."""
    from survey_engine.jobs.run import run_job as run_spec
    from survey_engine.jobs.spec import load_spec

    spec = load_spec(job)
    if workdir is not None:
        spec.workdir = Path(workdir).resolve()
    outputs = {s.id: spec.workdir / s.id for s in spec.stages}
    if check:
        return JobResult(spec.name, spec.workdir, "valid", outputs)
    if client is None and cluster is None:
        from distributed import get_client

        try:  # the current client, as every other function here
            client = get_client()
        except ValueError:
            pass
    summary = run_spec(spec, cluster=cluster, client=client, progress=not no_progress, security_config=security,
                       min_workers=min_workers)
    return JobResult(spec.name, spec.workdir, summary.get("status", "ok"), outputs, summary)


# --- helpers ---------------------------------------------------------------------------------

def _paths(inputs) -> list[str]:
    if isinstance(inputs, str | Path):
        return [str(inputs)]
    return [str(p) for p in inputs]


def _names(value, keyword: str, strip: bool = True) -> list[str]:
    """A comma-separated string (as on the command line) or a list of names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip() if strip else str(v) for v in items]
    names = [n for n in names if n] if strip else names
    if not names:
        raise ApiError(f"{keyword} is empty")
    return names


def _epoch_spec(value, pm: list[str]):
    """A Julian year, or the name of a per-row epoch column, with the proper-motion columns."""
    from survey_engine.crossmatch.epochs import EpochSpec

    if value is None:
        return None
    try:
        return EpochSpec(float(value), pm[0], pm[1])
    except ValueError:
        return EpochSpec(value, pm[0], pm[1])


def _is_hats(path: Path) -> bool:
    return (path / "collection.properties").exists() or (path / "hats.properties").exists()


def _catalog_result(cls, path: str | Path, details: dict):
    """Counts of a written output from its metadata (no data read)."""
    path = Path(path)
    if _is_hats(path):
        from survey_engine.catalog.catalog import open_catalog

        cat = open_catalog(path)
        margin_rows = cat.margin.row_count() if cat.margin is not None else None
        return cls(path, cat.row_count(), cat.npartitions, margin_rows, details)
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet"))
    return cls(path, sum(pq.read_metadata(f).num_rows for f in files), len(files), None, details)


__all__ = ["import_catalog", "ingest_tap", "crossmatch", "train", "predict", "evaluate", "cluster", "run_job",
           "CatalogResult", "ClusterResult", "ModelResult", "MetricsResult", "JobResult", "ApiError"]
