"""survey_engine: a distributed batch engine for astronomical survey catalogs.

HEALPix-partitioned catalogs in the HATS layout, built from files, TAP services or the mock sky,
processed with Dask. ``open_catalog`` is the entry point of the Python API.
"""

__version__ = "0.1.0"

from survey_engine.catalog.catalog import Catalog, open_catalog  # noqa: E402


def verify_catalog(path, repair: bool = False, client=None, progress: bool = False):
    """Check a whole catalog or collection (see ``survey_engine.catalog.verify``); a ``VerifyReport``."""
    from survey_engine.catalog.verify import verify_catalog as _verify

    return _verify(path, repair=repair, client=client, progress=progress)


__all__ = ["Catalog", "open_catalog", "verify_catalog", "__version__"]
