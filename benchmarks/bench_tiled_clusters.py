"""Tiled HDBSCAN vs one HDBSCAN over the whole field, on the real open-cluster fields.

    python benchmarks/bench_tiled_clusters.py [--fields blanco1 ngc2516 ngc2323] [--out benchmarks/results]

Each field is imported as one tile (``max_rows`` above its size: one HDBSCAN over the whole field)
and as about 4, 8, 12 and 20 tiles (smaller ``max_rows``) with a 0.5 deg margin, then clustered by
``survey_engine.ml.cluster`` with the same parameters (those of ``tests/ml/test_cluster.py``) on a
LocalCluster of 2 workers x 1 thread. Reported per run: members recovered (recall of the reference
members by the group holding most of them), purity of that group, its Jaccard overlap with the
one-process best group, and the adjusted Rand index between the two labelings over all rows.
Writes benchmarks/results/tiled_clusters.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "clusters_xmatch"
FEATURES = ["pmra", "pmdec", "parallax", "pos_x", "pos_y", "pos_z"]


def blanco1() -> pd.DataFrame:
    """Blanco 1 Gaia DR2 field; members: Cantat-Gaudin et al. (ocelot_label 0)."""
    df = pd.read_parquet(DATA / "blanco1/blanco1_gaia_dr2_G18_field.parquet")
    return df[["source_id", "ra", "dec", "pmra", "pmdec", "parallax"]].assign(
        member=(df.ocelot_label == 0).to_numpy()
    )


def ngc2516() -> pd.DataFrame:
    """ASteCA's NGC 2516 members among its real field stars spread over the cluster's box (as the test)."""
    cols = {"RA_ICRS": "ra", "DE_ICRS": "dec", "Plx": "parallax", "pmRA": "pmra", "pmDE": "pmdec"}
    members = pd.read_csv(DATA / "asteca_examples/cluster.csv").rename(columns=cols)[list(cols.values())]
    field = pd.read_csv(DATA / "asteca_examples/field.csv").rename(columns=cols)[list(cols.values())]
    members = members.assign(source_id=np.arange(len(members)), member=True)
    field = field.assign(source_id=10_000 + np.arange(len(field)), member=False)
    rng = np.random.default_rng(2516)
    lo, hi = members[["ra", "dec"]].quantile(0.01), members[["ra", "dec"]].quantile(0.99)
    field["ra"] = rng.uniform(lo.ra, hi.ra, len(field))
    field["dec"] = np.degrees(
        np.arcsin(rng.uniform(np.sin(np.radians(lo.dec)), np.sin(np.radians(hi.dec)), len(field)))
    )
    return pd.concat([members, field], ignore_index=True)


def ngc2323() -> pd.DataFrame:
    """NGC 2323 Gaia field; members: stars SIMBAD lists as "Cl* NGC 2323 ..." within 1"."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky
    from astropy.io.votable import parse_single_table
    from astropy.table import Table

    df = Table.read(DATA / "ngc2323/ngc2323_gaia_field.fits").to_pandas()
    df = df[["ra", "dec", "pmra", "pmdec", "parallax"]].assign(source_id=np.arange(len(df)))
    simbad = parse_single_table(str(DATA / "ngc2323/ngc2323_simbad_region.vot.xml")).to_table().to_pandas()
    listed = simbad[simbad.MAIN_ID.astype(str).str.startswith("Cl* NGC 2323")]
    idx, sep, _ = match_coordinates_sky(
        SkyCoord(listed.RA.values * u.deg, listed.DEC.values * u.deg),
        SkyCoord(df.ra.values * u.deg, df.dec.values * u.deg),
    )
    return df.assign(member=df.source_id.isin(idx[sep.arcsec < 1.0]).to_numpy())


