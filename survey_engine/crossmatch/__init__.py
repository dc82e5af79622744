"""Cross-matching catalogs across partitions: exact at every partition edge.

This package is also callable: ``survey_engine.crossmatch(left, right, radius=..., out=...)`` is
the stage function ``survey_engine.api.crossmatch`` (the ``survey-engine crossmatch`` command),
whatever was imported before (importing ``survey_engine.crossmatch.match`` sets the attribute
``survey_engine.crossmatch`` to this package, so the package itself answers the call).
``survey_engine.crossmatch.crossmatch`` stays the lazy planner that ``Catalog.crossmatch`` uses;
it takes the algorithm objects exported here (``KDTreeCrossmatch(radius_arcsec=1.0)``, ...) as
``algorithm=``.
"""

import sys
import types

from survey_engine.crossmatch.algorithms import (
    CrossmatchMethod,
    GPUCrossmatch,
    GridCrossmatch,
    KDTreeCrossmatch,
    ZonesCrossmatch,
)
from survey_engine.crossmatch.match import CrossmatchResult, crossmatch
from survey_engine.crossmatch.plan import MarginTooSmallError


class _CallablePackage(types.ModuleType):
    """A package whose call runs ``survey_engine.api.crossmatch``."""

    def __call__(self, /, *args, **kwargs):
        from survey_engine.api import crossmatch as run_crossmatch

        return run_crossmatch(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        from survey_engine.api import crossmatch as run_crossmatch

        return inspect.signature(run_crossmatch)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = [
    "crossmatch",
    "CrossmatchResult",
    "MarginTooSmallError",
    "CrossmatchMethod",
    "ZonesCrossmatch",
    "KDTreeCrossmatch",
    "GridCrossmatch",
    "GPUCrossmatch",
]
