"""Arguments and runs of the mock-data commands ``mock`` and ``mock-lightcurves``; the same
declarations are the job spec's ``mock`` and ``mock_lightcurves`` sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from survey_engine.arguments import AT_LEAST_1, StageResult, param, positive_int

SURVEYS = ("sky", "astrometric", "photometric")  # survey_engine.mock.surveys.SURVEYS
CADENCES = ("dense", "sparse")


@dataclass
class MockArguments:
    """A deterministic mock sky (stars, galaxies, QSOs), or one of two surveys of it, as Parquet files."""

    rows: int = param(
        help="number of rows (stars, galaxies, QSOs) of the mock sky",
        type=int,
        required=True,
        check=AT_LEAST_1,
        parse=positive_int,
    )
    out: str = param(
        help="output folder for the Parquet files and mock.json",
        role="output",
        required=True,
        yaml=None,
        job="output",
    )
    seed: int = param(42, "random seed: the same seed gives the same sky (default 42)", type=int)
    survey: str = param(
        "sky",
        "the whole mock sky (default), or one of two surveys of it: astrometric (Gaia-like, "
        "epoch 2016.0) or photometric (SDSS-like, epoch 2005.0, spectra on part of the sky)",
        choices=SURVEYS,
    )


def run_mock(args: MockArguments, client=None, progress: bool = True) -> StageResult:
    if args.survey != "sky":
        from survey_engine.mock.surveys import write_survey

        n = write_survey(args.survey, args.rows, args.out, seed=args.seed, client=client, progress=progress)
        line = f"mock {args.survey} survey: {n:,} rows of a {args.rows:,}-row sky (seed {args.seed}) under {args.out}"
        return StageResult(line, {"rows": n, "mock": True}, Path(args.out))
    from survey_engine.mock.sky import write_mock_sky

    files = write_mock_sky(args.rows, args.out, seed=args.seed, client=client, progress=progress)
    line = f"{args.rows:,} mock rows (seed {args.seed}) in {len(files)} Parquet files under {args.out}"
    return StageResult(line, {"rows": args.rows, "mock": True}, Path(args.out))


@dataclass
class MockLightcurvesArguments:
    """Deterministic mock objects (variable and constant stars) and their detections."""

    objects: int = param(
        help="number of objects", type=int, required=True, check=AT_LEAST_1, parse=positive_int
    )
    out: str = param(
        help="output folder: objects/ and detections/ (Parquet)",
        role="output",
        required=True,
        yaml=None,
        job="output",
    )
    cadence: str = param(
        "dense",
        "dense: ZTF-like g and r every few nights; sparse: Gaia-like G in visit pairs (default dense)",
        choices=CADENCES,
    )
    seed: int = param(42, "random seed (default 42)", type=int)


def run_mock_lightcurves(args: MockLightcurvesArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.mock.lightcurves import write_mock_lightcurves

    counts = write_mock_lightcurves(
        args.objects, args.out, seed=args.seed, cadence=args.cadence, client=client, progress=progress
    )
    line = f"{counts['objects']:,} objects, {counts['detections']:,} detections ({args.cadence} cadence) -> {args.out}"
    return StageResult(line, {**counts, "mock_lightcurves": True}, Path(args.out))
