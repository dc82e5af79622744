"""clustering suite: HDBSCAN per tile + margin, merged across tile borders, against one HDBSCAN over the table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.bench.measure import timed
from survey_engine.bench.suites.common import (
    bench_row,
    local_cluster,
    mock_catalog,
    not_run_row,
    peer_allowed,
    profiled,
    repeat_plan,
)

CLUSTER_FEATURES = ["pmra", "pmdec", "parallax", "pos_x", "pos_y", "pos_z"]
CLUSTER_PARAMS = {"min_cluster_size": 30, "max_cluster_fraction": 0.3}


def recovered_clusters(
    labels: np.ndarray, truth: np.ndarray, min_recall: float = 0.5, min_purity: float = 0.5
) -> int:
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


def run(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    """HDBSCAN on mock catalogs with planted clusters: ours per tile with margins, merged across tile
    borders, against one scikit-learn HDBSCAN over the whole table; agree = both recover every cluster."""
    out_rows = []
    for n in sizes:
        with local_cluster(workers) as client:
            out_rows += _size_rows(n, repeat_plan(n, repeats), client, workers, work, peer_limits)
        shutil.rmtree(work / f"clu_{n}", ignore_errors=True)
    return out_rows


def _size_rows(n: int, plan: dict, client, workers: int, work: Path, peer_limits) -> list[dict]:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ml.cluster import cluster_catalog

    case = f"HDBSCAN on {n} mock rows ({', '.join(CLUSTER_FEATURES)})"
    cat_path = mock_catalog(n, work, client, margin=1800.0, max_rows=max(12_500, n // 8))
    prof: list = []

    def ours():
        out = work / f"clu_{n}"
        shutil.rmtree(out, ignore_errors=True)
        summary = cluster_catalog(
            str(cat_path),
            CLUSTER_FEATURES,
            "hdbscan",
            str(out),
            params=dict(CLUSTER_PARAMS),
            client=client,
            progress=False,
        )
        df = open_catalog(out, margin=None).compute()
        found = recovered_clusters(df["cluster_id"].to_numpy(), df["cluster_id_input"].to_numpy())
        return found, summary["tiles"]

    m = timed(profiled(client, ours, prof), **plan)
    (rec_ours, tiles) = m.pop("value")
    truth_n = int(open_catalog(cat_path, margin=None).to_dask()["cluster_id"].max().compute()) + 1
    ours_row = dict(profile=prof, recovered=rec_ours, true_clusters=truth_n, tiles=tiles)
    if not peer_allowed("clustering", n, peer_limits):
        return [
            bench_row(
                "clustering", case, "survey_engine", n, workers, m, agree=rec_ours == truth_n, **ours_row
            ),
            not_run_row("clustering", case, "sklearn_single_process", n, 1, peer_limits),
        ]
    files = [str(f) for f in open_catalog(cat_path, margin=None).partition_files()]
    ms = timed(lambda: _single_process_hdbscan(files), **plan)
    rec_s = ms.pop("value")
    agree = rec_ours == rec_s == truth_n
    return [
        bench_row(
            "clustering",
            case,
            "survey_engine",
            n,
            workers,
            m,
            agree=agree,
            note="per tile + 0.5 deg margin, merged across tile borders",
            **ours_row,
        ),
        bench_row(
            "clustering",
            case,
            "sklearn_single_process",
            n,
            1,
            ms,
            agree=agree,
            recovered=rec_s,
            true_clusters=truth_n,
            note="one HDBSCAN over the whole table",
        ),
    ]


def _single_process_hdbscan(files: list[str]) -> int:
    """The peer: one scikit-learn HDBSCAN over the whole table, on the same robustly scaled features;
    the number of planted clusters it recovers."""
    from sklearn.cluster import HDBSCAN

    from survey_engine.features.spec import FeatureSpec

    columns = ["ra", "dec", "pmra", "pmdec", "parallax", "cluster_id"]
    df = pd.concat([pd.read_parquet(f, columns=columns) for f in files])
    F = FeatureSpec(CLUSTER_FEATURES).compute(df).to_numpy(dtype=float)
    q = np.nanpercentile(F, [25, 50, 75], axis=0)
    scale = (q[2] - q[0]) / 1.349
    scale[~(scale > 0)] = 1
    X = (F - q[1]) / scale
    ok = np.isfinite(X).all(axis=1)
    labels = np.full(len(df), -1)
    labels[ok] = HDBSCAN(
        min_cluster_size=CLUSTER_PARAMS["min_cluster_size"],
        max_cluster_size=int(CLUSTER_PARAMS["max_cluster_fraction"] * ok.sum()),
    ).fit_predict(X[ok])
    return recovered_clusters(labels, df["cluster_id"].to_numpy())
