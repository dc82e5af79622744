"""What a file import and a TAP ingest share: the catalog they build (as hats-import's
``RuntimeArguments``). Keyword-only, so that each pipeline's own required fields stay positional."""

from __future__ import annotations

from dataclasses import dataclass

from survey_engine.arguments import AT_LEAST_1, NOT_NEGATIVE, param, within
from survey_engine.ingest.readers import InputError

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_MARGIN_ARCSEC = 5.0
DEFAULT_HIGHEST_ORDER = 10


@dataclass
class CatalogBuildArguments:
    """The partitioning, margin and name of the HATS catalog an import or an ingest writes."""

    max_rows: int = param(
        DEFAULT_MAX_ROWS,
        "most rows per partition (default 1,000,000)",
        type=int,
        check=AT_LEAST_1,
        kw_only=True,
    )
    highest_order: int = param(
        DEFAULT_HIGHEST_ORDER,
        "highest HEALPix order of a partition (default 10)",
        type=int,
        check=within(0, 13),
        kw_only=True,
    )
    margin_arcsec: float | None = param(
        DEFAULT_MARGIN_ARCSEC,
        "margin radius in arcsec (default 5; 0 for none)",
        name="margin",
        type=float,
        check=NOT_NEGATIVE,
        kw_only=True,
    )
    name: str | None = param(
        None,
        "catalog name (default: the output folder's name; in a job: the stage id)",
        yaml=None,
        job="stage_id",
        kw_only=True,
    )

    def check_catalog_build(self) -> None:
        """Validate the shared fields (messages name the CLI flag); ``margin 0`` means none."""
        if self.max_rows is None or int(self.max_rows) < 1:
            raise InputError(f"--max-rows must be a positive number of rows, got {self.max_rows}")
        if not 0 <= int(self.highest_order) <= 13:
            raise InputError(f"--highest-order must be within 0..13, got {self.highest_order}")
        if self.margin_arcsec is not None and not float(self.margin_arcsec) >= 0:
            raise InputError(f"--margin must be >= 0 arcsec (0 for none), got {self.margin_arcsec}")
        if self.margin_arcsec is not None and float(self.margin_arcsec) == 0:
            self.margin_arcsec = None
        if self.margin_arcsec is not None and float(self.margin_arcsec) > 3600 * 10:
            raise InputError(
                f"--margin of {self.margin_arcsec} arcsec is larger than 10 degrees; use a smaller margin"
            )
