"""Arguments and run of ``crossmatch`` (declared once; see ``survey_engine.arguments``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from survey_engine.arguments import (
    AT_LEAST_1,
    NAME_LIST,
    NOT_NEGATIVE,
    NUMBER_OR_NAME,
    POSITIVE,
    StageResult,
    param,
    positive_int,
)
from survey_engine.crossmatch.algorithms import ALGORITHMS
from survey_engine.crossmatch.tasks import HOWS, JOINS
from survey_engine.errors import UsageError

ALGORITHM_NAMES = tuple(ALGORITHMS)


def _pair(what: str, flag: str):
    def check(value: list[str]) -> tuple[str, str]:
        if len(value) != 2:
            raise UsageError(f"{flag} takes two comma-separated {what}, got {','.join(value)!r}")
        return tuple(value)

    return check


@dataclass
class CrossmatchArguments:
    """Match LEFT against RIGHT within a radius; the output is partitioned like LEFT."""

    left: Any = param(
        help="left catalog or collection (the output is partitioned like it)",
        role="positional",
        ref="catalog",
    )
    right: Any = param(
        help="right catalog or collection; its margin must cover the radius (see --build-margin)",
        role="positional",
        ref="catalog",
    )
    radius: float = param(help="match radius in arcsec", type=float, required=True, check=POSITIVE)
    out: str = param(help="output collection folder", role="output", required=True, yaml=None, job="output")
    how: str = param(
        "nearest",
        "nearest right row (default), the --k nearest, all within the radius, or one-to-one "
        "(each row used once)",
        choices=HOWS,
    )
    k: int = param(
        1, "neighbours per left row with --how knn", type=int, check=AT_LEAST_1, parse=positive_int
    )
    join: str = param(
        "inner",
        "inner: matched left rows (default); left: every left row; outer: left plus unmatched right rows",
        choices=JOINS,
    )
    min_radius: float = param(0.0, "drop pairs closer than this (arcsec)", type=float, check=NOT_NEGATIVE)
    exclude_self: bool = param(
        False, "self-match: never match a row with itself", type=bool, flags=("--self",), yaml="self"
    )
    suffixes: tuple[str, str] = param(
        "_1,_2",
        "column suffixes for left,right (default _1,_2)",
        type=NAME_LIST,
        convert=_pair("suffixes", "--suffixes"),
        check=(lambda v: len(v) == 2 and v[0] != v[1], "two different strings"),
    )
    build_margin: bool = param(
        False, "build a right margin as wide as the radius if the stored one is narrower", type=bool
    )
    algorithm: str = param(
        "zones",
        "matching kernel: zones (compiled declination-zone sweep, default), kdtree (scipy "
        "cKDTree), grid (sorted-grid kernel, NumPy), gpu (the grid kernel on CuPy); all give the "
        "same pairs",
        choices=ALGORITHM_NAMES,
    )
    gpu: bool = param(
        False,
        "same as --algorithm gpu; falls back to the CPU grid kernel with a message where no GPU exists",
        type=bool,
    )
    epoch: float | None = param(
        None, "compare positions at this epoch (Julian year, e.g. 2016.0)", type=float
    )
    left_epoch: float | str | None = param(
        None, "epoch of the left catalog: a year, or the name of a per-row epoch column", type=NUMBER_OR_NAME
    )
    right_epoch: float | str | None = param(
        None, "epoch of the right catalog: a year, or a per-row epoch column", type=NUMBER_OR_NAME
    )
    pm_columns: tuple[str, str] = param(
        "pmra,pmdec",
        "proper-motion columns (pmra including cos dec), mas/yr; default pmra,pmdec",
        type=NAME_LIST,
        convert=_pair("names", "--pm-columns"),
    )

    def epoch_spec(self, value):
        """A side's epoch (a Julian year, or the name of a per-row epoch column) with the proper motions."""
        from survey_engine.crossmatch.epochs import EpochSpec

        if value is None:
            return None
        try:
            return EpochSpec(float(value), *self.pm_columns)
        except ValueError:
            return EpochSpec(value, *self.pm_columns)

    def algorithm_object(self):
        """The cross-match algorithm object these options describe (``--gpu`` picks the gpu
        kernel); it checks the radius, how, k, min radius and self options once, here."""
        from survey_engine.crossmatch.algorithms import method_for

        return method_for(
            "gpu" if self.gpu else self.algorithm,
            radius_arcsec=self.radius,
            how=self.how,
            k=self.k,
            min_radius_arcsec=self.min_radius,
            exclude_self=self.exclude_self,
        )


def run_crossmatch(args: CrossmatchArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.catalog.catalog import Catalog, open_catalog
    from survey_engine.crossmatch.match import crossmatch

    left, right = (
        side if isinstance(side, Catalog) else open_catalog(side) for side in (args.left, args.right)
    )
    planned = crossmatch(
        left,
        right,
        algorithm=args.algorithm_object(),
        join=args.join,
        suffixes=args.suffixes,
        build_margin=args.build_margin,
        epoch=args.epoch,
        left_epoch=args.epoch_spec(args.left_epoch),
        right_epoch=args.epoch_spec(args.right_epoch),
        client=client,
    )
    out = planned.write(args.out, client=client, progress=progress)
    matched = open_catalog(out)
    info = {
        "rows": matched.row_count(),
        "how": args.how,
        "join": args.join,
        "radius_arcsec": args.radius,
        "algorithm": planned.params.algorithm,
    }
    if args.how in ("nearest", "one-to-one"):
        # one row per matched left row: the share of the left catalog that found a counterpart
        pairs = int(matched.select_columns(["sep_arcsec"]).to_dask()["sep_arcsec"].count().compute())
        info.update(
            {
                "matched": pairs,
                "left_rows": left.row_count(),
                "match_rate": round(pairs / max(left.row_count(), 1), 5),
            }
        )
    if args.epoch is not None:
        info["epoch"] = args.epoch
    line = f"{info['rows']:,} rows ({args.how}, {args.join} join, radius {args.radius:g} arcsec) -> {out}"
    return StageResult(line, info, out)
