"""tap suite: TAP ingest against raw keyset paging on the same server (the DaCHS test service)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np

from survey_engine.bench.measure import timed
from survey_engine.bench.suites.common import bench_row, local_cluster


def run(
    sizes,
    repeats,
    workers,
    work: Path,
    url: str = "http://127.0.0.1:8080/tap",
    table: str = "segaia.main",
    where: str | None = "phot_g_mean_mag < 8",
    page_rows: int = 10_000,
    peer_limits=None,
) -> list[dict]:
    """TAP ingest of ``table`` (a WHERE, pages of ``page_rows``) against raw keyset paging with pyvo on the
    same server: the fetch phase and end to end, with the same source ids."""
    import requests

    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ingest.tap.arguments import TapIngestArguments
    from survey_engine.ingest.tap.run import run_ingest

    try:
        requests.get(url + "/availability", timeout=5).raise_for_status()
    except Exception as exc:
        from survey_engine.redact import redact_url

        return [
            bench_row(
                "tap",
                f"{table}",
                tool,
                None,
                workers,
                note=f"TAP service {redact_url(url)} not reachable ({type(exc).__name__}); start tests/services/dachs/setup.sh",
            )
            for tool in ("survey_engine", "raw_keyset")
        ]
    raw = functools.partial(_raw_keyset_ids, url, table, where, page_rows)

    with local_cluster(workers) as client:
        fetch_times = []

        def ours():
            out = work / "tap_ingest"
            shutil.rmtree(out, ignore_errors=True)
            r = run_ingest(
                TapIngestArguments(
                    url, table, str(out), where=where, id_column="source_id", page_rows=page_rows
                ),
                client=client,
                progress=False,
            )
            fetch_times.append(r.seconds_fetching)
            return np.asarray(open_catalog(out).to_dask()["source_id"].compute())

        m_raw, m_ours = timed(raw, repeats), timed(ours, repeats)
        n = len(m_raw["value"])
        agree = bool(
            len(m_ours["value"]) == n and set(m_ours["value"].tolist()) == set(m_raw["value"].tolist())
        )
        case = f"{table} WHERE {where}, {page_rows} rows/page"
        fetch = _fetch_measure(fetch_times)
        return [
            bench_row(
                "tap",
                case,
                "survey_engine",
                n,
                workers,
                fetch,
                agree=agree,
                note="fetch phase: plan, pages in flight, Parquet pages, manifest",
            ),
            bench_row(
                "tap",
                case + " (end to end)",
                "survey_engine",
                n,
                workers,
                m_ours,
                agree=agree,
                note="pages + count check against the service + HATS catalog with margin",
            ),
            bench_row(
                "tap", case, "raw_keyset", n, 1, m_raw, agree=agree, note="pyvo, one client, keyset paging"
            ),
        ]


def _raw_keyset_ids(url: str, table: str, where: str | None, page_rows: int) -> np.ndarray:
    """The peer: one pyvo client paging by ``source_id`` (keyset), the ids it fetched."""
    import pyvo

    service = pyvo.dal.TAPService(url)
    last, ids = None, []
    while True:
        conds = [f"({where})"] if where else []
        if last is not None:
            conds.append(f"source_id > {last}")
        q = (
            f"SELECT TOP {page_rows} * FROM {table}"
            + (" WHERE " + " AND ".join(conds) if conds else "")
            + " ORDER BY source_id"
        )
        t = service.run_sync(q, maxrec=page_rows + 1).to_table()
        if len(t):
            ids.append(np.asarray(t["source_id"]))
            last = int(t["source_id"][-1])
        if len(t) < page_rows:
            return np.concatenate(ids)


def _fetch_measure(fetch_times: list[float]) -> dict:
    """The fetch phase's times as a measurement (the first run is the cold one)."""
    timed_fetch = sorted(fetch_times[1:] or fetch_times)
    return {
        "seconds": timed_fetch[len(timed_fetch) // 2],
        "min_s": timed_fetch[0],
        "max_s": timed_fetch[-1],
        "first_s": fetch_times[0],
        "repeats": len(timed_fetch),
        "peak_rss_bytes": None,
    }
