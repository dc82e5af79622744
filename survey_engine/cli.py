"""The ``survey-engine`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from survey_engine import __version__


def _positive_int(text: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


NO_PROGRESS = "show no progress bars"
WORKERS = "local Dask workers, one process and thread each (default: one per core, at most 8)"
VERBOSE = "show distributed's INFO log lines and XGBoost's per-worker messages (hidden by default)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="survey-engine", description="Distributed batch engine for astronomical survey catalogs.")
    parser.add_argument("--version", action="version", version=f"survey_engine {__version__}")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import", help="import CSV / Parquet / FITS / VOTable files into a HATS collection")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
    p.add_argument("--out", required=True, help="output collection folder")
    p.add_argument("--ra", default="auto", help="RA column (degrees; default auto: the column whose UCD is pos.eq.ra;meta.main, else the one named ra)")
    p.add_argument("--dec", default="auto", help="Dec column (degrees; default auto: UCD pos.eq.dec;meta.main, else the column named dec)")
    p.add_argument("--id", default=None, help="id column (optional; must have no empty values)")
    p.add_argument("--max-rows", type=int, default=1_000_000, help="most rows per partition (default 1,000,000)")
    p.add_argument("--highest-order", type=int, default=10, help="highest HEALPix order of a partition (default 10)")
    p.add_argument("--margin", type=float, default=5.0, help="margin radius in arcsec (default 5; 0 for none)")
    p.add_argument("--name", default=None, help="catalog name (default: the output folder's name)")
    p.add_argument("--drop-invalid", action="store_true", help="drop rows with missing/NaN RA/Dec or Dec outside [-90, 90] (counted) instead of failing")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    p = sub.add_parser("ingest", help="ingest a table from a TAP service (paged ADQL) into a HATS collection")
    p.add_argument("--tap", required=True, metavar="URL", help="TAP service URL, or a named service: gaia, vizier, simbad, irsa, noirlab")
    p.add_argument("--table", required=True, help="table name, e.g. gaiadr3.gaia_source")
    p.add_argument("--columns", default=None, help="comma-separated columns (default: all; ra/dec/id are always added)")
    p.add_argument("--where", default=None, help="ADQL condition, ANDed with the paging predicate")
    p.add_argument("--ra", default="ra", help="RA column (default ra)")
    p.add_argument("--dec", default="dec", help="Dec column (default dec)")
    p.add_argument("--id", default=None, help="unique id column (checked for duplicates; needed by id and keyset paging)")
    p.add_argument("--order", type=int, default=3, help="HEALPix order the plan starts from (default 3)")
    p.add_argument("--max-order", type=int, default=20, help="deepest order a dense page may split to (default 20)")
    p.add_argument("--page-rows", type=_positive_int, default=100_000, help="most rows per query (MAXREC; default 100,000)")
    p.add_argument("--pages-in-flight", type=_positive_int, default=4, help="queries (pages) running at once (default 4)")
    p.add_argument("--paging", choices=["auto", "healpix", "contains", "id", "keyset"], default="auto",
                   help="how to cut the request (default auto: healpix if the service has ivo_healpix_index)")
    p.add_argument("--async", dest="async_mode", action="store_true", help="use asynchronous (UWS) jobs instead of sync queries")
    p.add_argument("--retries", type=int, default=6, help="retries per page on timeouts and 5xx answers (default 6)")
    p.add_argument("--min-interval", type=float, default=0.0, help="politeness: seconds between query starts (default 0)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    p.add_argument("--token-env", default="SURVEY_ENGINE_TAP_TOKEN",
                   help="environment variable holding a bearer token, if the service needs one (never logged)")
    p.add_argument("--max-rows", type=int, default=1_000_000, help="most rows per catalog partition (default 1,000,000)")
    p.add_argument("--margin", type=float, default=5.0, help="margin radius in arcsec (default 5; 0 for none)")
    p.add_argument("--name", default=None, help="catalog name (default: the output folder's name)")
    p.add_argument("--out", required=True, help="output collection folder")
    p.add_argument("--workers", "--dask-workers", dest="workers", type=_positive_int, default=None,
                   help=WORKERS + "; they build the catalog from the pages (--dask-workers: the old name)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    p = sub.add_parser("margin", help="add a margin catalog to an existing catalog or collection")
    p.add_argument("catalog", help="a catalog or collection folder; the margin lands beside the catalog, in its collection")
    p.add_argument("--radius", type=float, required=True, help="margin radius in arcsec")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    p = sub.add_parser("mock", help="write a deterministic mock sky (Parquet files) of any size")
    p.add_argument("--rows", type=_positive_int, required=True, help="number of rows (stars, galaxies, QSOs) of the mock sky")
    p.add_argument("--out", required=True, help="output folder for the Parquet files and mock.json")
    p.add_argument("--seed", type=int, default=42, help="random seed: the same seed gives the same sky (default 42)")
    p.add_argument("--survey", choices=["sky", "astrometric", "photometric"], default="sky",
                   help="the whole mock sky (default), or one of two surveys of it: astrometric (Gaia-like, epoch 2016.0) "
                   "or photometric (SDSS-like, epoch 2005.0, spectra on part of the sky)")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    p = sub.add_parser("demo", help="the main job end to end on two mock surveys of one sky: catalogs, cross-match with proper "
                       "motions, photo-z, classification, open clusters, anomalies, report.html")
    p.add_argument("--rows", type=_positive_int, default=600_000, help="rows of the mock sky both surveys are cut from (default 600,000)")
    p.add_argument("--out", default="survey-engine-demo",
                   help="work directory (default survey-engine-demo): every stage's output, run_summary.json, report.html; "
                   "a re-run reuses finished stages")
    p.add_argument("--seed", type=int, default=42, help="seed of the mock sky (default 42)")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    p = sub.add_parser("crossmatch", help="cross-match two catalogs (exact at every partition edge)")
    p.add_argument("left", help="left catalog or collection (the output is partitioned like it)")
    p.add_argument("right", help="right catalog or collection; its margin must cover the radius (see --build-margin)")
    p.add_argument("--radius", type=float, required=True, help="match radius in arcsec")
    p.add_argument("--how", choices=["nearest", "knn", "all", "one-to-one"], default="nearest",
                   help="nearest right row (default), the --k nearest, all within the radius, or one-to-one (each row used once)")
    p.add_argument("--k", type=_positive_int, default=1, help="neighbours per left row with --how knn")
    p.add_argument("--join", choices=["inner", "left", "outer"], default="inner",
                   help="inner: matched left rows (default); left: every left row; outer: left plus unmatched right rows")
    p.add_argument("--min-radius", type=float, default=0.0, help="drop pairs closer than this (arcsec)")
    p.add_argument("--self", dest="exclude_self", action="store_true", help="self-match: never match a row with itself")
    p.add_argument("--suffixes", default="_1,_2", help="column suffixes for left,right (default _1,_2)")
    p.add_argument("--build-margin", action="store_true", help="build a right margin as wide as the radius if the stored one is narrower")
    p.add_argument("--algorithm", choices=["zones", "kdtree", "grid", "gpu"], default="zones",
                   help="matching kernel: zones (compiled declination-zone sweep, default), kdtree (scipy cKDTree), "
                   "grid (sorted-grid kernel, NumPy), gpu (the grid kernel on CuPy); all give the same pairs")
    p.add_argument("--gpu", action="store_true", help="same as --algorithm gpu; falls back to the CPU grid kernel with a message where no GPU exists")
    p.add_argument("--epoch", type=float, default=None, help="compare positions at this epoch (Julian year, e.g. 2016.0)")
    p.add_argument("--left-epoch", default=None, help="epoch of the left catalog: a year, or the name of a per-row epoch column")
    p.add_argument("--right-epoch", default=None, help="epoch of the right catalog: a year, or a per-row epoch column")
    p.add_argument("--pm-columns", default="pmra,pmdec", help="proper-motion columns (pmra including cos dec), mas/yr; default pmra,pmdec")
    p.add_argument("--out", required=True, help="output collection folder")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    p = sub.add_parser("train", help="train a model: photoz | classify | anomaly | pca")
    p.add_argument("task", choices=["photoz", "classify", "anomaly", "pca"],
                   help="photoz (redshift regression), classify (labels), anomaly (Isolation Forest) or pca")
    p.add_argument("--catalog", required=True, help="training data: a HATS catalog/collection, or files (CSV, Parquet, FITS, VOTable)")
    p.add_argument("--features", required=True, help="comma-separated features: columns, colours like u-g, dered(r), snr(err), absmag(g), ...")
    p.add_argument("--target", default=None, help="photoz: the spectroscopic redshift column")
    p.add_argument("--label", default=None, help="classify: the class label column")
    p.add_argument("--model-out", required=True, help="folder for the model, its report.html and metrics.json")
    p.add_argument("--gpu", action="store_true", help="train XGBoost on the GPU (device=cuda); falls back to the CPU with a message")
    p.add_argument("--where", default=None, help="pandas query selecting training rows, e.g. \"spec_class == 'GALAXY'\"")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share (spatial folds when positions exist; default 0.2)")
    p.add_argument("--cv", type=int, default=0, help="also run K-fold cross-validation and report mean and spread")
    p.add_argument("--search", action="store_true", help="small hyperparameter search on an inner validation fold")
    p.add_argument("--baselines", action="store_true", help="compare with single-process XGBoost and a random forest on the same split")
    p.add_argument("--seed", type=int, default=42, help="seed of the folds, the ensemble's rotations and XGBoost (default 42)")
    p.add_argument("--members", type=_positive_int, default=None,
                   help="photoz/classify: boosters in the ensemble, each on the features plus one rotation of them (default 4; 1 = one booster)")
    p.add_argument("--class-weight", choices=["none", "sqrt", "balanced"], default="none",
                   help="classify: weight rare classes up (balanced = equal total weight per class; default none)")
    p.add_argument("--ebv", default=None, help="E(B-V) column: colours and dered() are corrected for extinction")
    p.add_argument("--missing", choices=["nan", "impute", "drop"], default=None,
                   help="missing/sentinel values: pass NaN to XGBoost (default), impute medians, or drop rows; given explicitly, text in a feature column counts as missing (else it is an error)")
    p.add_argument("--mag-column", default=None, help="column for the metrics in magnitude bins (default: r when present, else a band magnitude feature)")
    p.add_argument("--no-refit", action="store_true", help="save the evaluated model instead of refitting it on every labelled row")
    p.add_argument("--ra", default=None, help="RA column for spatial folds (default: the catalog's, or ra)")
    p.add_argument("--dec", default=None, help="Dec column for spatial folds (default: the catalog's, or dec)")
    p.add_argument("--components", type=_positive_int, default=3, help="pca: number of components")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    p = sub.add_parser("predict", help="apply a model to a whole catalog, writing a new one with the prediction columns")
    p.add_argument("--model", required=True, help="model folder written by train")
    p.add_argument("--catalog", required=True, help="a HATS catalog/collection, or files (CSV, Parquet, FITS, VOTable)")
    p.add_argument("--out", required=True, help="output: a collection for a catalog, a folder of Parquet files for files")
    p.add_argument("--missing", choices=["nan", "impute", "drop"], default=None,
                   help="text in a feature column counts as missing, handled so (default: text is an error naming the column and row)")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    p = sub.add_parser("evaluate", help="metrics of a model on a labelled catalog")
    p.add_argument("--model", required=True, help="model folder written by train")
    p.add_argument("--catalog", required=True, help="labelled data: a HATS catalog/collection, or files")
    p.add_argument("--truth", default=None, help="truth column (default: the model's target or label)")
    p.add_argument("--where", default=None, help="pandas query selecting the rows to evaluate on")
    p.add_argument("--out", default=None, help="also write the metrics as JSON here")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)

    p = sub.add_parser("cluster", help="find clusters: kmeans (global) or dbscan / hdbscan (per tile + margin, merged)")
    p.add_argument("--catalog", required=True, help="a HATS catalog or collection (with a margin for dbscan/hdbscan)")
    p.add_argument("--features", required=True, help="e.g. pmra,pmdec,parallax,pos_x,pos_y,pos_z")
    p.add_argument("--method", choices=["kmeans", "dbscan", "hdbscan"], default="hdbscan",
                   help="hdbscan (default) or dbscan per tile plus margin, merged across tiles; kmeans over the whole catalog")
    p.add_argument("--out", required=True, help="output collection folder (with cluster_id) and clusters.json")
    p.add_argument("--id", default=None, help="unique id column (default: the catalog's)")
    p.add_argument("--min-cluster-size", type=_positive_int, default=20, help="hdbscan (default 20)")
    p.add_argument("--min-samples", type=_positive_int, default=None, help="dbscan / hdbscan")
    p.add_argument("--eps", type=float, default=0.3, help="dbscan radius in robust-standardised units (default 0.3)")
    p.add_argument("--max-cluster-fraction", type=float, default=0.5, help="hdbscan: largest share of a tile one cluster may hold")
    p.add_argument("--n-clusters", type=_positive_int, default=8, help="kmeans")
    p.add_argument("--where", default=None, help="pandas query selecting the rows that take part, e.g. \"obj_class == 'STAR'\" (others get -1)")
    p.add_argument("--build-margin", action="store_true",
                   help="dbscan / hdbscan: build a margin as wide as the clusters reach where the stored one is narrower (else an error)")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    for cmd, text in (("run", "run a job spec (YAML) on a local cluster or a running scheduler"),
                      ("submit", "run a job spec on a running Dask scheduler (same as run --cluster tcp://...)")):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("job", help="job spec, e.g. jobs/photoz.yaml")
        if cmd == "run":
            p.add_argument("--cluster", default=None, help="local (default), tcp://HOST:PORT of a running scheduler, "
                           "slurm / pbs (cluster/slurm.yaml, cluster/pbs.yaml) or a cluster config FILE.yaml")
        else:
            p.add_argument("--scheduler", required=True, help="tcp://HOST:PORT")
        p.add_argument("--workdir", default=None, help="override the spec's workdir")
        p.add_argument("--security", default=None, help="cluster config whose security: section holds TLS credentials (for tls:// schedulers)")
        p.add_argument("--min-workers", type=_positive_int, default=None,
                       help="running scheduler: wait (up to 60 s) until this many workers have joined (default 1)")
        p.add_argument("--check", action="store_true", help="validate the spec and stop")
        p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    p = sub.add_parser("bench", help="benchmark suites with peers side by side: report.json, report.html, summary.md; "
                       "or `bench compare OLD NEW`")
    p.add_argument("suites", nargs="*", metavar="SUITE", help="import margins crossmatch features train predict clustering real tap e2e scaling (default: all); "
                   "or: compare OLD NEW; or: merge OLD NEW --out DIR (NEW's suites replace OLD's)")
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition: a few minutes")
    p.add_argument("--out", default="bench-report", help="report folder (default bench-report)")
    p.add_argument("--repeats", type=_positive_int, default=None, help="timed runs per case, after a warm-up (default 3; 1 with --quick)")
    p.add_argument("--workers", type=_positive_int, default=2, help="local Dask workers of every measurement (default 2)")
    p.add_argument("--threshold", type=float, default=1.2, help="compare: flag runs slower than this ratio (default 1.2)")
    p.add_argument("--sizes", type=_positive_int, nargs="+", default=None, help="row counts for every suite (instead of the defaults)")
    p.add_argument("--partition-rows", type=_positive_int, default=None,
                   help="crossmatch: at most this many rows per partition of the benchmark catalogs (default: N/10, 12 partitions)")
    p.add_argument("--max-peer-rows", type=_positive_int, default=None,
                   help="run the peers only up to this many rows (default: 10,000,000; 200,000 for single-process HDBSCAN)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="real suite: the folder of the real catalogs (default: $SURVEY_ENGINE_SHARED_DATA, else the "
                        "checkout's ../shared/data; without them the suite is skipped)")

    p = sub.add_parser("lightcurves", help="attach a detection table to an object catalog as nested per-object light curves")
    p.add_argument("--objects", required=True, help="object catalog (HATS collection or catalog) with an id column")
    p.add_argument("--detections", required=True, nargs="+", metavar="INPUT", help="detection files, folders or globs")
    p.add_argument("--out", required=True, help="output collection: the objects plus a nested light-curve column")
    p.add_argument("--id", default="object_id", help="object id column of the detections (default object_id)")
    p.add_argument("--object-id", default=None, help="the same id in the objects (default: --id)")
    p.add_argument("--time", default="time", help="detection time column, days (default time)")
    p.add_argument("--mag", default="mag", help="magnitude (or flux) column (default mag)")
    p.add_argument("--err", default="mag_err", help="its error column (default mag_err)")
    p.add_argument("--band", default="band", help="band column; 'none' for single-band detections (default band)")
    p.add_argument("--keep", default="", help="further detection columns to nest, comma-separated (e.g. flags)")
    p.add_argument("--lc-column", default="lc", help="name of the nested light-curve column (default lc)")
    p.add_argument("--require-objects", action="store_true",
                   help="refuse detections whose id is no object's (default: leave them out and count them)")
    p.add_argument("--workers", type=_positive_int, default=None, help="local Dask workers (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("variability", help="variability features of every object's light curve, per band")
    p.add_argument("--catalog", required=True, help="catalog with nested light curves (from survey-engine lightcurves)")
    p.add_argument("--out", required=True, help="output collection: object columns plus <band>_<feature> columns")
    p.add_argument("--bands", default="", help="bands to compute, comma-separated (default: every band found)")
    p.add_argument("--min-epochs", type=int, default=10, help="fewest detections for features; fewer give NaN (default 10)")
    p.add_argument("--min-period", type=float, default=0.05, help="shortest period searched, days (default 0.05)")
    p.add_argument("--max-period", type=float, default=None, help="longest period searched, days (default: the light curve's time span)")
    p.add_argument("--lc-column", default="lc", help="the nested light-curve column (default lc)")
    p.add_argument("--workers", type=_positive_int, default=None, help="local Dask workers (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("mock-lightcurves", help="write deterministic mock objects and their detections (variable stars)")
    p.add_argument("--objects", type=_positive_int, required=True, help="number of objects")
    p.add_argument("--out", required=True, help="output folder: objects/ and detections/ (Parquet)")
    p.add_argument("--cadence", choices=["dense", "sparse"], default="dense",
                   help="dense: ZTF-like g and r every few nights; sparse: Gaia-like G in visit pairs (default dense)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--workers", type=_positive_int, default=None, help="local Dask workers (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("info", help="describe a catalog or collection")
    p.add_argument("catalog", help="a catalog or collection folder")

    p = sub.add_parser("verify", help="check a whole catalog or collection (every file, the metadata, the margin); "
                                      "exit 0 when intact, 1 when damaged")
    p.add_argument("catalog", help="a catalog or collection folder")
    p.add_argument("--repair", action="store_true",
                   help="rebuild what the partition files determine (partition_info.csv, _metadata, point map, hats_nrows, margins)")
    p.add_argument("--workers", type=_positive_int, default=None, help=WORKERS)
    for command in sub.choices.values():  # --verbose also after the command (survey-engine train ... --verbose)
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        from survey_engine.runtime import set_verbose

        set_verbose(True)
    from survey_engine.errors import SurveyEngineError

    try:
        return _dispatch(args)
    except (SurveyEngineError, FileExistsError, FileNotFoundError, KeyError, ValueError, TimeoutError) as exc:
        print(f"survey-engine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"survey-engine {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    progress = not getattr(args, "no_progress", False)
    if args.command == "import":
        from survey_engine.ingest.file_import.arguments import ImportArguments
        from survey_engine.ingest.file_import.run import run_import
        from survey_engine.runtime import dask_client

        import_args = ImportArguments(
            inputs=args.inputs, out=args.out, ra_column=args.ra, dec_column=args.dec, id_column=args.id,
            max_rows=args.max_rows, highest_order=args.highest_order, margin_arcsec=args.margin,
            name=args.name, drop_invalid=args.drop_invalid,
        )
        from survey_engine.catalog.lock import output_lock

        # the lock first: a second writer to the same --out stops before starting a cluster
        with output_lock(import_args.out, " ".join(["import", *sys.argv[2:]])), dask_client(n_workers=args.workers) as client:
            result = run_import(import_args, client=client, progress=progress)
        print(result.summary())
    elif args.command == "ingest":
        import os

        from survey_engine.ingest.tap.arguments import TapIngestArguments
        from survey_engine.ingest.tap.run import run_ingest
        from survey_engine.runtime import dask_client

        ingest_args = TapIngestArguments(
            tap_url=args.tap, table=args.table, out=args.out,
            columns=args.columns.split(",") if args.columns is not None else None, where=args.where,
            ra_column=args.ra, dec_column=args.dec, id_column=args.id, order=args.order, max_order=args.max_order,
            page_rows=args.page_rows, pages_in_flight=args.pages_in_flight, paging=args.paging, mode="async" if args.async_mode else "sync",
            retries=args.retries, min_interval=args.min_interval, timeout=args.timeout,
            token=os.environ.get(args.token_env) or None, max_rows=args.max_rows, margin_arcsec=args.margin, name=args.name,
        )
        from survey_engine.catalog.lock import output_lock
        from survey_engine.redact import redact_url

        with output_lock(ingest_args.out, f"ingest --tap {redact_url(ingest_args.tap_url)} --table {ingest_args.table}"), \
                dask_client(n_workers=args.workers) as client:
            result = run_ingest(ingest_args, client=client, progress=progress)
        print(result.summary())
    elif args.command == "margin":
        from survey_engine.catalog.margin_build import build_margin
        from survey_engine.runtime import dask_client

        with dask_client(n_workers=args.workers) as client:
            path = build_margin(args.catalog, args.radius, client=client, progress=progress)
        print(f"margin of {args.radius:g} arcsec written to {path}")
    elif args.command == "mock":
        from survey_engine.mock.sky import write_mock_sky
        from survey_engine.runtime import dask_client

        with dask_client(n_workers=args.workers) as client:
            if args.survey != "sky":
                from survey_engine.mock.surveys import write_survey

                n = write_survey(args.survey, args.rows, args.out, seed=args.seed, client=client, progress=progress)
                print(f"mock {args.survey} survey: {n:,} rows of a {args.rows:,}-row sky (seed {args.seed}) under {args.out}")
                return 0
            files = write_mock_sky(args.rows, args.out, seed=args.seed, client=client, progress=progress)
        print(f"{args.rows:,} mock rows (seed {args.seed}) in {len(files)} Parquet files under {args.out}")
    elif args.command == "demo":
        from survey_engine.jobs.demo import run_demo

        run_demo(rows=args.rows, out=args.out, seed=args.seed, workers=args.workers, progress=progress)
    elif args.command == "crossmatch":
        from survey_engine.catalog.catalog import open_catalog
        from survey_engine.crossmatch import crossmatch
        from survey_engine.crossmatch.epochs import EpochSpec
        from survey_engine.runtime import dask_client

        def epoch_spec(value):
            if value is None:
                return None
            pm = args.pm_columns.split(",")
            if len(pm) != 2:
                raise ValueError(f"--pm-columns takes two comma-separated names, got {args.pm_columns!r}")
            try:
                return EpochSpec(float(value), pm[0], pm[1])
            except ValueError:
                return EpochSpec(value, pm[0], pm[1])

        suffixes = tuple(args.suffixes.split(","))
        if len(suffixes) != 2:
            raise ValueError(f"--suffixes takes two comma-separated suffixes, got {args.suffixes!r}")
        with dask_client(n_workers=args.workers) as client:
            result = crossmatch(
                open_catalog(args.left), open_catalog(args.right), args.radius, how=args.how, k=args.k, join=args.join,
                min_radius_arcsec=args.min_radius, exclude_self=args.exclude_self, suffixes=suffixes,
                build_margin=args.build_margin, epoch=args.epoch, algorithm="gpu" if args.gpu else args.algorithm,
                left_epoch=epoch_spec(args.left_epoch), right_epoch=epoch_spec(args.right_epoch), client=client,
            )
            out = result.write(args.out, client=client, progress=progress)
        matched = open_catalog(out)
        print(f"{matched.row_count():,} rows ({args.how}, {args.join} join, radius {args.radius:g} arcsec) -> {out}")
    elif args.command == "train":
        import json

        from survey_engine.runtime import dask_client

        features = [f.strip() for f in args.features.split(",") if f.strip()]
        with dask_client(n_workers=args.workers) as client:
            if args.task in ("photoz", "classify"):
                from survey_engine.ml.supervised import CLASS_WEIGHTS, MEMBERS, TrainOptions, train

                opts = TrainOptions(args.task, features, target=args.target, label=args.label, seed=args.seed,
                                    test_fraction=args.test_fraction, cv=args.cv, search=args.search, baselines=args.baselines,
                                    gpu=args.gpu, ebv_column=args.ebv, missing=args.missing or "nan", ra_column=args.ra, dec_column=args.dec,
                                    where=args.where, members=args.members or MEMBERS, magnitude=args.mag_column, refit=not args.no_refit,
                                    text_as_missing=args.missing is not None, params={"class_weight_power": CLASS_WEIGHTS[args.class_weight]} if args.task == "classify" else {})
                result = train(args.catalog, opts, args.model_out, client=client, progress=progress)
                keys = ("n", "bias", "sigma_nmad", "sigma_iqr", "outlier_rate_015", "outlier_rate_lsst", "interval_coverage", "interval_coverage_95",
                        "pit_ks", "crps") if args.task == "photoz" else ("n", "accuracy", "macro_f1", "macro_roc_auc")
                print(json.dumps({"held_out": {k: result["test"][k] for k in keys if k in result["test"]},
                                  **{k: result[k] for k in ("headline", "baselines") if k in result}}, indent=1))
            elif args.task == "anomaly":
                from survey_engine.ml.unsupervised import train_anomaly

                print(json.dumps(train_anomaly(args.catalog, features, args.model_out, seed=args.seed, ebv=args.ebv, client=client), indent=1))
            else:
                from survey_engine.ml.unsupervised import train_pca

                print(json.dumps(train_pca(args.catalog, features, args.model_out, n_components=args.components, ebv=args.ebv, client=client), indent=1))
        print(f"model written to {args.model_out} (report: {args.model_out}/report.html)" if args.task in ("photoz", "classify") else f"model written to {args.model_out}")
    elif args.command == "predict":
        from survey_engine.ml.apply import predict
        from survey_engine.runtime import dask_client

        with dask_client(n_workers=args.workers) as client:
            out = predict(args.model, args.catalog, args.out, client=client, progress=progress, missing=args.missing)
        print(f"predictions written to {out}")
    elif args.command == "evaluate":
        import json

        from survey_engine.ml.supervised import evaluate
        from survey_engine.runtime import dask_client

        with dask_client(n_workers=args.workers) as client:
            result = evaluate(args.model, args.catalog, client=client, truth=args.truth, where=args.where)
        text = json.dumps(result, indent=1, default=float)
        if args.out:

            from survey_engine.catalog.layout import atomic_write_text

            atomic_write_text(Path(args.out), text)
        print(text)
    elif args.command == "cluster":
        import json

        from survey_engine.ml.cluster import cluster_catalog
        from survey_engine.runtime import dask_client

        params = {"min_cluster_size": args.min_cluster_size, "min_samples": args.min_samples, "eps": args.eps,
                  "max_cluster_fraction": args.max_cluster_fraction, "n_clusters": args.n_clusters}
        if args.min_samples is None:
            params.pop("min_samples")
        with dask_client(n_workers=args.workers) as client:
            summary = cluster_catalog(args.catalog, [f.strip() for f in args.features.split(",") if f.strip()], args.method, args.out,
                                      id_column=args.id, params=params, client=client, progress=progress, where=args.where,
                                      build_margin=args.build_margin, check_margin=True)
        print(json.dumps({k: summary[k] for k in ("rows", "noise", "n_clusters")} | {"largest": summary["clusters"][:5]}, indent=1, default=float))
    elif args.command in ("run", "submit"):

        from survey_engine.jobs.run import run_job
        from survey_engine.jobs.spec import load_spec

        spec = load_spec(args.job)
        if args.workdir:
            spec.workdir = Path(args.workdir).resolve()
        if args.check:
            print(f"{args.job}: valid ({len(spec.stages)} stages: {', '.join(s.id for s in spec.stages)}); outputs in {spec.workdir}")
            return 0
        cluster = args.cluster if args.command == "run" else args.scheduler
        summary = run_job(spec, cluster=cluster, progress=progress, security_config=args.security, min_workers=args.min_workers)
        print(f"job {spec.name}: done; summary in {spec.workdir / 'run_summary.json'}")
        return 0 if summary else 1
    elif args.command == "bench":
        if args.suites[:1] == ["merge"]:
            if len(args.suites) != 3:
                raise ValueError("usage: survey-engine bench merge OLD NEW --out DIR")
            from survey_engine.bench.report import merge

            merge(args.suites[1], args.suites[2], args.out)
            print((Path(args.out) / "summary.md").read_text())
            return 0
        if args.suites[:1] == ["compare"]:
            if len(args.suites) != 3:
                raise ValueError("usage: survey-engine bench compare OLD NEW")
            from survey_engine.bench.report import compare

            bad, rows = compare(args.suites[1], args.suites[2], args.threshold)
            for r in rows:
                flag = "REGRESSION" if r in bad else "ok"
                print(f"{flag:10s} {r['suite']:10s} {r['tool']:22s} {r['case']:40s} {r['old_s']:8.2f} s -> {r['new_s']:8.2f} s ({r['ratio']:.2f}x)")
            print(f"{len(bad)} regression(s) beyond {args.threshold:g}x (or disagreeing results) among {len(rows)} comparable rows")
            return 1 if bad else 0
        from survey_engine.bench.report import run_bench

        report = run_bench(args.suites or None, args.out, quick=args.quick, repeats=args.repeats, workers=args.workers, sizes_override=args.sizes,
                           max_peer_rows=args.max_peer_rows, partition_rows=args.partition_rows, data=args.data)
        print((Path(args.out) / "summary.md").read_text())
        print(f"report: {Path(args.out) / 'report.html'}")
        return 1 if report["errors"] else 0
    elif args.command == "verify":
        from survey_engine.catalog.verify import verify_catalog
        from survey_engine.runtime import dask_client

        with dask_client(n_workers=args.workers) as client:
            report = verify_catalog(args.catalog, repair=args.repair, client=client, progress=progress)
        print(report.text())
        return 0 if report.ok else 1
    elif args.command == "lightcurves":
        from survey_engine.ingest.lightcurves import LightcurveArguments, attach_lightcurves
        from survey_engine.runtime import dask_client

        lc_args = LightcurveArguments(
            objects=args.objects, detections=args.detections, out=args.out, id=args.id, object_id=args.object_id,
            time=args.time, mag=args.mag, err=args.err, band=None if args.band.lower() == "none" else args.band,
            keep=args.keep, lc_column=args.lc_column, require_objects=args.require_objects,
        )
        with dask_client(n_workers=args.workers) as client:
            print(attach_lightcurves(lc_args, client=client, progress=progress).summary())
    elif args.command == "variability":
        from survey_engine.features.variability import VariabilitySpec, variability_catalog
        from survey_engine.runtime import dask_client

        spec = VariabilitySpec(bands=args.bands, min_epochs=args.min_epochs, min_period=args.min_period,
                               max_period=args.max_period)
        with dask_client(n_workers=args.workers) as client:
            print(variability_catalog(args.catalog, args.out, spec, lc_column=args.lc_column, client=client,
                                      progress=progress).summary())
    elif args.command == "mock-lightcurves":
        from survey_engine.mock.lightcurves import write_mock_lightcurves
        from survey_engine.runtime import dask_client

        with dask_client(n_workers=args.workers) as client:
            counts = write_mock_lightcurves(args.objects, args.out, seed=args.seed, cadence=args.cadence, client=client,
                                            progress=progress)
        print(f"{counts['objects']:,} objects, {counts['detections']:,} detections ({args.cadence} cadence) -> {args.out}")
    elif args.command == "info":
        from survey_engine.catalog.catalog import open_catalog

        cat = open_catalog(args.catalog)
        print(cat)
        print(f"rows: {cat.row_count():,}; partitions: {cat.npartitions}; orders: {sorted(set(cat.partitions.Norder))}")
        if cat.margin is not None:
            print(f"margin: {cat.margin_radius_arcsec:g} arcsec, {cat.margin.row_count():,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
