"""Arguments and runs of the catalog commands: ``margin``, ``info``, ``verify`` (declared once; see
``survey_engine.arguments``)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from survey_engine.arguments import POSITIVE, StageResult, param


@dataclass
class MarginArguments:
    """Add a margin catalog (rows within ``radius`` of each partition's border) beside a catalog."""

    catalog: str = param(
        help="a catalog or collection folder; the margin lands beside the catalog, in its collection",
        role="positional",
        ref="catalog",
    )
    radius: float = param(help="margin radius in arcsec", type=float, required=True, check=POSITIVE)
    out: str | None = param(
        None,
        "write the catalog with its margin here (hard links to the partitions) instead of "
        "adding the margin in place",
        role="output",
        yaml=None,
        job="output",
    )


def run_margin(args: MarginArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.catalog.margin_build import build_margin

    target = args.catalog
    if args.out is not None:  # a copy of the catalog (hard links: no data copied) that gets the margin
        shutil.copytree(args.catalog, args.out, copy_function=os.link)
        target = args.out
    path = build_margin(str(target), float(args.radius), client=client, progress=progress)
    return StageResult(
        f"margin of {args.radius:g} arcsec written to {path}", {"radius_arcsec": args.radius}, target
    )


@dataclass
class InfoArguments:
    """Describe a catalog or collection."""

    catalog: str = param(help="a catalog or collection folder", role="positional")


def run_info(args: InfoArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.catalog.catalog import open_catalog

    cat = open_catalog(args.catalog)
    lines = [
        str(cat),
        f"rows: {cat.row_count():,}; partitions: {cat.npartitions}; orders: {sorted(set(cat.partitions.Norder))}",
    ]
    if cat.margin is not None:
        lines.append(f"margin: {cat.margin_radius_arcsec:g} arcsec, {cat.margin.row_count():,} rows")
    return StageResult("\n".join(lines), {"rows": cat.row_count()}, Path(args.catalog), cat)


@dataclass
class VerifyArguments:
    """Check a whole catalog or collection: every file, the metadata, the margin."""

    catalog: str = param(help="a catalog or collection folder", role="positional")
    repair: bool = param(
        False,
        "rebuild what the partition files determine (partition_info.csv, _metadata, point map, "
        "hats_nrows, margins)",
        type=bool,
    )


def run_verify(args: VerifyArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.catalog.verify import verify_catalog

    report = verify_catalog(args.catalog, repair=args.repair, client=client, progress=progress)
    return StageResult(
        report.text(), {"ok": report.ok}, Path(args.catalog), report, exit_code=0 if report.ok else 1
    )
