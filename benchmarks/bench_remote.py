"""A 300-row target list cross-matched against a catalog on local disk, over HTTP (nginx) and on
S3 (moto): time, requests and bytes (README "Remote catalogs").

The catalog must already be served: a collection at LOCAL, the same files under the nginx root
(HTTP_URL) and in the bucket (S3_URL; credentials from SURVEY_ENGINE_STORAGE_OPTIONS). Each run
opens the catalog and computes the match (open + plan + read + match, the result in memory) on one
LocalCluster of 2 workers x 1 thread, in rounds of local, HTTP and S3 in turn (a shared machine's
load then weighs on all three alike); the first round (kernel compilation, warm page cache, each
worker's first HTTP / S3 client and look at the catalog's properties) is reported apart as
``first_run_s``. ``x_local``: median over median local; ``x_local_same_round``: the median of each
round's ratio. Requests (of the last round) and bytes come from nginx's access log and moto's
request log.

    python benchmarks/bench_remote.py LOCAL HTTP_URL S3_URL [--repeat 3] [--targets 300] [--radius 1]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

NGINX_LOG = Path("/var/lib/survey-engine-test/nginx/access.log")
MOTO_LOG = Path("/var/lib/survey-engine-test/s3/moto.log")


def target_list(local: str, n: int, out: Path, client) -> tuple[pd.DataFrame, object]:
    """The ``n`` sources nearest (200, 30) deg, moved by up to 0.3", imported as a local catalog."""
    from survey_engine import open_catalog
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    cat = open_catalog(local)
    near = cat.cone_search(200.0, 30.0, 3600.0).compute()
    ra, dec = np.radians(near[cat.ra_column].to_numpy()), np.radians(near[cat.dec_column].to_numpy())
    c = np.radians([200.0, 30.0])
    near = near.iloc[
        np.argsort(-(np.sin(dec) * np.sin(c[1]) + np.cos(dec) * np.cos(c[1]) * np.cos(ra - c[0])))[:n]
    ]
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "target_id": np.arange(len(near)),
            "ra": near[cat.ra_column].to_numpy()
            + rng.uniform(-0.3, 0.3, len(near)) / 3600 / np.cos(np.radians(near[cat.dec_column].to_numpy())),
            "dec": near[cat.dec_column].to_numpy() + rng.uniform(-0.3, 0.3, len(near)) / 3600,
        }
    )
    frame.to_parquet(out / "targets.parquet")
    run_import(
        ImportArguments(
            [str(out / "targets.parquet")], str(out / "targets"), id_column="target_id", margin_arcsec=None
        ),
        client=client,
        progress=False,
    )
    return frame, open_catalog(out / "targets")


def nginx_requests(start: int) -> dict:
    lines = NGINX_LOG.read_text().splitlines()[start:]
    data = [line.split(" ") for line in lines if " /" in line]
    return {
        "requests": len(data),
        "data_file_requests": sum("/dataset/Norder=" in d[1] for d in data),
        "bytes": sum(int(d[3]) for d in data),
        "data_files": len({d[1] for d in data if "/dataset/Norder=" in d[1]}),
    }


def moto_requests(start: int) -> dict:
    """Requests in moto's log after line ``start`` (colour codes removed); moto logs a request after
    answering it, so the log is read once it stops growing."""
    lines, before = [], -1
    while len(lines) != before:
        before = len(lines)
        time.sleep(0.5)
        plain = (re.sub(r"\x1b\[[0-9;]*m", "", line) for line in MOTO_LOG.read_text().splitlines()[start:])
        lines = [line for line in plain if '"GET ' in line or '"HEAD ' in line]
    return {
        "requests": len(lines),
        "head_requests": sum('"HEAD ' in line for line in lines),
        "list_requests": sum("list-type=" in line for line in lines),
        "data_file_requests": sum("Norder%3D" in line or "Norder=" in line for line in lines),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("local")
    parser.add_argument("http_url")
    parser.add_argument("s3_url")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", type=int, default=300)
    parser.add_argument("--radius", type=float, default=1.0)
    args = parser.parse_args()

    import logging

    from distributed import Client, LocalCluster

    from survey_engine import open_catalog
    from survey_engine.crossmatch import crossmatch

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        frame, targets = target_list(args.local, args.targets, Path(tmp), client)
        right = open_catalog(args.local)
        print(f"catalog: {right.row_count():,} rows in {right.npartitions} partitions; targets: {len(frame)}")
        where = {"local": args.local, "http": args.http_url, "s3": args.s3_url}
        times, first, counts, pairs, matches = {n: [] for n in where}, {}, {}, {}, {}
        # rounds of local, HTTP, S3 in turn, so that the load of a shared machine weighs on all three
        # alike; the first round (kernel compilation, each worker's first S3 / HTTP client) is apart
        for i in range(args.repeat + 1):
            for name, location in where.items():
                n_log = len(NGINX_LOG.read_text().splitlines()) if NGINX_LOG.exists() else 0
                m_log = len(MOTO_LOG.read_text().splitlines()) if MOTO_LOG.exists() else 0
                t0 = time.perf_counter()
                got = crossmatch(targets, open_catalog(location), args.radius).compute()
                seconds = time.perf_counter() - t0
                counts[name] = (
                    nginx_requests(n_log) if name == "http" else moto_requests(m_log) if name == "s3" else {}
                )
                if i == 0:
                    first[name] = seconds
                    continue
                times[name].append(seconds)
                pairs[name] = set(
                    zip(got.target_id_1, got[[c for c in got.columns if c.startswith("source_id")][0]])
                )
                matches[name] = len(got)
        results = {}
        for name in where:
            results[name] = {
                "median_s": round(statistics.median(times[name]), 3),
                "runs_s": [round(t, 3) for t in times[name]],
                "first_run_s": round(first[name], 3),
                "matches": matches[name],
                **counts[name],
            }
        for name in ("http", "s3"):
            results[name]["same_pairs_as_local"] = pairs[name] == pairs["local"]
            results[name]["x_local"] = round(results[name]["median_s"] / results["local"]["median_s"], 2)
            results[name]["x_local_same_round"] = round(
                statistics.median(r / lo for r, lo in zip(times[name], times["local"])), 2
            )
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
