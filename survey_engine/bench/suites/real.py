"""real suite: the same peers on the real catalogs of ``../shared/data`` (Gaia DR3, Blanco 1, SDSS)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.bench.measure import timed
from survey_engine.bench.suites.common import (
    bench_row,
    catalog_ids,
    hats_import_catalog,
    local_cluster,
    pair_array,
    peer_missing,
    profiled,
    repeat_plan,
    xyz,
)
from survey_engine.bench.suites.train import TRAIN_FEATURES, TRAIN_PARAMS, xgb_single_process

DATA_VARIABLE = "SURVEY_ENGINE_SHARED_DATA"


def shared_data_root(data: str | Path | None = None) -> Path:
    """Where the real catalogs are: ``data`` (``bench --data DIR``), else ``$SURVEY_ENGINE_SHARED_DATA``,
    else ``../shared/data`` beside a source checkout (an installed package has no such folder: the
    suite is then skipped, saying how to point it at the data)."""
    import os

    if data is not None:
        return Path(data)
    env = os.environ.get(DATA_VARIABLE)
    return Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"


REAL_FILES = {
    "gaia_g10": "clusters_xmatch/gaia_dr3_allsky_G10.parquet",
    "blanco1_dr2": "clusters_xmatch/blanco1/blanco1_gaia_dr2_G18_field.parquet",
    "blanco1_dr3": "clusters_xmatch/blanco1/blanco1_gaia_dr3_G17_field.parquet",
    "sdss_photoz": "photoz/sdss_galaxy_colors_50k.parquet",
}


def run(sizes, repeats, workers, work: Path, peer_limits=None, data: str | Path | None = None) -> list[dict]:
    """Real catalogs: import of the all-sky Gaia DR3 G<10 table (482k rows) vs hats-import; the
    Blanco 1 Gaia DR3 field against DR2 (across RA 0) vs LSDB, astropy and a global cKDTree;
    photo-z training on the SDSS galaxies, xgboost.dask vs one process."""
    import os

    root = shared_data_root(data)
    absent = [f for f in REAL_FILES.values() if not (root / f).exists()]
    if absent:
        if data is not None:
            where = f"--data {root}"
        elif os.environ.get(DATA_VARIABLE):
            where = f"${DATA_VARIABLE} = {root}"
        else:
            where = f"{root} (the default: ../shared/data beside a source checkout)"
        msg = f"skipped: real data not found in {where} (no {absent[0]}); pass --data DIR or set {DATA_VARIABLE}"
        if os.environ.get("CI") == "true":
            raise FileNotFoundError(msg)  # in CI the data must be there: fail, do not skip
        return [bench_row("real", "real catalogs", "survey_engine", None, workers, note=msg)]
    plan = repeat_plan(None, repeats)
    with local_cluster(workers) as client:
        return [
            *_import_case(client, root, work, plan, workers),
            *_crossmatch_case(client, root, work, plan, workers),
            *_training_case(client, root, work, plan, workers),
        ]


def _import_case(client, root: Path, work: Path, plan: dict, workers: int) -> list[dict]:
    """Import of the all-sky Gaia DR3 G<10 table with a 5" margin, against hats-import."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out_rows = []
    # import: Gaia DR3 G < 10, all sky
    src = root / REAL_FILES["gaia_g10"]
    n = int(pd.read_parquet(src, columns=["source_id"]).shape[0])
    case = f'import Gaia DR3 G<10 all-sky ({n} rows) + 5" margin'
    prof: list = []

    def ours_import():
        out = work / "real_import_ours"
        shutil.rmtree(out, ignore_errors=True)
        run_import(
            ImportArguments([str(src)], str(out), id_column="source_id", max_rows=50_000, margin_arcsec=5.0),
            client=client,
            progress=False,
        )
        return np.sort(catalog_ids(out))

    def hats_import_():
        out = work / "real_import_hi"
        shutil.rmtree(out, ignore_errors=True)
        hats_import_catalog(src, out, client, 50_000)
        return np.sort(catalog_ids(out))

    m = timed(profiled(client, ours_import, prof), **plan)
    mine = m.pop("value")
    missing = peer_missing("hats_import", "hats-import")
    if missing:
        out_rows.append(
            bench_row(
                "real",
                case,
                "survey_engine",
                n,
                workers,
                m,
                agree=len(np.unique(mine)) == n,
                profile=prof,
            )
        )
        out_rows.append(bench_row("real", case, "hats_import", n, workers, note=missing))
    else:
        mh = timed(hats_import_, **plan)
        same = bool(np.array_equal(mine, mh.pop("value"))) and len(mine) == n
        out_rows.append(bench_row("real", case, "survey_engine", n, workers, m, agree=same, profile=prof))
        out_rows.append(bench_row("real", case, "hats_import", n, workers, mh, agree=same))

    return out_rows


