"""TAP ingest: survey_engine vs raw keyset paging against the same real DaCHS server, same run.

    python benchmarks/bench_tap.py [--page-rows 20000 50000] [--repeats 3]

Needs the DaCHS test service (``tests/services/dachs/setup.sh start``), which serves the 482k-row
all-sky Gaia DR3 G<10 table as ``segaia.main``.

* raw: one client, ``SELECT TOP n * ... WHERE source_id > :last ORDER BY source_id`` page after
  page through pyvo (``run_sync``, MAXREC n+1, VOTable parsed to an astropy table): the fastest a
  plain script gets the table out of this server.
* survey_engine fetch: ``run_ingest``'s page phase (plan from the server's counts, pages in
  flight, Parquet pages written, manifest kept), on the same table and page size; "end to end"
  adds the server-side count check and building the HATS catalog with a 5" margin.
* pages: how many pages (and planning queries) the healpix plan needs as the table (a WHERE on G)
  and the page size change; planning only, nothing fetched.

Agreement: the ingest's row count and id set equal the raw paging's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
URL = "http://127.0.0.1:8080/tap"
TABLE = "segaia.main"


def raw_keyset(page_rows: int) -> tuple[float, np.ndarray]:
    import pyvo

    service = pyvo.dal.TAPService(URL)
    last, ids = None, []
    t0 = time.perf_counter()
    while True:
        where = "" if last is None else f" WHERE source_id > {last}"
        result = service.run_sync(
            f"SELECT TOP {page_rows} * FROM {TABLE}{where} ORDER BY source_id", maxrec=page_rows + 1
        )
        table = result.to_table()
        if len(table):
            ids.append(np.asarray(table["source_id"]))
            last = int(table["source_id"][-1])
        if len(table) < page_rows:
            break
    return time.perf_counter() - t0, np.concatenate(ids)


def ours(page_rows: int, workers: int, client) -> tuple[float, float, np.ndarray, int]:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ingest.tap.arguments import TapIngestArguments
    from survey_engine.ingest.tap.run import run_ingest

    work = Path(tempfile.mkdtemp(prefix="bench_tap_"))
    try:
        args = TapIngestArguments(
            URL, TABLE, str(work / "gaia"), id_column="source_id", page_rows=page_rows, workers=workers
        )
        t0 = time.perf_counter()
        result = run_ingest(args, client=client, progress=False)
        total = time.perf_counter() - t0
        ids = np.asarray(open_catalog(work / "gaia").to_dask()["source_id"].compute())
        return result.seconds_fetching, total, ids, result.pages
    finally:
        shutil.rmtree(work, ignore_errors=True)


def plan_pages(where: str | None, page_rows: int) -> tuple[int, int, int]:
    from survey_engine.ingest.tap.arguments import TapIngestArguments
    from survey_engine.ingest.tap.client import TapService
    from survey_engine.ingest.tap.run import Ingest

    work = Path(tempfile.mkdtemp(prefix="bench_tap_plan_"))
    try:
        args = TapIngestArguments(URL, TABLE, str(work / "x"), where=where, page_rows=page_rows)
        ingest = Ingest(args, progress=False)
        pages = ingest.plan("healpix")
        rows = int(
            TapService(URL)
            .query(f"SELECT COUNT(*) AS n FROM {TABLE}" + (f" WHERE {where}" if where else ""), 2, "count")
            .table["n"][0]
        )
        return rows, len(pages), ingest.queries
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page-rows", type=int, nargs="+", default=[20_000, 50_000])
    parser.add_argument("--workers", type=int, default=4, help="pages in flight for survey_engine")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "tap.json"))
    opts = parser.parse_args()

    from survey_engine.runtime import dask_client

    rows_out = []
    with dask_client(n_workers=2) as client:
        raw_keyset(opts.page_rows[0])  # warm-up: server caches, pyvo imports
        for page_rows in opts.page_rows:
            raw_times, our_fetch, our_total = [], [], []
            for _ in range(opts.repeats):
                t_raw, raw_ids = raw_keyset(page_rows)
                t_fetch, t_total, our_ids, pages = ours(page_rows, opts.workers, client)
                raw_times.append(t_raw)
                our_fetch.append(t_fetch)
                our_total.append(t_total)
            n = len(raw_ids)
            agree = len(our_ids) == n and set(our_ids.tolist()) == set(raw_ids.tolist())
            row = {
                "page_rows": page_rows,
                "rows": n,
                "pages": pages,
                "agree": agree,
                "raw_keyset_s": statistics.median(raw_times),
                "raw_spread_s": [min(raw_times), max(raw_times)],
                "ours_fetch_s": statistics.median(our_fetch),
                "ours_fetch_spread_s": [min(our_fetch), max(our_fetch)],
                "ours_end_to_end_s": statistics.median(our_total),
            }
            row["raw_rows_per_s"] = n / row["raw_keyset_s"]
            row["ours_rows_per_s"] = n / row["ours_fetch_s"]
            row["ours_vs_raw"] = row["ours_rows_per_s"] / row["raw_rows_per_s"]
            rows_out.append(row)
            print(json.dumps(row))

    scaling = []
    for where in ["phot_g_mean_mag < 7", "phot_g_mean_mag < 8", "phot_g_mean_mag < 9", None]:
        for page_rows in (2_000, 10_000, 50_000):
            rows, pages, queries = plan_pages(where, page_rows)
            scaling.append(
                {
                    "where": where,
                    "rows": rows,
                    "page_rows": page_rows,
                    "pages": pages,
                    "plan_queries": queries,
                }
            )
            print(json.dumps(scaling[-1]))
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps({"throughput": rows_out, "page_scaling": scaling}, indent=1))


if __name__ == "__main__":
    main()
