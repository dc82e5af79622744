"""Benchmark suites: each stage against its peers on the same data and cores, in one run.

Every row states whether the tools agree (same rows, same pair set, equal metrics within a
tolerance), so speed is never bought with wrong answers. A peer that is not installed or a
service that is not reachable gives a row saying so, never a silent gap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.bench.measure import run_summary, timed

SUITES = ("import", "margins", "crossmatch", "features", "train", "predict", "clustering", "real", "tap", "e2e", "scaling")
QUICK_SIZES = {"import": [100_000], "margins": [100_000], "crossmatch": [100_000], "features": [100_000], "train": [100_000],
               "predict": [100_000], "clustering": [100_000], "real": [None], "tap": [None], "e2e": [100_000], "scaling": [200_000]}
# The full run: 10^5 .. 10^8 rows where a stage can take them on this 24 GiB, 2-core machine.
FULL_SIZES = {"import": [100_000, 1_000_000, 10_000_000, 100_000_000], "margins": [1_000_000, 10_000_000],
              "crossmatch": [100_000, 1_000_000, 5_000_000], "features": [1_000_000, 10_000_000],
              "train": [1_000_000, 10_000_000, 50_000_000], "predict": [1_000_000, 10_000_000], "clustering": [100_000, 1_000_000],
              "real": [None], "tap": [None], "e2e": [1_000_000], "scaling": [5_000_000]}
# Peers run up to these sizes (above them a row says they were not run: hats-import at 10^8 rows
# alone would take the better part of an hour here). ``--max-peer-rows`` moves the default; the
# per-suite / per-tool caps stay (one-process HDBSCAN and astropy's matcher grow too slowly).
MAX_PEER_ROWS = {"default": 10_000_000, "clustering": 200_000, "astropy": 10_000_000}
BIG = 10_000_000  # from this size on: no warm-up run and a single repetition (said in each row)


def repeat_plan(n: int | None, repeats: int) -> dict:
    """Warm-up and repetitions for a size: the full discipline below ``BIG``, one run above."""
    return {"repeats": repeats, "warmup": 1} if not n or n < BIG else {"repeats": 1, "warmup": 0}


def peer_limit(suite: str, limits: dict | None = None, tool: str | None = None) -> int:
    limits = limits or MAX_PEER_ROWS
    return limits.get(tool, limits.get(suite, limits["default"]))


def peer_allowed(suite: str, n: int | None, limits: dict | None = None, tool: str | None = None) -> bool:
    return n is None or n <= peer_limit(suite, limits, tool)


@contextlib.contextmanager
def task_profile(client, into: list):
    """Per-task compute times on the workers (Dask's task stream) while the block runs; appends a
    summary to ``into``. These per-partition times feed the cost model."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        yield
    durations = []
    for t in ts.data:
        for ss in t.get("startstops", ()):
            if ss.get("action") == "compute":
                durations.append(ss["stop"] - ss["start"])
    d = np.asarray(durations) if durations else np.zeros(1)
    into.append({"tasks": len(durations), "task_seconds": float(d.sum()), "task_s_median": float(np.median(d)),
                 "task_s_p95": float(np.percentile(d, 95)), "task_s_max": float(d.max())})


def _profiled(client, fn, into: list):
    def run():
        with task_profile(client, into):
            return fn()
    return run


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def _cluster(workers: int):
    """A fresh LocalCluster of exactly ``workers`` for one measurement (never a client already
    around: the scaling suite needs the worker count it asks for).

    Starting one sets OMP_NUM_THREADS=1 (and the MKL/OpenBLAS twins) in this process's
    environment, for its workers; an OpenMP library loaded afterwards here (XGBoost) would then
    never use more than one thread, so the driver's environment is put back on exit."""
    import os

    from distributed import Client, LocalCluster

    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    try:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _peer_environment(threads: int) -> dict:
    """The environment of a fresh single-process peer using ``threads`` threads."""
    import os

    return {**os.environ, **{k: str(threads) for k in THREAD_VARIABLES}}


def _row(suite, case, tool, rows, workers, m=None, agree=None, note=None, profile: list | None = None, **extra) -> dict:
    r = {"suite": suite, "case": case, "tool": tool, "rows": rows, "workers": workers, "agree": agree, "note": note}
    if m is not None:
        r.update({k: m[k] for k in ("seconds", "min_s", "max_s", "first_s", "repeats", "peak_rss_bytes")})
        r["peak_rss_process_bytes"] = m.get("peak_rss_process_bytes")
        r["warmup"] = m.get("warmup", 1)
        r["rows_per_s"] = rows / m["seconds"] if rows and m["seconds"] > 0 else None
    if profile:
        r.update(profile[-1])  # the last timed run's per-task times
    r.update(extra)
    return r


def _not_run(suite, case, tool, rows, workers, limits=None) -> dict:
    return _row(suite, case, tool, rows, workers, note=f"not run above {peer_limit(suite, limits, tool):,} rows (time budget of the full run)")


def _mock_files(rows: int, work: Path, client) -> Path:
    from survey_engine.mock.sky import write_mock_sky

    out = work / f"mock_{rows}"
    if not out.exists():
        write_mock_sky(rows, out, seed=11, client=client, progress=False)
    return out


# -- import: survey_engine vs hats-import ---------------------------------------------------------

def import_max_rows(n: int) -> int:
    """Rows per partition for an n-row import: about 20 partitions, at least 10k, at most 1M rows."""
    return int(min(1_000_000, max(10_000, n // 20)))


def suite_import(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    rows_out = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        with _cluster(workers) as client:
            src = _mock_files(n, work, client)
            max_rows = import_max_rows(n)
            prof: list = []

            def ours():
                out = work / f"se_import_{n}"
                shutil.rmtree(out, ignore_errors=True)
                run_import(ImportArguments([str(src)], str(out), id_column="source_id", max_rows=max_rows, margin_arcsec=5.0), client=client, progress=False)
                return _ids(out)

            m_ours = timed(_profiled(client, ours, prof), **plan)
            ours_ids = m_ours.pop("value")
            partitions = _partitions(work / f"se_import_{n}")
            rows_out.append(_row("import", f"{n} rows", "survey_engine", n, workers, m_ours, agree=len(ours_ids) == n, profile=prof,
                                 partitions=partitions))
            import importlib.util

            if importlib.util.find_spec("hats_import") is None:
                rows_out.append(_row("import", f"{n} rows", "hats_import", n, workers, note="hats-import not installed"))
            elif not peer_allowed("import", n, peer_limits):
                rows_out.append(_not_run("import", f"{n} rows", "hats_import", n, workers, peer_limits))
            else:
                def theirs():
                    out = work / f"hi_import_{n}"
                    shutil.rmtree(out, ignore_errors=True)
                    _hats_import(src, out, client, max_rows)
                    return _ids(out)

                m_theirs = timed(theirs, **plan)
                same = np.array_equal(np.sort(ours_ids), np.sort(m_theirs.pop("value")))
                rows_out.append(_row("import", f"{n} rows", "hats_import", n, workers, m_theirs, agree=bool(same)))
                shutil.rmtree(work / f"hi_import_{n}", ignore_errors=True)
            del ours_ids
            if n >= BIG:  # the biggest inputs are not needed again: keep the disk free
                shutil.rmtree(work / f"se_import_{n}", ignore_errors=True)
    return rows_out


def _partitions(path: Path) -> int | None:
    from survey_engine.catalog.catalog import open_catalog

    try:
        return int(open_catalog(path, margin=None).npartitions)
    except Exception:
        return None


# -- margins on an existing catalog: survey_engine vs hats-import's margin pipeline -----------------

def suite_margins(sizes, repeats, workers, work: Path, peer_limits=None, radius: float = 10.0) -> list[dict]:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.catalog.margin_build import build_margin
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    rows_out = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        case = f"{n} rows, {radius:g}\" margin"
        with _cluster(workers) as client:
            src = _mock_files(n, work, client)
            base = work / f"mg_base_{n}"
            if not base.exists():  # the same catalog (no margin) for both tools
                run_import(ImportArguments([str(src)], str(base), id_column="source_id", max_rows=import_max_rows(n), margin_arcsec=0,
                                           highest_order=10), client=client, progress=False)
            prof: list = []

            def ours():
                cat = work / f"mg_ours_{n}"
                shutil.rmtree(cat, ignore_errors=True)
                shutil.copytree(base, cat)
                path = build_margin(cat, radius, client=client, progress=False)
                return _ids_of(path)

            m = timed(_profiled(client, ours, prof), **plan)
            ours_ids = m.pop("value")
            # exactness: every margin row is within the radius of its partition (checked by the
            # catalog tests against brute force); here: the rows agree with hats-import's superset
            rows_out.append(_row("margins", case, "survey_engine", n, workers, m, agree=None, profile=prof, margin_rows=len(ours_ids)))
            import importlib.util

            if importlib.util.find_spec("hats_import") is None:
                rows_out[-1]["agree"] = len(ours_ids) > 0
                rows_out.append(_row("margins", case, "hats_import", n, workers, note="hats-import not installed"))
            elif not peer_allowed("margins", n, peer_limits):
                rows_out[-1]["agree"] = len(ours_ids) > 0
                rows_out.append(_not_run("margins", case, "hats_import", n, workers, peer_limits))
            else:
                def theirs():
                    from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
                    from hats_import.pipeline import pipeline_with_client

                    out = work / f"mg_hi_{n}"
                    shutil.rmtree(out, ignore_errors=True)
                    args = MarginCacheArguments(input_catalog_path=str(open_catalog(base, margin=None).path), output_path=str(work),
                                                output_artifact_name=out.name, margin_threshold=radius, progress_bar=False, resume=False)
                    pipeline_with_client(args, client)
                    return _ids_of(out)

                mt = timed(theirs, **plan)
                theirs_ids = mt.pop("value")
                within = bool(np.isin(ours_ids, theirs_ids).all()) and len(ours_ids) > 0
                rows_out[-1]["agree"] = within
                rows_out.append(_row("margins", case, "hats_import", n, workers, mt, agree=within, margin_rows=len(theirs_ids),
                                     note="hats-import keeps whole border pixels (a superset); agree = every one of our margin rows is in theirs"))
            for d in (f"mg_ours_{n}", f"mg_hi_{n}"):
                shutil.rmtree(work / d, ignore_errors=True)
    return rows_out


def _ids_of(path: Path) -> np.ndarray:
    import pyarrow.dataset as ds

    files = sorted(str(f) for f in Path(path).rglob("Npix=*.parquet"))
    if not files:
        return np.zeros(0, dtype=np.int64)
    return ds.dataset(files, format="parquet").to_table(columns=["source_id"]).column(0).to_numpy()


def _ids(path: Path) -> np.ndarray:
    import pyarrow.dataset as ds

    from survey_engine.catalog.catalog import open_catalog

    cat = open_catalog(path)
    return ds.dataset([str(f) for f in cat.partition_files()], format="parquet").to_table(columns=["source_id"]).column(0).to_numpy()


def _hats_import(src: Path, out: Path, client, max_rows: int) -> None:
    """hats-import's catalog + 5" margin from a Parquet file or a folder of them."""
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    files = sorted(str(p) for p in src.glob("*.parquet")) if src.is_dir() else [str(src)]
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


def pair_array(left_ids: np.ndarray, right_ids: np.ndarray) -> np.ndarray:
    """A pair set as a sorted (n, 2) int64 array: equal sets give equal arrays. Every tool's time
    includes building it (a Python set of 50M tuples would not fit the harness in memory)."""
    pairs = np.column_stack([np.asarray(left_ids, dtype=np.int64), np.asarray(right_ids, dtype=np.int64)])
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _xyz(df):
    from survey_engine.catalog.healpix import radec_to_xyz

    return radec_to_xyz(df.ra.to_numpy(), df.dec.to_numpy())


XM_SMALL_PARTITIONS = 40  # LSDB also runs on catalogs of n / 40 rows per partition: its best size is not ours


def suite_crossmatch(sizes, repeats, workers, work: Path, peer_limits=None, radius: float = 1.0,
                     partition_rows: int | None = None) -> list[dict]:
    """Nearest neighbour within ``radius`` of A (n uniform rows) in B (A jittered by 0.35" per axis
    plus n/5 extra rows): survey_engine, LSDB (on the same catalogs, at most ``partition_rows`` rows
    per partition, default n/10, and on n/40-row partitions),
    astropy and one global cKDTree, each in a fresh process (``bench/xm_peer.py``): a cold run
    (imports, opening, matching) then warm runs. The driver keeps only the truth and one tool's
    pair array at a time, so 5x10^7 rows fit this machine."""
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        a, b = pair_inputs(n)
        case = f"{n} x {len(b)}" + (f", partitions of {partition_rows:,} rows" if partition_rows else "")
        files = {"A": work / f"xm_A_{n}.parquet", "B": work / f"xm_B_{n}.parquet"}
        a.to_parquet(files["A"])
        b.to_parquet(files["B"])
        del a, b
        layouts = {"default": partition_rows or max(20_000, n // 10)}
        if peer_allowed("crossmatch", n, peer_limits, "lsdb"):
            layouts["small"] = max(5_000, n // XM_SMALL_PARTITIONS)
        cats: dict[tuple[str, str], Path] = {}
        with _cluster(workers) as client:  # closed before the tools run: each starts its own
            for lay, max_rows in layouts.items():
                for name, margin in (("A", 0.0), ("B", 5.0)):
                    out = work / f"xm_{name}_{n}_{lay}"
                    shutil.rmtree(out, ignore_errors=True)
                    run_import(ImportArguments([str(files[name])], str(out), id_column="id", max_rows=max_rows, margin_arcsec=margin),
                               client=client, progress=False)
                    cats[(name, lay)] = out
        parts = {lay: len(open_catalog(cats[("A", lay)]).partitions) for lay in layouts}

        def run(tool, lay="default"):
            spec = {"left": str(cats[("A", lay)]), "right": str(cats[("B", lay)]), "left_file": str(files["A"]), "right_file": str(files["B"]),
                    "radius": radius, "workers": workers, "runs": 1 + plan["repeats"], "pairs_out": str(work / f"xm_pairs_{tool}_{lay}_{n}.npy")}
            return _peer_process("survey_engine.bench.xm_peer", [tool, json.dumps(spec)], f"cross-match benchmark of {tool}"), spec["pairs_out"]

        truth_res, truth_file = run("ckdtree_global")
        truth = np.load(truth_file)
        tools = [("ckdtree_global", "ckdtree_global", "default"), ("survey_engine", "survey_engine", "default"), ("lsdb", "lsdb", "default"),
                 ("lsdb_small_partitions", "lsdb", "small"), ("astropy", "astropy", "default")]
        for label, tool, lay in tools:
            if label != "ckdtree_global" and tool != "survey_engine" and not peer_allowed("crossmatch", n, peer_limits, tool):
                out_rows.append(_not_run("crossmatch", case, label, n, workers, peer_limits))
                continue
            if lay not in layouts:
                continue
            try:
                res, pairs_file = (truth_res, truth_file) if label == "ckdtree_global" else run(tool, lay)
            except ImportError as exc:
                out_rows.append(_row("crossmatch", case, label, n, workers, note=f"not installed: {exc}"))
                continue
            agree = True if label == "ckdtree_global" else bool(np.array_equal(np.load(pairs_file), truth))
            note = f"partitions: {parts[lay]} left" if tool in ("survey_engine", "lsdb") else "in-memory arrays; cold includes reading the Parquet inputs"
            warm, cold = _xm_measure(res["runs"][1:]), _xm_measure(res["runs"][:1])
            out_rows.append(_row("crossmatch", case, label, n, workers, warm, agree=agree, pairs=res["pairs"], note=note,
                                 profile=[res["profile"]] if res.get("profile") else None))
            out_rows.append(_row("crossmatch", f"{case}, cold", label, n, workers, cold, agree=agree, pairs=res["pairs"],
                                 note=note + "; a fresh process: imports, opening, matching"))
            if label != "ckdtree_global":
                Path(pairs_file).unlink(missing_ok=True)
        del truth
        Path(truth_file).unlink(missing_ok=True)
    return out_rows


def _peer_process(module: str, args: list[str], what: str, env: dict | None = None) -> dict:
    """Run ``python -m module args`` in a fresh process; its last stdout line is a JSON result.
    A peer library that is not installed is an ImportError (the row then says so)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        if "ModuleNotFoundError" in proc.stderr:
            raise ImportError(proc.stderr.strip().splitlines()[-1])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _xm_measure(runs: list[dict]) -> dict:
    return run_summary([r["seconds"] for r in runs], runs[0]["seconds"], 0, max(r["peak_rss_bytes"] for r in runs),
                       max(r["peak_rss_process_bytes"] for r in runs))


# -- features: per partition on the cluster vs pandas in one process --------------------------------

FEATURES = ["u-g", "g-r", "r-i", "i-z", "dered(r)", "snr(r_err)", "absmag(phot_g_mean_mag)", "v_tan", "gal_b"]


def _mock_catalog(n: int, work: Path, client, margin: float = 0.0, max_rows: int | None = None) -> Path:
    """The mock sky of n rows as a HATS catalog (made once per size and margin, then reused)."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    cat_path = work / f"mock_cat_{n}_m{margin:g}"
    if not cat_path.exists():
        src = _mock_files(n, work, client)
        run_import(ImportArguments([str(src)], str(cat_path), id_column="source_id", max_rows=max_rows or max(20_000, n // 20),
                                   margin_arcsec=margin), client=client, progress=False)
    return cat_path


def suite_features(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.features.spec import FeatureSpec

    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        case = f"{n} rows, {len(FEATURES)} features"
        with _cluster(workers) as client:
            src = _mock_files(n, work, client)
            cat = open_catalog(_mock_catalog(n, work, client))
            spec = FeatureSpec(FEATURES, ebv_column="ebv")
            prof: list = []

            def ours():
                frame = cat.to_dask()
                feats = frame.map_partitions(spec.compute, meta=spec.compute(frame._meta_nonempty.head(2)).iloc[:0])
                return feats.sum().compute()

            def pandas_():
                df = pd.concat([pd.read_parquet(f) for f in sorted(src.glob("*.parquet"))], ignore_index=True)
                return spec.compute(df).sum()

            m_ours = timed(_profiled(client, ours, prof), **plan)
            if not peer_allowed("features", n, peer_limits):
                out_rows.append(_row("features", case, "survey_engine", n, workers, m_ours, agree=bool(np.isfinite(m_ours["value"].to_numpy()).any()), profile=prof))
                out_rows.append(_not_run("features", case, "pandas_single_process", n, 1, peer_limits))
                continue
            m_pd = timed(pandas_, **plan)
            agree = bool(np.allclose(m_ours["value"].to_numpy(), m_pd["value"].to_numpy(), rtol=1e-9, equal_nan=True))
            out_rows.append(_row("features", case, "survey_engine", n, workers, m_ours, agree=agree, profile=prof))
            out_rows.append(_row("features", case, "pandas_single_process", n, 1, m_pd, agree=agree))
    return out_rows


# -- training: xgboost.dask on 1..N workers vs single-process XGBoost with the same threads ----------

TRAIN_FEATURES = ["u-g", "g-r", "r-i", "i-z", "r"]
TRAIN_PARAMS = {"objective": "reg:squarederror", "max_depth": 7, "eta": 0.3, "tree_method": "hist", "verbosity": 0, "seed": 1, "max_bin": 256}
TRAIN_ROUNDS = 50


def _training_rows(n: int, work: Path, client) -> tuple[pd.DataFrame, pd.Series]:
    """Features (float32) and log(1 + z) of every row of the n-row mock sky: stars, galaxies, QSOs."""
    import pyarrow.dataset as ds

    from survey_engine.features.spec import FeatureSpec

    src = _mock_files(n, work, client)
    table = ds.dataset(sorted(str(f) for f in src.glob("*.parquet")), format="parquet").to_table(columns=["u", "g", "r", "i", "z", "redshift"])
    frame = table.to_pandas()
    X = FeatureSpec(TRAIN_FEATURES).compute(frame).astype(np.float32)
    y = np.log1p(frame["redshift"].clip(lower=0)).astype(np.float32)
    return X, y


def _galaxy_nmad(booster, X: pd.DataFrame, y: pd.Series, sample: int = 200_000) -> float:
    from survey_engine.ml import metrics as M

    ok = (y > np.log1p(0.01)).to_numpy()
    Xs, ys = X[ok].iloc[:sample], y[ok].iloc[:sample]
    return M.photoz_metrics(np.expm1(booster.inplace_predict(Xs.to_numpy())), np.expm1(ys.to_numpy().astype(float)))["sigma_nmad"]


def suite_train(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    """Distributed overhead at equal threads (xgboost.dask on w workers x 1 thread vs one process
    with w threads, the same rows in memory) and scaling across workers, per size."""
    import dask.dataframe as dd
    import xgboost as xgb
    from xgboost import dask as dxgb

    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        with _cluster(workers) as client:
            X, y = _training_rows(n, work, client)
        data_file = work / f"train_rows_{n}.npz"
        np.savez(data_file, X=X.to_numpy(), y=y.to_numpy())
        case = f"{len(X)} mock rows, {len(TRAIN_FEATURES)} features, {TRAIN_ROUNDS} rounds"
        pcase = f"{len(X)} mock rows, predict with the {TRAIN_ROUNDS}-round model"
        base_d = base_p = None
        for w in range(1, workers + 1):
            with _cluster(w) as client:
                parts = max(2 * w, len(X) // 2_000_000)
                Xd = client.persist(dd.from_pandas(X, npartitions=parts))
                yd = client.persist(dd.from_pandas(y, npartitions=parts))
                prof: list = []
                pprof: list = []

                def distributed():
                    with xgb.config_context(verbosity=0):
                        dtrain = dxgb.DaskQuantileDMatrix(client, Xd, yd, max_bin=TRAIN_PARAMS["max_bin"])
                        return dxgb.train(client, {**TRAIN_PARAMS, "nthread": 1}, dtrain, num_boost_round=TRAIN_ROUNDS)["booster"]

                m_d = timed(_profiled(client, distributed, prof), **plan)
                booster_d = m_d.pop("value")

                def distributed_predict():
                    return float(dxgb.inplace_predict(client, booster_d, Xd).sum().compute())

                p_d = timed(_profiled(client, distributed_predict, pprof), **plan)

            m_s, p_s, booster_s = _xgb_single_process(data_file, w, plan, work)
            p_s["value"] = p_s.pop("predict_sum")
            nm_d, nm_s = _galaxy_nmad(booster_d, X, y), _galaxy_nmad(booster_s, X, y)
            agree = bool(abs(nm_d - nm_s) <= 0.05 * nm_s)
            # prediction agreement: the distributed prediction equals the same booster's in one process
            ref = float(np.sum(booster_d.inplace_predict(X), dtype=np.float64))
            pagree = bool(abs(p_d.pop("value") - ref) <= 1e-6 * abs(ref))
            p_s.pop("value")
            base_d, base_p = base_d or m_d["seconds"], base_p or p_d["seconds"]
            out_rows.append(_row("train", case, "xgboost.dask", len(X), w, m_d, agree=agree, profile=prof, sigma_nmad=nm_d,
                                 overhead=m_d["seconds"] / m_s["seconds"] - 1, efficiency=base_d / m_d["seconds"] / w,
                                 note=f"{w} worker(s) x 1 thread; overhead = its time / single-process time at {w} thread(s) - 1"))
            out_rows.append(_row("train", case, "xgboost_single_process", len(X), w, m_s, agree=agree, sigma_nmad=nm_s,
                                 note=f"one fresh process, nthread={w} (its data loading excluded)"))
            out_rows.append(_row("train", pcase, "xgboost.dask", len(X), w, p_d, agree=pagree, profile=pprof,
                                 overhead=p_d["seconds"] / p_s["seconds"] - 1, efficiency=base_p / p_d["seconds"] / w,
                                 note="dask inplace_predict over the persisted partitions; the same booster"))
            out_rows.append(_row("train", pcase, "xgboost_single_process", len(X), w, p_s, agree=pagree,
                                 note=f"inplace_predict of its own booster, nthread={w}, in a fresh process"))
        data_file.unlink(missing_ok=True)
    return out_rows


def _xgb_single_process(data_file: Path, nthread: int, plan: dict, work: Path, params: dict | None = None, rounds: int | None = None):
    """Single-process XGBoost in a fresh process per run (``bench/xgb_peer.py``): the training and
    prediction times it reports (its data loading excluded), and its booster."""
    import xgboost as xgb

    from survey_engine.bench.measure import PeakMemory

    model = work / f"xgb_peer_{nthread}.ubj"
    args = [str(data_file), str(nthread), str(model), json.dumps(params or TRAIN_PARAMS), str(rounds or TRAIN_ROUNDS)]
    runs, peak, peak_process = [], 0, 0
    for i in range(plan["warmup"] + plan["repeats"]):
        with PeakMemory() as mem:
            runs.append(_peer_process("survey_engine.bench.xgb_peer", args, "single-process XGBoost", env=_peer_environment(nthread)))
        if i >= plan["warmup"]:
            peak, peak_process = max(peak, mem.peak), max(peak_process, mem.peak_process)
    timed_runs = runs[plan["warmup"]:]

    def summary(key):
        return run_summary([r[key] for r in timed_runs], runs[0][key], plan["warmup"], peak, peak_process)

    booster = xgb.Booster(model_file=str(model))
    return summary("train_s"), {**summary("predict_s"), "predict_sum": timed_runs[-1]["predict_sum"]}, booster


# -- prediction: a model applied to a whole catalog, written as a catalog -----------------------------

def _bench_model(work: Path, client) -> Path:
    """A photo-z model (median + 68% interval) trained once on a 100k-row mock catalog."""
    from survey_engine.ml.supervised import TrainOptions, train

    model = work / "bench_photoz_model"
    if not (model / "model.json").exists() and not model.exists():
        cat = _mock_catalog(100_000, work, client)
        train(str(cat), TrainOptions("photoz", TRAIN_FEATURES, target="redshift", where="obj_class == 'GALAXY'", params={"rounds": 200}),
              str(model), client=client, progress=False)
    return model


def suite_predict(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    """Full-catalog prediction rate: survey_engine's ``predict`` (partition by partition on the
    cluster, a new HATS catalog written) vs one process reading, predicting and writing one file."""
    import pyarrow.dataset as ds

    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ml.apply import predict
    from survey_engine.ml.artifact import load_model
    from survey_engine.ml.supervised import predict_frame

    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        case = f"photo-z on {n} rows (z_phot, z_phot_lo, z_phot_hi), catalog written"
        with _cluster(workers) as client:
            model = _bench_model(work, client)
            cat_path = _mock_catalog(n, work, client)
            prof: list = []

            def ours():
                out = work / f"pred_{n}"
                shutil.rmtree(out, ignore_errors=True)
                written = predict(str(model), str(cat_path), str(out), client=client, progress=False)
                t = ds.dataset([str(f) for f in open_catalog(written, margin=None).partition_files()], format="parquet").to_table(columns=["z_phot"])
                return len(t), float(np.sum(t.column(0).to_numpy(), dtype=np.float64))

            m = timed(_profiled(client, ours, prof), **plan)
            n_ours, sum_ours = m.pop("value")
            if not peer_allowed("predict", n, peer_limits):
                out_rows.append(_row("predict", case, "survey_engine", n, workers, m, agree=n_ours == n, profile=prof))
                out_rows.append(_not_run("predict", case, "single_process", n, 1, peer_limits))
                continue
            meta, models = load_model(model)
            files = [str(f) for f in open_catalog(cat_path, margin=None).partition_files()]

            def single():
                df = ds.dataset(files, format="parquet").to_table().to_pandas()
                res = predict_frame(df, meta, models)
                res.to_parquet(work / f"pred_single_{n}.parquet", index=False)
                return len(res), float(np.sum(res["z_phot"].to_numpy(), dtype=np.float64))

            ms = timed(single, **plan)
            n_s, sum_s = ms.pop("value")
            agree = n_ours == n_s == n and abs(sum_ours - sum_s) <= 1e-6 * abs(sum_s)
            out_rows.append(_row("predict", case, "survey_engine", n, workers, m, agree=agree, profile=prof))
            out_rows.append(_row("predict", case, "single_process", n, 1, ms, agree=agree, note="pandas + the same boosters, one Parquet file"))
            shutil.rmtree(work / f"pred_{n}", ignore_errors=True)
            (work / f"pred_single_{n}.parquet").unlink(missing_ok=True)
    return out_rows


# -- clustering: HDBSCAN per tile + margin, merged, vs one HDBSCAN over the whole table --------------

CLUSTER_FEATURES = ["pmra", "pmdec", "parallax", "pos_x", "pos_y", "pos_z"]
CLUSTER_PARAMS = {"min_cluster_size": 30, "max_cluster_fraction": 0.3}


def recovered_clusters(labels: np.ndarray, truth: np.ndarray, min_recall: float = 0.5, min_purity: float = 0.5) -> int:
    """How many true clusters (truth >= 0) have a found cluster holding at least ``min_recall`` of
    their members with at least ``min_purity`` of its own rows from them."""
    found = 0
    for cid in np.unique(truth[truth >= 0]):
        members = truth == cid
        hits = labels[members & (labels >= 0)]
        if not len(hits):
            continue
        best = np.bincount(hits).argmax()
        inter = np.sum(members & (labels == best))
        found += inter / members.sum() >= min_recall and inter / np.sum(labels == best) >= min_purity
    return int(found)


def suite_clustering(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.features.spec import FeatureSpec
    from survey_engine.ml.cluster import cluster_catalog

    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        case = f"HDBSCAN on {n} mock rows ({', '.join(CLUSTER_FEATURES)})"
        with _cluster(workers) as client:
            cat_path = _mock_catalog(n, work, client, margin=1800.0, max_rows=max(12_500, n // 8))
            prof: list = []

            def ours():
                out = work / f"clu_{n}"
                shutil.rmtree(out, ignore_errors=True)
                summary = cluster_catalog(str(cat_path), CLUSTER_FEATURES, "hdbscan", str(out), params=dict(CLUSTER_PARAMS), client=client, progress=False)
                df = open_catalog(out, margin=None).compute()
                return recovered_clusters(df["cluster_id"].to_numpy(), df["cluster_id_input"].to_numpy()), summary["tiles"]

            m = timed(_profiled(client, ours, prof), **plan)
            (rec_ours, tiles) = m.pop("value")
            truth_n = int(open_catalog(cat_path, margin=None).to_dask()["cluster_id"].max().compute()) + 1
            if not peer_allowed("clustering", n, peer_limits):
                out_rows.append(_row("clustering", case, "survey_engine", n, workers, m, agree=rec_ours == truth_n, profile=prof,
                                     recovered=rec_ours, true_clusters=truth_n, tiles=tiles))
                out_rows.append(_not_run("clustering", case, "sklearn_single_process", n, 1, peer_limits))
                continue
            spec = FeatureSpec(CLUSTER_FEATURES)
            files = [str(f) for f in open_catalog(cat_path, margin=None).partition_files()]

            def single():
                from sklearn.cluster import HDBSCAN

                df = pd.concat([pd.read_parquet(f, columns=["ra", "dec", "pmra", "pmdec", "parallax", "cluster_id"]) for f in files])
                F = spec.compute(df).to_numpy(dtype=float)
                q = np.nanpercentile(F, [25, 50, 75], axis=0)
                scale = (q[2] - q[0]) / 1.349
                scale[~(scale > 0)] = 1
                X = (F - q[1]) / scale
                ok = np.isfinite(X).all(axis=1)
                labels = np.full(len(df), -1)
                labels[ok] = HDBSCAN(min_cluster_size=CLUSTER_PARAMS["min_cluster_size"],
                                     max_cluster_size=int(CLUSTER_PARAMS["max_cluster_fraction"] * ok.sum())).fit_predict(X[ok])
                return recovered_clusters(labels, df["cluster_id"].to_numpy())

            ms = timed(single, **plan)
            rec_s = ms.pop("value")
            agree = rec_ours == rec_s == truth_n
            out_rows.append(_row("clustering", case, "survey_engine", n, workers, m, agree=agree, profile=prof, recovered=rec_ours,
                                 true_clusters=truth_n, tiles=tiles, note="per tile + 0.5 deg margin, merged across tile borders"))
            out_rows.append(_row("clustering", case, "sklearn_single_process", n, 1, ms, agree=agree, recovered=rec_s, true_clusters=truth_n,
                                 note="one HDBSCAN over the whole table"))
            shutil.rmtree(work / f"clu_{n}", ignore_errors=True)
    return out_rows


# -- TAP ingest: ours vs raw keyset paging against the same server ----------------------------------

def suite_tap(sizes, repeats, workers, work: Path, url: str = "http://127.0.0.1:8080/tap", table: str = "segaia.main",
              where: str | None = "phot_g_mean_mag < 8", page_rows: int = 10_000, peer_limits=None) -> list[dict]:
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

def suite_e2e(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
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
                run_job(spec, client=client, progress=False, echo=None, report=False)  # the stages, not the report
                return open_catalog(spec.workdir / "zphot").row_count()

            m = timed(job, repeats, warmup=0)
            out_rows.append(_row("e2e", f"mock {n} rows: import + photo-z train + predict", "survey_engine", n, workers, m, agree=m["value"] == n))
    return out_rows


# -- scaling: strong (fixed data, 1 -> N workers) and weak (data grows with workers) ----------------

def suite_scaling(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
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


# -- real catalogs from ../shared/data: the same peers on real skies --------------------------------

def shared_data_root() -> Path:
    """``$SURVEY_ENGINE_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    import os

    env = os.environ.get("SURVEY_ENGINE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


REAL_FILES = {"gaia_g10": "clusters_xmatch/gaia_dr3_allsky_G10.parquet",
              "blanco1_dr2": "clusters_xmatch/blanco1/blanco1_gaia_dr2_G18_field.parquet",
              "blanco1_dr3": "clusters_xmatch/blanco1/blanco1_gaia_dr3_G17_field.parquet",
              "sdss_photoz": "photoz/sdss_galaxy_colors_50k.parquet"}


def suite_real(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    """Real catalogs: import of the all-sky Gaia DR3 G<10 table (482k rows) vs hats-import; the
    Blanco 1 Gaia DR3 field against DR2 (across RA 0) vs LSDB, astropy and a global cKDTree;
    photo-z training on the SDSS galaxies, xgboost.dask vs one process."""
    import os

    from scipy.spatial import cKDTree

    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    root = shared_data_root()
    missing = [f for f in REAL_FILES.values() if not (root / f).exists()]
    if missing:
        msg = f"real data not found under {root} ({missing[0]}...); set SURVEY_ENGINE_SHARED_DATA"
        if os.environ.get("CI") == "true":
            raise FileNotFoundError(msg)  # in CI the data must be there: fail, do not skip
        return [_row("real", "real catalogs", "survey_engine", None, workers, note=msg)]
    plan = repeat_plan(None, repeats)
    out_rows = []
    with _cluster(workers) as client:
        # import: Gaia DR3 G < 10, all sky
        src = root / REAL_FILES["gaia_g10"]
        n = int(pd.read_parquet(src, columns=["source_id"]).shape[0])
        case = f"import Gaia DR3 G<10 all-sky ({n} rows) + 5\" margin"
        prof: list = []

        def ours_import():
            out = work / "real_import_ours"
            shutil.rmtree(out, ignore_errors=True)
            run_import(ImportArguments([str(src)], str(out), id_column="source_id", max_rows=50_000, margin_arcsec=5.0), client=client, progress=False)
            return np.sort(_ids(out))

        def hats_import_():
            out = work / "real_import_hi"
            shutil.rmtree(out, ignore_errors=True)
            _hats_import(src, out, client, 50_000)
            return np.sort(_ids(out))

        m = timed(_profiled(client, ours_import, prof), **plan)
        mine = m.pop("value")
        mh = timed(hats_import_, **plan)
        same = bool(np.array_equal(mine, mh.pop("value"))) and len(mine) == n
        out_rows.append(_row("real", case, "survey_engine", n, workers, m, agree=same, profile=prof))
        out_rows.append(_row("real", case, "hats_import", n, workers, mh, agree=same))

        # cross-match: Blanco 1, Gaia DR3 (G<17) nearest DR2 (G<18) within 1", the field straddles RA 0
        dr3, dr2 = pd.read_parquet(root / REAL_FILES["blanco1_dr3"]), pd.read_parquet(root / REAL_FILES["blanco1_dr2"])
        dr2 = dr2.assign(ra=dr2.ra % 360)
        paths = {}
        for name, f, idc, margin in (("dr3", REAL_FILES["blanco1_dr3"], "SOURCE_ID", 0.0), ("dr2", REAL_FILES["blanco1_dr2"], "source_id", 5.0)):
            out = work / f"real_{name}"
            shutil.rmtree(out, ignore_errors=True)
            run_import(ImportArguments([str(root / f)], str(out), id_column=idc, max_rows=2000, margin_arcsec=margin), client=client, progress=False)
            paths[name] = out
        case = f"Blanco 1 Gaia DR3 ({len(dr3)}) nearest DR2 ({len(dr2)}) within 1\""

        def ckdtree():
            d, i = cKDTree(_xyz(dr2)).query(_xyz(dr3), k=1, distance_upper_bound=2 * np.sin(np.radians(1 / 3600) / 2))
            ok = np.isfinite(d)
            return pair_array(dr3.SOURCE_ID.to_numpy()[ok], dr2.source_id.to_numpy()[i[ok]])

        def ours():
            res = open_catalog(paths["dr3"]).crossmatch(open_catalog(paths["dr2"]), 1.0, left_columns=["SOURCE_ID"], right_columns=["source_id"],
                                                         client=client).compute()
            return pair_array(res.SOURCE_ID_1.to_numpy(), res.source_id_2.to_numpy())

        def lsdb_():
            import lsdb

            left = lsdb.open_catalog(paths["dr3"], columns=["SOURCE_ID", "ra", "dec"])
            right = lsdb.open_catalog(paths["dr2"], columns=["source_id", "ra", "dec"])
            res = left.crossmatch(right, radius_arcsec=1.0, n_neighbors=1, suffixes=("_1", "_2"), suffix_method="all_columns").compute()
            return pair_array(res.SOURCE_ID_1.to_numpy(), res.source_id_2.to_numpy())

        def astropy_():
            import astropy.units as u
            from astropy.coordinates import SkyCoord, match_coordinates_sky

            idx, sep, _ = match_coordinates_sky(SkyCoord(dr3.ra.values * u.deg, dr3.dec.values * u.deg), SkyCoord(dr2.ra.values * u.deg, dr2.dec.values * u.deg))
            ok = sep.arcsec <= 1.0
            return pair_array(dr3.SOURCE_ID.to_numpy()[ok], dr2.source_id.to_numpy()[idx[ok]])

        mt = timed(ckdtree, **plan)
        truth = mt.pop("value")
        out_rows.append(_row("real", case, "ckdtree_global", len(dr3), 1, mt, agree=True, pairs=len(truth)))
        prof = []
        for tool, fn in (("survey_engine", _profiled(client, ours, prof)), ("lsdb", lsdb_), ("astropy", astropy_)):
            m = timed(fn, **plan)
            pairs = m.pop("value")
            out_rows.append(_row("real", case, tool, len(dr3), workers, m, agree=bool(np.array_equal(pairs, truth)), pairs=len(pairs),
                                 profile=prof if tool == "survey_engine" else None))

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
        Xd, yd = client.persist(dd.from_pandas(X, npartitions=2 * workers)), client.persist(dd.from_pandas(y, npartitions=2 * workers))
        params = {**TRAIN_PARAMS, "eta": 0.1, "objective": "reg:absoluteerror"}
        case = f"photo-z training, SDSS galaxies ({len(X)} rows), 200 rounds"

        def distributed():
            with xgb.config_context(verbosity=0):
                return dxgb.train(client, {**params, "nthread": 1}, dxgb.DaskQuantileDMatrix(client, Xd, yd), num_boost_round=200)["booster"]

        prof = []
        md = timed(_profiled(client, distributed, prof), **plan)
        data_file = work / "real_sdss_rows.npz"
        np.savez(data_file, X=X.to_numpy(), y=y.to_numpy())
        ms, _, booster_s = _xgb_single_process(data_file, workers, plan, work, params=params, rounds=200)
        zs = np.expm1(y.to_numpy().astype(float))
        nm = [M.photoz_metrics(np.expm1(b.inplace_predict(X.to_numpy()).astype(float)), zs)["sigma_nmad"] for b in (md.pop("value"), booster_s)]
        agree = bool(abs(nm[0] - nm[1]) <= 0.05 * nm[1])
        out_rows.append(_row("real", case, "xgboost.dask", len(X), workers, md, agree=agree, profile=prof, sigma_nmad_train=nm[0]))
        out_rows.append(_row("real", case, "xgboost_single_process", len(X), workers, ms, agree=agree, sigma_nmad_train=nm[1],
                             note=f"one fresh process, nthread={workers} (its data loading excluded)"))

        def sklearn_():
            from sklearn.ensemble import HistGradientBoostingRegressor

            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=workers, user_api="openmp"):  # the driver's OMP_NUM_THREADS is 1 (LocalCluster)
                return HistGradientBoostingRegressor(loss="absolute_error", max_iter=200, max_depth=7, learning_rate=0.1,
                                                     random_state=1).fit(X.to_numpy(), y.to_numpy())

        mk = timed(sklearn_, **plan)
        nm_k = M.photoz_metrics(np.expm1(mk.pop("value").predict(X.to_numpy()).astype(float)), zs)["sigma_nmad"]
        out_rows.append(_row("real", case, "sklearn_hist_gradient_boosting", len(X), workers, mk, agree=bool(nm[0] <= 1.05 * nm_k),
                             sigma_nmad_train=nm_k, note=f"one process, {workers} threads, the same loss, depth and rounds; agree = ours at most 5% worse"))
    return out_rows


RUNNERS = {"import": suite_import, "margins": suite_margins, "crossmatch": suite_crossmatch, "features": suite_features,
           "train": suite_train, "predict": suite_predict, "clustering": suite_clustering, "real": suite_real, "tap": suite_tap,
           "e2e": suite_e2e, "scaling": suite_scaling}
OURS = ("survey_engine", "xgboost.dask")
MODELLED = ("import", "margins", "crossmatch", "features", "train", "predict")
FULL_SKY = (("Gaia DR3", 1_800_000_000), ("LSST-scale", 20_000_000_000))


def cost_models(rows: list[dict]) -> list[dict]:
    """Per stage, a cost model fitted from the measured per-task (per-partition) times:
    ``time(R rows, N cores) = a + s * R + c * R / N``. ``c`` (core-seconds per row) is the least
    squares slope of the summed task times over the measured sizes; what the wall time holds
    beyond the tasks' share per worker (planning, driver work, scheduling) is fitted as
    ``a + s * R`` (a constant when only one size was measured), since driver work grows with the
    data too. ``max_rel_residual`` says how well one per-row cost describes every size."""
    models = []
    for stage in MODELLED:
        pts = [r for r in rows if r["suite"] == stage and r["tool"] in OURS and r.get("task_seconds") and r.get("rows") and r.get("seconds")]
        if stage == "train" and pts:
            pts = [r for r in pts if "predict with" not in r["case"]]  # training only
            top = max(r["workers"] for r in pts)
            pts = [r for r in pts if r["workers"] == top]
        if not pts:
            continue
        R = np.array([float(r["rows"]) for r in pts])
        C = np.array([r["task_seconds"] for r in pts])
        c = float((C * R).sum() / (R * R).sum())
        serial = np.array([max(0.0, r["seconds"] - r["task_seconds"] / r["workers"]) for r in pts])
        a, s_row = float(np.median(serial)), 0.0
        if len(set(R)) > 1:
            s_row, a = (float(v) for v in np.polyfit(R, serial, 1))
            if s_row < 0 or a < 0:  # no growth measured: keep the median as a constant
                a, s_row = float(np.median(serial)), 0.0
        models.append({"stage": stage, "core_s_per_row": c, "serial_s": a, "serial_s_per_row": s_row, "sizes": [int(x) for x in R],
                       "task_s_p95": [r.get("task_s_p95") for r in pts],
                       "max_rel_residual": float(np.max(np.abs(c * R - C) / C))})
    return models


def projections(rows: list[dict], cores: tuple[int, ...] = (128, 1024)) -> list[dict]:
    """Full-sky projections (Gaia DR3 1.8 B rows, LSST-scale 20 B rows) from each stage's cost
    model, onto N cores. A projection, not a measurement: it assumes the per-row cost measured here
    holds at scale, work spreads evenly over the cores and storage keeps up."""
    out = []
    for m in cost_models(rows):
        for name, total in FULL_SKY:
            for n in cores:
                seconds = m["serial_s"] + m.get("serial_s_per_row", 0.0) * total + m["core_s_per_row"] * total / n
                out.append({"stage": m["stage"], "catalog": name, "rows": total, "cores": n, "projected_hours": seconds / 3600,
                            "core_s_per_row": m["core_s_per_row"], "serial_s": m["serial_s"], "serial_s_per_row": m.get("serial_s_per_row", 0.0)})
    return out