def _crossmatch_case(client, root: Path, work: Path, plan: dict, workers: int) -> list[dict]:
    """Blanco 1, Gaia DR3 nearest DR2 within 1" (the field straddles RA 0), against LSDB, astropy and a global cKDTree."""
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out_rows = []
    # cross-match: Blanco 1, Gaia DR3 (G<17) nearest DR2 (G<18) within 1", the field straddles RA 0
    dr3, dr2 = (
        pd.read_parquet(root / REAL_FILES["blanco1_dr3"]),
        pd.read_parquet(root / REAL_FILES["blanco1_dr2"]),
    )
    dr2 = dr2.assign(ra=dr2.ra % 360)
    paths = {}
    for name, f, idc, margin in (
        ("dr3", REAL_FILES["blanco1_dr3"], "SOURCE_ID", 0.0),
        ("dr2", REAL_FILES["blanco1_dr2"], "source_id", 5.0),
    ):
        out = work / f"real_{name}"
        shutil.rmtree(out, ignore_errors=True)
        run_import(
            ImportArguments([str(root / f)], str(out), id_column=idc, max_rows=2000, margin_arcsec=margin),
            client=client,
            progress=False,
        )
        paths[name] = out
    case = f'Blanco 1 Gaia DR3 ({len(dr3)}) nearest DR2 ({len(dr2)}) within 1"'

    def ours():
        res = (
            open_catalog(paths["dr3"])
            .crossmatch(
                open_catalog(paths["dr2"]),
                1.0,
                left_columns=["SOURCE_ID"],
                right_columns=["source_id"],
                client=client,
            )
            .compute()
        )
        return pair_array(res.SOURCE_ID_1.to_numpy(), res.source_id_2.to_numpy())

    ckdtree = functools.partial(_blanco1_ckdtree, dr3, dr2)
    lsdb_ = functools.partial(_blanco1_lsdb, paths)
    astropy_ = functools.partial(_blanco1_astropy, dr3, dr2)
    mt = timed(ckdtree, **plan)
    truth = mt.pop("value")
    out_rows.append(bench_row("real", case, "ckdtree_global", len(dr3), 1, mt, agree=True, pairs=len(truth)))
    prof = []
    for tool, fn in (
        ("survey_engine", profiled(client, ours, prof)),
        ("lsdb", lsdb_),
        ("astropy", astropy_),
    ):
        missing = None if tool == "survey_engine" else peer_missing(tool, tool)
        if missing:
            out_rows.append(bench_row("real", case, tool, len(dr3), workers, note=missing))
            continue
        m = timed(fn, **plan)
        pairs = m.pop("value")
        out_rows.append(
            bench_row(
                "real",
                case,
                tool,
                len(dr3),
                workers,
                m,
                agree=bool(np.array_equal(pairs, truth)),
                pairs=len(pairs),
                profile=prof if tool == "survey_engine" else None,
            )
        )

    return out_rows


def _blanco1_ckdtree(dr3: pd.DataFrame, dr2: pd.DataFrame) -> np.ndarray:
    """The truth: one global cKDTree on unit vectors, nearest DR2 source within 1" of each DR3 source."""
    from scipy.spatial import cKDTree

    d, i = cKDTree(xyz(dr2)).query(xyz(dr3), k=1, distance_upper_bound=2 * np.sin(np.radians(1 / 3600) / 2))
    ok = np.isfinite(d)
    return pair_array(dr3.SOURCE_ID.to_numpy()[ok], dr2.source_id.to_numpy()[i[ok]])


def _blanco1_lsdb(paths: dict) -> np.ndarray:
    import lsdb

    left = lsdb.open_catalog(paths["dr3"], columns=["SOURCE_ID", "ra", "dec"])
    right = lsdb.open_catalog(paths["dr2"], columns=["source_id", "ra", "dec"])
    res = left.crossmatch(
        right, radius_arcsec=1.0, n_neighbors=1, suffixes=("_1", "_2"), suffix_method="all_columns"
    ).compute()
    return pair_array(res.SOURCE_ID_1.to_numpy(), res.source_id_2.to_numpy())


