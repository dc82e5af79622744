"""Cross-match: survey_engine vs LSDB vs astropy vs one global scipy cKDTree, same data and cores.

    python benchmarks/bench_crossmatch.py --rows 1000000 5000000 [--max-rows 500000]

Catalog A: N uniform points; B: A jittered by 0.35" per axis plus 0.2 N extra points (the setup of
``../shared/notes/anchors.md``). Nearest neighbour within 1". survey_engine and LSDB read the same
HATS collections (ours, with a 5" margin on B) on a LocalCluster of 2 workers x 1 thread; astropy
and cKDTree (workers=2) run in-process on arrays already in memory. "first" is the first run in a
fresh cluster (LSDB's includes its numba compilation), "repeat" the median of the next runs.
Agreement: the pair set equals the global cKDTree's (which is the brute-force answer); every tool's
time includes turning its result into a sorted id-pair array (``survey_engine.bench.suites.pair_array``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def make_inputs(n: int, work: Path, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    from survey_engine.bench.suites import pair_inputs

    return pair_inputs(n, seed)


def xyz(df):
    from survey_engine.catalog.healpix import radec_to_xyz

    return radec_to_xyz(df.ra.to_numpy(), df.dec.to_numpy())


def pairs_of(left_ids, right_ids) -> np.ndarray:
    from survey_engine.bench.suites import pair_array

    return pair_array(left_ids, right_ids)


def run_ckdtree(a, b, radius):
    from scipy.spatial import cKDTree

    tree = cKDTree(xyz(b))
    d, i = tree.query(xyz(a), k=1, distance_upper_bound=2 * np.sin(np.radians(radius / 3600) / 2), workers=2)
    ok = np.isfinite(d)
    return pairs_of(a.id.to_numpy()[ok], b.id.to_numpy()[i[ok]])


def run_astropy(a, b, radius):
    import astropy.units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    idx, sep, _ = match_coordinates_sky(SkyCoord(a.ra.values * u.deg, a.dec.values * u.deg), SkyCoord(b.ra.values * u.deg, b.dec.values * u.deg))
    ok = sep.arcsec <= radius
    return pairs_of(a.id.to_numpy()[ok], b.id.to_numpy()[idx[ok]])


def run_survey_engine(pa, pb, radius, client):
    from survey_engine import open_catalog

    res = open_catalog(pa).crossmatch(open_catalog(pb), radius, left_columns=["id"], right_columns=["id"]).compute()
    return pairs_of(res.id_1.to_numpy(), res.id_2.to_numpy())


def run_lsdb(pa, pb, radius, client):
    import lsdb

    left = lsdb.open_catalog(pa, columns=["id", "ra", "dec"])
    right = lsdb.open_catalog(pb, columns=["id", "ra", "dec"])
    res = left.crossmatch(right, radius_arcsec=radius, n_neighbors=1, suffixes=("_1", "_2"), suffix_method="all_columns").compute()
    return pairs_of(res.id_1.to_numpy(), res.id_2.to_numpy())


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--max-rows", type=int, default=500_000, help="rows per partition of both catalogs")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--radius", type=float, default=1.0)
    parser.add_argument("--work", default="/tmp/se_bench_xmatch")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import
    from bench_import import PeakMemory, machine_info

    work = Path(args.work)
    results = []
    for n in args.rows:
        a, b = make_inputs(n, work)
        paths = {}
        with LocalCluster(n_workers=2, threads_per_worker=1, silence_logs=logging.ERROR, dashboard_address=":0") as cluster, Client(cluster) as client:
            for name, df, margin in (("A", a, 0.0), ("B", b, 5.0)):
                src = work / f"{name}_{n}.parquet"
                src.parent.mkdir(parents=True, exist_ok=True)
                df.to_parquet(src)
                out = work / f"{name}_{n}_{args.max_rows}"
                shutil.rmtree(out, ignore_errors=True)
                run_import(ImportArguments([str(src)], str(out), id_column="id", max_rows=args.max_rows, margin_arcsec=margin), client=client, progress=False)
                paths[name] = out
        t0 = time.perf_counter()
        truth = run_ckdtree(a, b, args.radius)
        tools = [
            ("lsdb", lambda c: run_lsdb(paths["A"], paths["B"], args.radius, c), True),
            ("survey_engine", lambda c: run_survey_engine(paths["A"], paths["B"], args.radius, c), True),
            ("astropy", lambda c: run_astropy(a, b, args.radius), False),
            ("ckdtree_global", lambda c: run_ckdtree(a, b, args.radius), False),
        ]
        for name, fn, needs_cluster in tools:
            times, peak, agree = [], 0, True
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, silence_logs=logging.ERROR, dashboard_address=":0") if needs_cluster else None
            client = Client(cluster) if cluster else None
            try:
                for rep in range(1 + args.repeat):
                    with PeakMemory() as mem:
                        t0 = time.perf_counter()
                        pairs = fn(client)
                        times.append(time.perf_counter() - t0)
                    peak = max(peak, mem.peak)
                    agree = agree and bool(np.array_equal(pairs, truth))
            finally:
                if client:
                    client.close()
                    cluster.close()
            row = {"tool": name, "rows": n, "pairs": len(pairs), "first_s": times[0], "repeat_s": statistics.median(times[1:]) if len(times) > 1 else None,
                   "all_s": times, "peak_rss_bytes": peak, "pairs_equal_truth": agree, "max_rows": args.max_rows}
            results.append(row)
            print(f"{name:15s} N={n:>10,}: first {times[0]:6.2f} s, repeat {row['repeat_s']:6.2f} s, peak {peak / 2**30:.2f} GiB, pairs {len(pairs):,}, equal truth: {agree}", flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "crossmatch.json").write_text(json.dumps({"benchmark": "crossmatch", "machine": machine_info(), "params": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