# field: (loader, HDBSCAN parameters, max_rows giving about 4, 8, 12 and 20 tiles; NGC 2323 jumps from 3 to 10)
FIELDS = {
    "blanco1": (blanco1, {"min_cluster_size": 30, "max_cluster_fraction": 0.3}, [8000, 4000, 3000, 2000]),
    "ngc2516": (ngc2516, {"min_cluster_size": 30, "max_cluster_fraction": 0.3}, [8000, 4000, 2000, 1200]),
    "ngc2323": (ngc2323, {"min_cluster_size": 30, "max_cluster_fraction": 0.1}, [6000, 5000, 3000, 2000]),
}


def import_field(frame: pd.DataFrame, work: Path, name: str, max_rows: int, client) -> Path:
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    src = work / f"{name}.parquet"
    if not src.exists():
        frame.drop(columns="member").to_parquet(src)
    out = work / f"{name}_{max_rows}"
    run_import(
        ImportArguments([str(src)], str(out), id_column="source_id", max_rows=max_rows, margin_arcsec=1800),
        client=client,
        progress=False,
    )
    return out


def labels(catalog: Path, params: dict, client) -> tuple[pd.Series, int]:
    """cluster_id by source_id, as ``cluster_catalog`` assigns them (without writing the catalog)."""
    from survey_engine.ml.cluster import cluster_assignments

    assignments, cat = cluster_assignments(str(catalog), FEATURES, "hdbscan", params=params, client=client)
    return assignments.set_index("id")["cluster_id"], int(cat.npartitions)


def best_group(cluster_id: pd.Series, member: pd.Series) -> tuple[float, float, set]:
    """(recall, purity, ids) of the group holding most reference members."""
    counts = cluster_id[member & (cluster_id >= 0)].value_counts()
    if counts.empty:
        return 0.0, 0.0, set()
    best = counts.index[0]
    group = cluster_id.index[cluster_id == best]
    return counts.iloc[0] / member.sum(), counts.iloc[0] / len(group), set(group)


def run(fields: list[str], client, work: Path) -> list[dict]:
    from sklearn.metrics import adjusted_rand_score

    rows = []
    for name in fields:
        loader, params, max_rows_list = FIELDS[name]
        frame = loader().set_index("source_id")
        whole, _ = labels(
            import_field(frame.reset_index(), work, name, 10 * len(frame), client), params, client
        )
        whole = whole.reindex(frame.index).fillna(-1)
        r0, p0, g0 = best_group(whole, frame.member)
        rows.append(
            {
                "field": name,
                "tiles": 1,
                "max_rows": None,
                "recall": r0,
                "purity": p0,
                "jaccard": 1.0,
                "ari": 1.0,
                "seconds": None,
            }
        )
        for max_rows in max_rows_list:
            cat = import_field(frame.reset_index(), work, name, max_rows, client)
            t0 = time.perf_counter()
            tiled, ntiles = labels(cat, params, client)
            seconds = time.perf_counter() - t0
            tiled = tiled.reindex(frame.index).fillna(-1)
            r, p, g = best_group(tiled, frame.member)
            rows.append(
                {
                    "field": name,
                    "tiles": ntiles,
                    "max_rows": max_rows,
                    "recall": r,
                    "purity": p,
                    "jaccard": len(g & g0) / max(1, len(g | g0)),
                    "ari": adjusted_rand_score(whole, tiled),
                    "seconds": seconds,
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| field | tiles | members found | purity | d recall | d purity | Jaccard vs 1 | ARI vs 1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ref = {}
    for r in rows:
        if r["tiles"] == 1 and r["max_rows"] is None:
            ref[r["field"]] = r
        base = ref[r["field"]]
        lines.append(
            f"| {r['field']} | {r['tiles']} | {r['recall']:.3f} | {r['purity']:.3f} | "
            f"{100 * (r['recall'] - base['recall']):+.1f} | {100 * (r['purity'] - base['purity']):+.1f} | "
            f"{r['jaccard']:.3f} | {r['ari']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    import logging

    from distributed import Client, LocalCluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", nargs="+", default=list(FIELDS), choices=list(FIELDS))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.WARNING
        ) as lc,
        Client(lc) as client,
    ):
        rows = run(args.fields, client, Path(tmp))
    print(table(rows))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "tiled_clusters.json").write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
