"""Cross-matching catalogs across partitions: exact at every partition edge."""

from survey_engine.crossmatch.match import CrossmatchResult, crossmatch
from survey_engine.crossmatch.plan import MarginTooSmallError

__all__ = ["crossmatch", "CrossmatchResult", "MarginTooSmallError"]