def _blanco1_astropy(dr3: pd.DataFrame, dr2: pd.DataFrame) -> np.ndarray:
    import astropy.units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    idx, sep, _ = match_coordinates_sky(
        SkyCoord(dr3.ra.values * u.deg, dr3.dec.values * u.deg),
        SkyCoord(dr2.ra.values * u.deg, dr2.dec.values * u.deg),
    )
    ok = sep.arcsec <= 1.0
    return pair_array(dr3.SOURCE_ID.to_numpy()[ok], dr2.source_id.to_numpy()[idx[ok]])


def _training_case(client, root: Path, work: Path, plan: dict, workers: int) -> list[dict]:
    """Photo-z training on the SDSS galaxies: xgboost.dask against one process and scikit-learn."""
    out_rows = []
    # training: SDSS galaxies, the same rows and rounds, xgboost.dask vs one process with the same threads
    import dask.dataframe as dd
    import xgboost as xgb
    from xgboost import dask as dxgb

    from survey_engine.features.spec import FeatureSpec
    from survey_engine.ml import metrics as M

    sd = pd.read_parquet(root / REAL_FILES["sdss_photoz"])
    sd = sd[sd.spec_class == "GALAXY"]
    X = FeatureSpec(TRAIN_FEATURES).compute(sd).astype(np.float32)
    y = np.log1p(sd.redshift.clip(lower=0)).astype(np.float32)
    Xd, yd = (
        client.persist(dd.from_pandas(X, npartitions=2 * workers)),
        client.persist(dd.from_pandas(y, npartitions=2 * workers)),
    )
    params = {**TRAIN_PARAMS, "eta": 0.1, "objective": "reg:absoluteerror"}
    case = f"photo-z training, SDSS galaxies ({len(X)} rows), 200 rounds"

    def distributed():
        with xgb.config_context(verbosity=0):
            return dxgb.train(
                client,
                {**params, "nthread": 1},
                dxgb.DaskQuantileDMatrix(client, Xd, yd),
                num_boost_round=200,
            )["booster"]

    prof = []
    md = timed(profiled(client, distributed, prof), **plan)
    data_file = work / "real_sdss_rows.npz"
    np.savez(data_file, X=X.to_numpy(), y=y.to_numpy())
    ms, _, booster_s = xgb_single_process(data_file, workers, plan, work, params=params, rounds=200)
    zs = np.expm1(y.to_numpy().astype(float))
    nm = [
        M.photoz_metrics(np.expm1(b.inplace_predict(X.to_numpy()).astype(float)), zs)["sigma_nmad"]
        for b in (md.pop("value"), booster_s)
    ]
    agree = bool(abs(nm[0] - nm[1]) <= 0.05 * nm[1])
    out_rows.append(
        bench_row(
            "real",
            case,
            "xgboost.dask",
            len(X),
            workers,
            md,
            agree=agree,
            profile=prof,
            sigma_nmad_train=nm[0],
        )
    )
    out_rows.append(
        bench_row(
            "real",
            case,
            "xgboost_single_process",
            len(X),
            workers,
            ms,
            agree=agree,
            sigma_nmad_train=nm[1],
            note=f"one fresh process, nthread={workers} (its data loading excluded)",
        )
    )

    sklearn_ = functools.partial(_sdss_sklearn, X.to_numpy(), y.to_numpy(), workers)
    mk = timed(sklearn_, **plan)
    nm_k = M.photoz_metrics(np.expm1(mk.pop("value").predict(X.to_numpy()).astype(float)), zs)["sigma_nmad"]
    out_rows.append(
        bench_row(
            "real",
            case,
            "sklearn_hist_gradient_boosting",
            len(X),
            workers,
            mk,
            agree=bool(nm[0] <= 1.05 * nm_k),
            sigma_nmad_train=nm_k,
            note=f"one process, {workers} threads, the same loss, depth and rounds; agree = ours at most 5% worse",
        )
    )
    return out_rows


def _sdss_sklearn(X: np.ndarray, y: np.ndarray, workers: int):
    """The peer: scikit-learn's histogram gradient boosting with the same loss, depth and rounds."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    with threadpool_limits(
        limits=workers, user_api="openmp"
    ):  # the driver's OMP_NUM_THREADS is 1 (LocalCluster)
        return HistGradientBoostingRegressor(
            loss="absolute_error", max_iter=200, max_depth=7, learning_rate=0.1, random_state=1
        ).fit(X, y)
