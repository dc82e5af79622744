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
            raise ApiError(
                f"{self.path}: holds Parquet files, not a HATS collection; read it with pandas.read_parquet"
            )
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


# --- the stages: one function per command, generated from the registry -----------------------

CONTRACT = {
    "import": "import_catalog",
    "ingest": "ingest_tap",
    "margin": "add_margin",
    "crossmatch": "crossmatch",
    "features": "compute_features",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "cluster": "cluster",
    "lightcurves": "attach_lightcurves",
    "variability": "variability",
    "run": "run_job",
}


def _check(face, value) -> None:
    """The declared choices and checks, as the job spec applies them, with the keyword's name."""
    if value is None:
        return
    p = face.param
    if p.choices and value not in p.choices:
        raise ApiError(f"{face.name} must be one of {', '.join(p.choices)}; got {value!r}")
    if (
        p.check is not None
        and p.type in (int, float)
        and isinstance(value, int | float)
        and not p.check[0](value)
    ):
        raise ApiError(f"{face.name} must be {p.check[1]}, got {value!r}")


def _result(kind: str, result, details: dict):
    """The stage's result object: a catalog, a model, metrics or a job."""
    if kind == "train":
        return ModelResult(Path(result.out), details["task"], result.data)
    if kind == "evaluate":
        return MetricsResult(result.data, result.out)
    if kind == "run":
        spec, outputs, summary = result.data
        status = "valid" if result.info.get("status") == "valid" else summary.get("status", "ok")
        return JobResult(spec.name, spec.workdir, status, outputs, summary)
    if kind == "cluster":
        summary = result.data
        out = _catalog_result(ClusterResult, result.out, summary)
        out.n_clusters, out.noise, out.clusters = (
            int(summary["n_clusters"]),
            int(summary["noise"]),
            summary["clusters"],
        )
        return out
    return _catalog_result(CatalogResult, result.out, details)


def _stage_function(kind: str, name: str):
    """``survey_engine.<name>``: the command ``kind`` with its declared arguments as parameters."""
    import inspect

    from survey_engine.arguments import MISSING, build, faces
    from survey_engine.commands import commands
    from survey_engine.registry import runtime_names

    stage = commands()[kind]
    declared = sorted(
        (f for f in faces(stage.arguments) if f.param.cli), key=lambda f: f.param.role != "positional"
    )
    params = []
    for face in declared:
        positional = face.param.role == "positional"
        kind_ = inspect.Parameter.POSITIONAL_OR_KEYWORD if positional else inspect.Parameter.KEYWORD_ONLY
        default = inspect.Parameter.empty if face.required and face.default is MISSING else face.default
        annotation = stage.arguments.__annotations__.get(face.field, inspect.Parameter.empty)
        params.append(inspect.Parameter(face.name, kind_, default=default, annotation=annotation))
    extra = runtime_names(stage)
    params += [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=False if n == "no_progress" else None)
        for n in extra
    ]
    params.append(inspect.Parameter("client", inspect.Parameter.KEYWORD_ONLY, default=None))
    signature = inspect.Signature(params)

    def call(*args, **kwargs):
        from survey_engine.errors import UsageError
        from survey_engine.runtime import dask_client

        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        client, workers, no_progress = (
            values.pop("client"),
            values.pop("workers", None),
            values.pop("no_progress", False),
        )
        storage_options = values.pop("storage_options", None)
        for face in declared:
            value = values[face.name]
            if face.param.nargs and isinstance(value, str | Path):
                value = [value]
            if isinstance(value, list | tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            values[face.name] = str(value) if isinstance(value, Path) else value
            _check(face, values[face.name])
        from survey_engine.catalog.storage import storage_options_given

        with storage_options_given(storage_options):
            try:
                stage_args = build(stage.arguments, values)
            except UsageError as exc:
                raise ApiError(str(exc)) from None
            if stage.cluster:
                with dask_client(client, n_workers=workers) as live:
                    result = stage.run(stage_args, client=live, progress=not no_progress)
            else:
                result = stage.run(stage_args, client=client, progress=not no_progress)
        details = {**values, "summary": result.line, **result.info, **_fields(result.data)}
        return _result(kind, result, details)

    call.__name__ = call.__qualname__ = name
    call.__signature__ = signature
    call.__doc__ = f"``survey-engine {kind}``: {stage.help}.\n\n{stage.arguments.__doc__ or ''}"
    return call


def _fields(data) -> dict:
    """A stage result's own fields (a dataclass), for ``details``."""
    import dataclasses

    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    return {}


# --- helpers ---------------------------------------------------------------------------------


def _is_hats(path) -> bool:
    from survey_engine.catalog import storage

    return storage.exists(path / "collection.properties") or storage.exists(path / "hats.properties")


def _catalog_result(cls, path, details: dict):
    """Counts of a written output from its metadata (no data read); local or remote (``s3://``)."""
    from survey_engine.catalog import storage

    path = storage.as_path(path)
    if _is_hats(path):
        from survey_engine.catalog.catalog import open_catalog

        cat = open_catalog(path)
        margin_rows = cat.margin.row_count() if cat.margin is not None else None
        return cls(path, cat.row_count(), cat.npartitions, margin_rows, details)
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet"))
    return cls(path, sum(pq.read_metadata(f).num_rows for f in files), len(files), None, details)


for _kind, _name in CONTRACT.items():
    globals()[_name] = _stage_function(_kind, _name)

__all__ = [
    *CONTRACT.values(),
    "CatalogResult",
    "ClusterResult",
    "ModelResult",
    "MetricsResult",
    "JobResult",
    "ApiError",
]
