"""Benchmark suites: each stage against its peers on the same data and cores, in one run.

Every row states whether the tools agree (same rows, same pair set, equal metrics within a
tolerance), so speed is never bought with wrong answers. A peer that is not installed or a
service that is not reachable gives a row saying so, never a silent gap.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.bench.measure import timed

SUITES = ("import", "crossmatch", "features", "train", "tap", "e2e", "scaling")
QUICK_SIZES = {"import": [100_000], "crossmatch": [100_000], "features": [100_000], "train": [100_000], "tap": [None],
               "e2e": [100_000], "scaling": [200_000]}
FULL_SIZES = {"import": [100_000, 1_000_000, 5_000_000], "crossmatch": [100_000, 1_000_000, 5_000_000],
              "features": [1_000_000, 10_000_000], "train": [1_000_000, 5_000_000], "tap": [None], "e2e": [1_000_000],
              "scaling": [2_000_000]}


@contextlib.contextmanager
def _cluster(workers: int):
    """A fresh LocalCluster of exactly ``workers`` for one measurement (never a client already
    around: the scaling suite needs the worker count it asks for)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def _row(suite, case, tool, rows, workers, m=None, agree=None, note=None, **extra) -> dict:
    r = {"suite": suite, "case": case, "tool": tool, "rows": rows, "workers": workers, "agree": agree, "note": note}
    if m is not None:
        r.update({k: m[k] for k in ("seconds", "min_s", "max_s", "first_s", "repeats", "peak_rss_bytes")})
        r["rows_per_s"] = rows / m["seconds"] if rows and m["seconds"] > 0 else None
    r.update(extra)
    return r


def _mock_files(rows: int, work: Path, client) -> Path:
    from survey_engine.mock.sky import write_mock_sky

    out = work / f"mock_{rows}"
    if not out.exists():
        write_mock_sky(rows, out, seed=11, client=client, progress=False)
    return out


# -- import: survey_engine vs hats-import ---------------------------------------------------------

def suite_import(sizes, repeats, workers, work: Path) -> list[dict]:
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    rows_out = []
    for n in sizes:
        with _cluster(workers) as client:
            src = _mock_files(n, work, client)
            max_rows = max(10_000, n // 20)

            def ours():
                out = work / f"se_import_{n}"
                shutil.rmtree(out, ignore_errors=True)
                run_import(ImportArguments([str(src)], str(out), id_column="source_id", max_rows=max_rows, margin_arcsec=5.0), client=client, progress=False)
                return _ids(out)

            m_ours = timed(ours, repeats)
            rows_out.append(_row("import", f"{n} rows", "survey_engine", n, workers, m_ours, agree=len(m_ours["value"]) == n))
            import importlib.util

            if importlib.util.find_spec("hats_import") is None:
                rows_out.append(_row("import", f"{n} rows", "hats_import", n, workers, note="hats-import not installed"))
                continue

            def theirs():
                out = work / f"hi_import_{n}"
                shutil.rmtree(out, ignore_errors=True)
                _hats_import(src, out, client, max_rows)
                return _ids(out)

            m_theirs = timed(theirs, repeats)
            same = np.array_equal(np.sort(m_ours["value"]), np.sort(m_theirs["value"]))
            rows_out.append(_row("import", f"{n} rows", "hats_import", n, workers, m_theirs, agree=bool(same)))
    return rows_out


def _ids(path: Path) -> np.ndarray:
    import pyarrow.dataset as ds

    from survey_engine.catalog.catalog import open_catalog

    cat = open_catalog(path)
    return ds.dataset([str(f) for f in cat.partition_files()], format="parquet").to_table(columns=["source_id"]).column(0).to_numpy()


def _hats_import(src: Path, out: Path, client, max_rows: int) -> None:
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    files = sorted(str(p) for p in src.glob("*.parquet"))
    args = (CollectionArguments(output_artifact_name=out.name, output_path=str(out.parent), progress_bar=False, resume=False)
            .catalog(input_file_list=files, file_reader="parquet", ra_column="ra", dec_column="dec", pixel_threshold=max_rows, highest_healpix_order=10)
            .add_margin(margin_threshold=5.0))
    pipeline_with_client(args, client)


# -- cross-match: survey_engine vs LSDB vs astropy vs a global cKDTree ------------------------------

def pair_inputs(n: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    a = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "ra": rng.uniform(0, 360, n), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n)))})
    sigma = 0.35 / 3600
    cosd = np.maximum(np.cos(np.radians(a.dec.to_numpy())), 1e-6)
    b = pd.DataFrame({"ra": (a.ra + rng.normal(0, sigma, n) / cosd) % 360, "dec": np.clip(a.dec + rng.normal(0, sigma, n), -90, 90)})
    extra = n // 5
    b = pd.concat([b, pd.DataFrame({"ra": rng.uniform(0, 360, extra), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, extra)))})], ignore_index=True)
    b.insert(0, "id", np.arange(len(b), dtype=np.int64) + 10**10)
    return a, b


