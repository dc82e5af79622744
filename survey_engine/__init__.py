"""survey_engine: a distributed batch engine for astronomical survey catalogs.

HEALPix-partitioned catalogs in the HATS layout, built from files, TAP services or the mock sky,
processed with Dask. ``open_catalog`` is the entry point of the Python API.
"""

__version__ = "0.1.0"

from survey_engine.catalog.catalog import Catalog, open_catalog  # noqa: E402

__all__ = ["Catalog", "open_catalog", "__version__"]
