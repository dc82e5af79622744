"""features suite: declared features computed per partition on the cluster against pandas in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.bench.measure import timed
from survey_engine.bench.suites.common import (
    bench_row,
    local_cluster,
    mock_catalog,
    mock_files,
    not_run_row,
    peer_allowed,
    profiled,
    repeat_plan,
)

FEATURES = ["u-g", "g-r", "r-i", "i-z", "dered(r)", "snr(r_err)", "absmag(phot_g_mean_mag)", "v_tan", "gal_b"]


def run(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.features.spec import FeatureSpec

    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        case = f"{n} rows, {len(FEATURES)} features"
        with local_cluster(workers) as client:
            src = mock_files(n, work, client)
            cat = open_catalog(mock_catalog(n, work, client))
            spec = FeatureSpec(FEATURES, ebv_column="ebv")
            prof: list = []

            def ours():
                frame = cat.to_dask()
                feats = frame.map_partitions(
                    spec.compute, meta=spec.compute(frame._meta_nonempty.head(2)).iloc[:0]
                )
                return feats.sum().compute()

            def pandas_():
                df = pd.concat([pd.read_parquet(f) for f in sorted(src.glob("*.parquet"))], ignore_index=True)
                return spec.compute(df).sum()

            m_ours = timed(profiled(client, ours, prof), **plan)
            if not peer_allowed("features", n, peer_limits):
                out_rows.append(
                    bench_row(
                        "features",
                        case,
                        "survey_engine",
                        n,
                        workers,
                        m_ours,
                        agree=bool(np.isfinite(m_ours["value"].to_numpy()).any()),
                        profile=prof,
                    )
                )
                out_rows.append(not_run_row("features", case, "pandas_single_process", n, 1, peer_limits))
                continue
            m_pd = timed(pandas_, **plan)
            agree = bool(
                np.allclose(m_ours["value"].to_numpy(), m_pd["value"].to_numpy(), rtol=1e-9, equal_nan=True)
            )
            out_rows.append(
                bench_row("features", case, "survey_engine", n, workers, m_ours, agree=agree, profile=prof)
            )
            out_rows.append(bench_row("features", case, "pandas_single_process", n, 1, m_pd, agree=agree))
    return out_rows