def _xyz(df):
    from survey_engine.catalog.healpix import radec_to_xyz

    return radec_to_xyz(df.ra.to_numpy(), df.dec.to_numpy())


def suite_crossmatch(sizes, repeats, workers, work: Path, radius: float = 1.0) -> list[dict]:
    from scipy.spatial import cKDTree

    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out_rows = []
    for n in sizes:
        a, b = pair_inputs(n)
        with _cluster(workers) as client:
            paths = {}
            for name, df, margin in (("A", a, 0.0), ("B", b, 5.0)):
                src = work / f"xm_{name}_{n}.parquet"
                df.to_parquet(src)
                out = work / f"xm_{name}_{n}"
                shutil.rmtree(out, ignore_errors=True)
                run_import(ImportArguments([str(src)], str(out), id_column="id", max_rows=max(20_000, n // 10), margin_arcsec=margin), client=client, progress=False)
                paths[name] = out

            def ckdtree():
                d, i = cKDTree(_xyz(b)).query(_xyz(a), k=1, distance_upper_bound=2 * np.sin(np.radians(radius / 3600) / 2), workers=workers)
                ok = np.isfinite(d)
                return set(zip(a.id.to_numpy()[ok].tolist(), b.id.to_numpy()[i[ok]].tolist()))

            def ours():
                res = open_catalog(paths["A"]).crossmatch(open_catalog(paths["B"]), radius, left_columns=["id"], right_columns=["id"], client=client).compute()
                return set(zip(res.id_1.tolist(), res.id_2.tolist()))

            def astropy_():
                import astropy.units as u
                from astropy.coordinates import SkyCoord, match_coordinates_sky

                idx, sep, _ = match_coordinates_sky(SkyCoord(a.ra.values * u.deg, a.dec.values * u.deg), SkyCoord(b.ra.values * u.deg, b.dec.values * u.deg))
                ok = sep.arcsec <= radius
                return set(zip(a.id.to_numpy()[ok].tolist(), b.id.to_numpy()[idx[ok]].tolist()))

            def lsdb_():
                import lsdb

                left = lsdb.open_catalog(paths["A"], columns=["id", "ra", "dec"])
                right = lsdb.open_catalog(paths["B"], columns=["id", "ra", "dec"])
                res = left.crossmatch(right, radius_arcsec=radius, n_neighbors=1, suffixes=("_1", "_2"), suffix_method="all_columns").compute()
                return set(zip(res.id_1.tolist(), res.id_2.tolist()))

            m_truth = timed(ckdtree, repeats)
            truth = m_truth["value"]
            out_rows.append(_row("crossmatch", f"{n} x {len(b)}", "ckdtree_global", n, workers, m_truth, agree=True, pairs=len(truth)))
            for tool, fn in (("survey_engine", ours), ("lsdb", lsdb_), ("astropy", astropy_)):
                try:
                    m = timed(fn, repeats)
                except ImportError as exc:
                    out_rows.append(_row("crossmatch", f"{n} x {len(b)}", tool, n, workers, note=f"not installed: {exc}"))
                    continue
                out_rows.append(_row("crossmatch", f"{n} x {len(b)}", tool, n, workers, m, agree=m["value"] == truth, pairs=len(m["value"])))
    return out_rows


# -- features: per partition on the cluster vs pandas in one process --------------------------------

FEATURES = ["u-g", "g-r", "r-i", "i-z", "dered(r)", "snr(r_err)", "absmag(phot_g_mean_mag)", "v_tan", "gal_b"]


def suite_features(sizes, repeats, workers, work: Path) -> list[dict]:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.features.spec import FeatureSpec
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out_rows = []
    for n in sizes:
        with _cluster(workers) as client:
            src = _mock_files(n, work, client)
            cat_path = work / f"feat_cat_{n}"
            if not cat_path.exists():
                run_import(ImportArguments([str(src)], str(cat_path), id_column="source_id", max_rows=max(20_000, n // 20), margin_arcsec=0),
                           client=client, progress=False)
            spec = FeatureSpec(FEATURES, ebv_column="ebv")
            cat = open_catalog(cat_path)

            def ours():
                frame = cat.to_dask()
                feats = frame.map_partitions(spec.compute, meta=spec.compute(frame._meta_nonempty.head(2)).iloc[:0])
                return feats.sum().compute()

            def pandas_():
                df = pd.concat([pd.read_parquet(f) for f in sorted(src.glob("*.parquet"))], ignore_index=True)
                return spec.compute(df).sum()

            m_ours, m_pd = timed(ours, repeats), timed(pandas_, repeats)
            agree = bool(np.allclose(m_ours["value"].to_numpy(), m_pd["value"].to_numpy(), rtol=1e-9, equal_nan=True))
            out_rows.append(_row("features", f"{n} rows, {len(FEATURES)} features", "survey_engine", n, workers, m_ours, agree=agree))
            out_rows.append(_row("features", f"{n} rows, {len(FEATURES)} features", "pandas_single_process", n, 1, m_pd, agree=agree))
    return out_rows


# -- training: xgboost.dask vs single-process XGBoost with the same threads -------------------------

def suite_train(sizes, repeats, workers, work: Path) -> list[dict]:
    import xgboost as xgb
    from xgboost import dask as dxgb

    from survey_engine.features.spec import FeatureSpec
    from survey_engine.ml import metrics as M

    out_rows = []
    params = {"objective": "reg:absoluteerror", "max_depth": 7, "eta": 0.1, "tree_method": "hist", "verbosity": 0, "seed": 1}
    rounds = 100
    spec = FeatureSpec(["u-g", "g-r", "r-i", "i-z", "r"])
    for n in sizes:
        with _cluster(workers) as client:
            src = _mock_files(n, work, client)
            import dask.dataframe as dd

            frame = dd.read_parquet(str(src / "*.parquet"), columns=["u", "g", "r", "i", "z", "redshift", "obj_class"]).compute()
            frame = frame[frame.obj_class == "GALAXY"]
            # the same rows in memory for both tools: partitions spread over the workers vs one frame
            Xl, yl = spec.compute(frame), np.log1p(frame["redshift"])
            ngal = len(yl)
            X = client.persist(dd.from_pandas(Xl, npartitions=2 * workers))
            y = client.persist(dd.from_pandas(yl, npartitions=2 * workers))

            def distributed():
                with xgb.config_context(verbosity=0):
                    booster = dxgb.train(client, {**params, "nthread": 1}, dxgb.DaskDMatrix(client, X, y), num_boost_round=rounds)["booster"]
                return booster

            def single():
                return xgb.train({**params, "nthread": workers}, xgb.DMatrix(Xl, yl), num_boost_round=rounds)

            m_d, m_s = timed(distributed, repeats), timed(single, repeats)
            zs = np.expm1(yl.to_numpy())
            nm_d = M.photoz_metrics(np.expm1(m_d["value"].inplace_predict(Xl.to_numpy(np.float32))), zs)["sigma_nmad"]
            nm_s = M.photoz_metrics(np.expm1(m_s["value"].inplace_predict(Xl.to_numpy(np.float32))), zs)["sigma_nmad"]
            agree = bool(abs(nm_d - nm_s) <= 0.05 * nm_s)
            case = f"{ngal} galaxies, {rounds} rounds"
            out_rows.append(_row("train", case, "xgboost.dask", ngal, workers, m_d, agree=agree, sigma_nmad=nm_d))
            out_rows.append(_row("train", case, "xgboost_single_process", ngal, workers, m_s, agree=agree, sigma_nmad=nm_s,
                                 note=f"one process, nthread={workers}"))
    return out_rows


# -- TAP ingest: ours vs raw keyset paging against the same server ----------------------------------

def suite_tap(sizes, repeats, workers, work: Path, url: str = "http://127.0.0.1:8080/tap", table: str = "segaia.main",
              where: str | None = "phot_g_mean_mag < 8", page_rows: int = 10_000) -> list[dict]:
    import requests

    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ingest.tap.arguments import TapIngestArguments
    from survey_engine.ingest.tap.run import run_ingest

    try:
        requests.get(url + "/availability", timeout=5).raise_for_status()
    except Exception as exc:
        return [_row("tap", f"{table}", tool, None, workers, note=f"TAP service {url} not reachable ({type(exc).__name__}); start tests/services/dachs/setup.sh")
                for tool in ("survey_engine", "raw_keyset")]
    import pyvo

    def raw():
        service = pyvo.dal.TAPService(url)
        last, ids = None, []
        while True:
            conds = [f"({where})"] if where else []
            if last is not None:
                conds.append(f"source_id > {last}")
            q = f"SELECT TOP {page_rows} * FROM {table}" + (" WHERE " + " AND ".join(conds) if conds else "") + " ORDER BY source_id"
            t = service.run_sync(q, maxrec=page_rows + 1).to_table()
            if len(t):
                ids.append(np.asarray(t["source_id"]))
                last = int(t["source_id"][-1])
            if len(t) < page_rows:
                return np.concatenate(ids)

    with _cluster(workers) as client:
        fetch_times = []

        def ours():
            out = work / "tap_ingest"
            shutil.rmtree(out, ignore_errors=True)
            r = run_ingest(TapIngestArguments(url, table, str(out), where=where, id_column="source_id", page_rows=page_rows), client=client, progress=False)
            fetch_times.append(r.seconds_fetching)
            return np.asarray(open_catalog(out).to_dask()["source_id"].compute())

        m_raw, m_ours = timed(raw, repeats), timed(ours, repeats)
        n = len(m_raw["value"])
        agree = bool(len(m_ours["value"]) == n and set(m_ours["value"].tolist()) == set(m_raw["value"].tolist()))
        case = f"{table} WHERE {where}, {page_rows} rows/page"
        timed_fetch = sorted(fetch_times[1:] or fetch_times)
        fetch = {"seconds": timed_fetch[len(timed_fetch) // 2], "min_s": timed_fetch[0], "max_s": timed_fetch[-1], "first_s": fetch_times[0],
                 "repeats": len(timed_fetch), "peak_rss_bytes": None}
        return [_row("tap", case, "survey_engine", n, workers, fetch, agree=agree, note="fetch phase: plan, pages in flight, Parquet pages, manifest"),
                _row("tap", case + " (end to end)", "survey_engine", n, workers, m_ours, agree=agree,
                     note="pages + count check against the service + HATS catalog with margin"),
                _row("tap", case, "raw_keyset", n, 1, m_raw, agree=agree, note="pyvo, one client, keyset paging")]


# -- one end-to-end job -----------------------------------------------------------------------------

def suite_e2e(sizes, repeats, workers, work: Path) -> list[dict]:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.jobs.run import run_job
    from survey_engine.jobs.spec import load_spec

    out_rows = []
    for n in sizes:
        spec_file = work / f"e2e_{n}.yaml"
        spec_file.write_text(
            f"source:\n  mock: {{rows: {n}, seed: 5}}\nstages:\n  - id: sky\n    import: {{max_rows: {max(10_000, n // 10)}, margin: 5}}\n"
            "  - id: model\n    train: {task: photoz, catalog: sky, features: [u-g, g-r, r-i, i-z, r], target: redshift, where: \"obj_class == 'GALAXY'\"}\n"
            "  - id: zphot\n    predict: {model: model, catalog: sky}\n")
        with _cluster(workers) as client:
            def job():
                spec = load_spec(spec_file, base=work)
                shutil.rmtree(spec.workdir, ignore_errors=True)
                run_job(spec, client=client, progress=False, echo=None)
                return open_catalog(spec.workdir / "zphot").row_count()

            m = timed(job, repeats, warmup=0)
            out_rows.append(_row("e2e", f"mock {n} rows: import + photo-z train + predict", "survey_engine", n, workers, m, agree=m["value"] == n))
    return out_rows


# -- scaling: strong (fixed data, 1 -> N workers) and weak (data grows with workers) ----------------

def suite_scaling(sizes, repeats, workers, work: Path) -> list[dict]:
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out_rows = []
    n = sizes[0]
    for kind in ("strong", "weak"):
        base = None
        for w in range(1, workers + 1):
            rows = n if kind == "strong" else n * w // workers
            with _cluster(w) as client:
                src = _mock_files(rows, work, client)

                def job():
                    out = work / f"scale_{kind}_{w}"
                    shutil.rmtree(out, ignore_errors=True)
                    return run_import(ImportArguments([str(src)], str(out), id_column="source_id", max_rows=max(10_000, rows // 20),
                                                      margin_arcsec=5.0), client=client, progress=False).rows

                m = timed(job, repeats)
            base = base or m["seconds"]
            eff = base / m["seconds"] / w if kind == "strong" else base / m["seconds"]
            out_rows.append(_row("scaling", f"{kind} import", "survey_engine", rows, w, m, agree=m["value"] == rows, efficiency=eff,
                                 partitions=None))
    return out_rows


RUNNERS = {"import": suite_import, "crossmatch": suite_crossmatch, "features": suite_features, "train": suite_train,
           "tap": suite_tap, "e2e": suite_e2e, "scaling": suite_scaling}


def projections(rows: list[dict], cores: tuple[int, ...] = (128, 1024)) -> list[dict]:
    """A cost model from the measured import throughput per worker, projected onto full-sky sizes.

    Stated as a projection, not a measurement: it assumes the per-row cost measured here holds at
    scale and that work spreads evenly over cores (the strong-scaling efficiency is applied)."""
    scale = [r for r in rows if r["suite"] == "scaling" and r.get("seconds") and r["case"] == "strong import"]
    if not scale:
        return []
    one = next((r for r in scale if r["workers"] == 1), scale[0])
    per_core = one["rows"] / one["seconds"]
    eff = min(1.0, scale[-1].get("efficiency") or 1.0)
    out = []
    for name, total in (("Gaia DR3", 1_800_000_000), ("LSST-scale", 20_000_000_000)):
        for c in cores:
            out.append({"catalog": name, "rows": total, "cores": c, "projected_import_hours": total / (per_core * c * eff) / 3600,
                        "rows_per_s_per_core": per_core, "efficiency_used": eff})
    return out
