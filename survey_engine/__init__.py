"""survey_engine: a distributed batch engine for astronomical survey catalogs.

HEALPix-partitioned catalogs in the HATS layout, built from files, TAP services or the mock sky,
processed with Dask. ``open_catalog`` is the entry point of the Python API; every CLI stage has a
function with the command's parameters (``import_catalog``, ``ingest_tap``, ``crossmatch``,
``add_margin``, ``compute_features``, ``train``, ``predict``, ``evaluate``, ``cluster``,
``attach_lightcurves``, ``variability``, ``run_job``; see ``survey_engine.api``, built from
``survey_engine.registry``),
imported on first use so that ``import survey_engine`` stays light.
"""

from pathlib import Path  # noqa: E402

from survey_engine.catalog.catalog import Catalog, open_catalog  # noqa: E402
from survey_engine.version import __version__


def _catalog_crossmatch(self: Catalog, other: Catalog, radius_arcsec: float | None = None, **kwargs):
    """Lazy cross-match with ``other`` (see ``survey_engine.crossmatch.crossmatch`` for options);
    ``algorithm=KDTreeCrossmatch(radius_arcsec=1.0, ...)`` carries the match parameters instead."""
    from survey_engine.crossmatch.match import crossmatch

    return crossmatch(self, other, radius_arcsec, **kwargs)


def _catalog_write(
    self: Catalog,
    out,
    name: str | None = None,
    client=None,
    progress: bool = False,
    properties: dict | None = None,
):
    """Write this (derived) catalog, and its margin if any, as a new HATS collection at ``out``
    (a folder, or an ``s3://`` location); ``properties``: extra keys for its hats.properties."""
    from survey_engine.catalog import storage
    from survey_engine.catalog.writer import write_catalog

    return write_catalog(
        self,
        out if storage.is_remote(out) else Path(out),
        name=name,
        client=client,
        progress=progress,
        properties=properties,
    )


# the lazy Catalog (catalog/catalog.py) reads; what writes or matches it is attached here, from
# above, so that neither the writer nor the cross-match is imported by the module they work on
Catalog.crossmatch = _catalog_crossmatch
Catalog.write = _catalog_write


def verify_catalog(path, repair: bool = False, client=None, progress: bool = False):
    """Check a whole catalog or collection (see ``survey_engine.catalog.verify``); a ``VerifyReport``."""
    from survey_engine.catalog.verify import verify_catalog as _verify

    return _verify(path, repair=repair, client=client, progress=progress)


# the stage functions live in survey_engine.api; ``crossmatch`` is the subpackage of that name,
# made callable (survey_engine/crossmatch/__init__.py), so that submodule imports keep working
_API = (
    "import_catalog",
    "ingest_tap",
    "add_margin",
    "compute_features",
    "train",
    "predict",
    "evaluate",
    "cluster",
    "attach_lightcurves",
    "variability",
    "run_job",
    "CatalogResult",
    "ClusterResult",
    "ModelResult",
    "MetricsResult",
    "JobResult",
)


def __getattr__(name: str):
    if name == "crossmatch":
        import importlib

        return importlib.import_module("survey_engine.crossmatch")
    if name in _API:
        from survey_engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'survey_engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | {"crossmatch"})


__all__ = ["Catalog", "open_catalog", "verify_catalog", "crossmatch", *_API, "__version__"]
