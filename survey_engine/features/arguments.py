"""Arguments and runs of the feature stages: ``features`` (photometric features as columns) and
``variability`` (light-curve features per band); declared once, see ``survey_engine.arguments``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from survey_engine.arguments import AT_LEAST_1, NAME_LIST, NAMES, POSITIVE, StageResult, param, positive_int


@dataclass
class FeaturesArguments:
    """A catalog with the named features as columns (plus the columns in ``keep``, default all)."""

    catalog: str = param(help="a HATS catalog or collection", required=True, ref="catalog")
    features: list[str] = param(
        help="comma-separated features: columns, colours like u-g, dered(r), snr(err), absmag(g), ...",
        type=NAME_LIST,
        required=True,
        check=NAMES,
    )
    out: str = param(help="output collection folder", role="output", required=True, yaml=None, job="output")
    ebv: str | None = param(None, "E(B-V) column: colours and dered() are corrected for extinction")
    missing: str = param(
        "nan",
        "missing/sentinel values: NaN (default), impute medians, or drop rows",
        choices=("nan", "impute", "drop"),
    )
    keep: list[str] | None = param(
        None, "columns to keep beside the features, comma-separated (default: all)", type=NAME_LIST
    )


class _AddFeatures:
    """Per partition: the kept columns plus the computed features (a class, so Dask can pickle it)."""

    def __init__(self, spec, keep, ra, dec):
        self.spec, self.keep, self.ra, self.dec = spec, keep, ra, dec

    def __call__(self, df):
        from survey_engine.features.spec import with_columns

        wanted = dict.fromkeys([self.ra, self.dec, *self.keep]) if self.keep is not None else None
        base = df if wanted is None else df[[c for c in wanted if c in df.columns]]
        return with_columns(base, self.spec.compute(df))


def run_features(args: FeaturesArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.features.spec import FeatureSpec
    from survey_engine.features.variability import carried_spec

    cat = open_catalog(str(args.catalog))
    spec = FeatureSpec(
        args.features,
        ebv_column=args.ebv,
        missing=args.missing,
        ra_column=cat.ra_column,
        dec_column=cat.dec_column,
    )
    spec.plan(cat.column_names())  # a FeatureError naming the missing column, before any work
    mapped = cat.map_partitions(_AddFeatures(spec, args.keep, cat.ra_column, cat.dec_column))
    out = mapped.write(str(args.out), client=client, progress=progress, properties=carried_spec(cat))
    rows = open_catalog(out).row_count()
    info = {"features": list(spec.features), "rows": rows}
    return StageResult(f"{rows:,} rows with {len(spec.features)} features -> {out}", info, out)


@dataclass
class VariabilityArguments:
    """Variability features of every object's light curve, per band."""

    catalog: str = param(
        help="catalog with nested light curves (from survey-engine lightcurves)", required=True, ref="catalog"
    )
    out: str = param(
        help="output collection: object columns plus <band>_<feature> columns",
        role="output",
        required=True,
        yaml=None,
        job="output",
    )
    bands: list[str] = param(
        help="bands to compute, comma-separated (default: every band found)",
        type=NAME_LIST,
        default_factory=list,
    )
    min_epochs: int = param(10, "fewest detections for features; fewer give NaN (default 10)", type=int)
    min_period: float = param(0.05, "shortest period searched, days (default 0.05)", type=float)
    max_period: float | None = param(
        None, "longest period searched, days (default: the light curve's time span)", type=float
    )
    lc_column: str = param("lc", "the nested light-curve column (default lc)")
    samples_per_peak: float = param(
        1.5,
        "periodogram samples per peak width of the coarse search (at least; the grid is a power of 2); "
        "its 5 best peaks are refined 40x finer (default 1.5)",
        type=float,
        check=POSITIVE,
    )
    harmonics: int = param(
        3,
        "Fourier harmonics fitted at the best period (default 3)",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
    )
    like_model: str | None = param(
        None,
        "compute with the options of the variability features a model was trained on (its folder); "
        "they replace --bands, --min-epochs, --min-period, --max-period, --samples-per-peak, --harmonics",
        ref="model",
        metavar="MODEL_DIR",
    )


def run_variability(args: VariabilityArguments, client=None, progress: bool = True) -> StageResult:
    from survey_engine.features.variability import VariabilitySpec, spec_of_model, variability_catalog

    if args.like_model is not None:
        from survey_engine.ml.artifact import load_model  # checks the model folder (checksums) first

        spec = spec_of_model(load_model(str(args.like_model))[0], str(args.like_model))
    else:
        spec = VariabilitySpec(
            bands=args.bands,
            min_epochs=args.min_epochs,
            min_period=args.min_period,
            max_period=args.max_period,
            samples_per_peak=args.samples_per_peak,
            harmonics=args.harmonics,
        )
    r = variability_catalog(
        str(args.catalog), str(args.out), spec, lc_column=args.lc_column, client=client, progress=progress
    )
    return StageResult(r.summary(), {"rows": r.rows, "features": len(r.columns)}, Path(args.out), r)
