"""Clustering and structure finding on catalogs.

* ``kmeans``: dask-ml K-Means on the standardised features of the whole catalog (global), with
  the silhouette score on a sample.
* ``dbscan`` / ``hdbscan`` (scikit-learn): run per sky tile (a catalog partition) together with the
  tile's margin, as full-sky searches for open clusters do. A cluster that straddles a tile border
  is found in both tiles; the rows they share (a row of one tile is in its neighbour's margin)
  link the two local clusters, and linked clusters are merged into one (union-find). Each row takes
  its label from the tile that owns it. Needs a catalog with a margin at least as wide as the
  clusters' spatial linking scale, and an id column (to recognise the shared rows).

Features are standardised by global robust scales (median and IQR / 1.349 over the catalog), so
every tile sees the same metric. Output: the input columns plus ``cluster_id`` (-1 for noise), and
a per-cluster summary (members, centre, mean motions and parallax).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from survey_engine.errors import SurveyEngineError
from survey_engine.features.spec import FeatureError, FeatureSpec

METHODS = ("kmeans", "dbscan", "hdbscan")


class ClusterError(SurveyEngineError, ValueError):
    pass


def robust_scales(frame, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Global median and IQR/1.349 per feature (dask quantiles over the whole catalog)."""
    q = frame[features].quantile([0.25, 0.5, 0.75]).compute()
    centre = q.loc[0.5].to_numpy(dtype=float).copy()
    scale = ((q.loc[0.75] - q.loc[0.25]) / 1.349).to_numpy(dtype=float).copy()
    scale[~(scale > 0)] = 1.0
    return centre, scale


def _tile_labels(main: pd.DataFrame, margin: pd.DataFrame, feats: list[str], centre, scale, method: str, params: dict,
                 id_column: str, tile: int) -> pd.DataFrame:
    """Cluster one tile plus its margin; local labels for every row it saw."""
    both = pd.concat([main.assign(_owned=True), margin.assign(_owned=False)], ignore_index=True)
    X = (both[feats].to_numpy(dtype=float) - centre) / scale
    ok = np.isfinite(X).all(axis=1)
    labels = np.full(len(both), -1, dtype=np.int64)
    # a tile with fewer usable rows than a cluster needs is all noise (HDBSCAN refuses to run on it)
    if method == "dbscan":
        need = params.get("min_samples", 10)
    else:
        need = max(params.get("min_samples") or 0, params.get("min_cluster_size", 20))
    if ok.sum() >= max(2, need):
        if method == "dbscan":
            from sklearn.cluster import DBSCAN

            est = DBSCAN(eps=params.get("eps", 0.3), min_samples=params.get("min_samples", 10))
        else:
            from sklearn.cluster import HDBSCAN

            # max_cluster_fraction: no cluster may hold more than this share of the tile (a dense
            # field is otherwise one big "cluster" and the real ones become its noise)
            max_size = int(params.get("max_cluster_fraction", 0.5) * ok.sum()) or None
            est = HDBSCAN(min_cluster_size=params.get("min_cluster_size", 20), min_samples=params.get("min_samples"),
                          cluster_selection_epsilon=params.get("cluster_selection_epsilon", 0.0),
                          max_cluster_size=max_size, copy=True)
        labels[ok] = est.fit_predict(X[ok])
    return pd.DataFrame({"id": both[id_column].to_numpy(), "owned": both["_owned"].to_numpy(), "tile": tile, "local": labels})


def merge_tiles(local: pd.DataFrame) -> pd.DataFrame:
    """Global cluster ids from per-tile labels: local clusters that share a row are one cluster.

    Returns (id, cluster_id) for every owned row; -1 for noise."""
    clustered = local[local.local >= 0]
    nodes = pd.Index(pd.MultiIndex.from_frame(clustered[["tile", "local"]]).unique())
    parent = np.arange(len(nodes))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    node_of = pd.Series(np.arange(len(nodes)), index=nodes)
    keys = node_of.reindex(pd.MultiIndex.from_frame(clustered[["tile", "local"]])).to_numpy()
    clustered = clustered.assign(node=keys)
    for _, group in clustered.groupby("id")["node"]:
        vals = group.to_numpy()
        if len(vals) > 1:
            root = find(vals[0])
            for v in vals[1:]:
                r = find(v)
                if r != root:
                    parent[r] = root
    roots = np.array([find(i) for i in range(len(nodes))]) if len(nodes) else np.zeros(0, dtype=int)
    clustered = clustered.assign(root=roots[clustered.node.to_numpy()] if len(clustered) else [])
    # each row: its owner's cluster, else (noise for its owner) any tile that clustered it
    owned_root = clustered[clustered.owned].groupby("id")["root"].first()
    any_root = clustered.groupby("id")["root"].first()
    ids = local.loc[local.owned, "id"].drop_duplicates()
    root = owned_root.reindex(ids).fillna(any_root.reindex(ids)).fillna(-1).astype(np.int64)
    # number clusters 0.. by size (largest first), deterministic ties by smallest id
    sizes = root[root >= 0].groupby(root[root >= 0]).size()
    order = sorted(sizes.index, key=lambda r: (-sizes[r], r))
    relabel = {r: i for i, r in enumerate(order)}
    return pd.DataFrame({"id": ids.to_numpy(), "cluster_id": root.map(lambda r: relabel.get(r, -1)).to_numpy(np.int64)})


def cluster_catalog(catalog_path: str, features: list[str], method: str, out: str, *, id_column: str | None = None,
                    params: dict | None = None, client=None, progress: bool = True, seed: int = 42, where: str | None = None) -> dict:
    """Cluster a catalog; write it with ``cluster_id`` to ``out`` (a new collection) plus a summary.

    ``where`` (a pandas query, e.g. ``"parallax > 0.5"``) picks the rows that take part; the others
    are written too, as field (``cluster_id`` -1)."""
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.runtime import dask_client

    if method not in METHODS:
        raise ClusterError(f"--method must be one of {METHODS}, got {method!r}")
    params = dict(params or {})
    cat = open_catalog(catalog_path)
    if where:
        try:
            cat._infer_meta().query(where)
        except Exception as exc:
            raise ClusterError(f"{catalog_path}: where {where!r} does not apply to these columns: {exc}") from None
    spec = FeatureSpec(features, ra_column=cat.ra_column, dec_column=cat.dec_column)
    try:
        spec.plan(cat.column_names())
    except FeatureError as exc:
        raise ClusterError(f"{catalog_path}: {exc}") from None
    feats = list(spec.features)
    with dask_client(client) as client:
        taking_part = cat.map_partitions(_Query(where)) if where else cat
        featured = taking_part.to_dask().map_partitions(lambda df: pd.concat([df, spec.compute(df).add_prefix("_f_")], axis=1))
        fcols = [f"_f_{f}" for f in feats]
        centre, scale = robust_scales(featured, fcols)
        if method == "kmeans":
            labels, summary_extra = _kmeans(featured, fcols, centre, scale, params, seed)
            result = cat.map_partitions(_attach_kmeans(spec, feats, centre, scale, labels))
        else:
            id_column = id_column or cat.properties.get("se_col_id")
            if not id_column or id_column not in cat.column_names():
                raise ClusterError(f"{catalog_path}: density clustering per tile needs a unique id column (--id); columns: {cat.column_names()}")
            if cat.margin is None:
                raise ClusterError(f"{catalog_path}: density clustering per tile needs a margin (build one with `survey-engine margin`)")
            assignments = _tiles(taking_part, spec, feats, centre, scale, method, params, id_column, client)
            mapping = assignments.set_index("id")["cluster_id"]
            result = cat.map_partitions(_attach_mapping(mapping, id_column))
            summary_extra = {"tiles": int(cat.npartitions), "margin_arcsec": cat.margin_radius_arcsec}
        written = result.write(out, client=client, progress=progress)
        from survey_engine.catalog.catalog import open_catalog as _open

        labelled = _open(written, margin=None).compute()
    summary = summarize(labelled, cat.ra_column, cat.dec_column)
    summary.update({"method": method, "features": feats, "params": params, **summary_extra})
    import json

    from survey_engine.catalog.layout import atomic_write_text

    atomic_write_text(written / "clusters.json", json.dumps(summary, indent=1, default=float))
    return summary


class _Query:
    """Picklable row filter: the rows a pandas query keeps."""

    def __init__(self, where: str):
        self.where = where

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.query(self.where)


def _keep_input_cluster_id(df: pd.DataFrame) -> pd.DataFrame:
    """An input column already called ``cluster_id`` (e.g. a truth label) is kept as ``cluster_id_input``."""
    return df.rename(columns={"cluster_id": "cluster_id_input"}) if "cluster_id" in df.columns else df


def _attach_mapping(mapping: pd.Series, id_column: str):
    def attach(df: pd.DataFrame) -> pd.DataFrame:
        df = _keep_input_cluster_id(df)
        return df.assign(cluster_id=mapping.reindex(df[id_column].to_numpy()).fillna(-1).astype(np.int64).to_numpy())
    return attach


def _tiles(cat, spec, feats, centre, scale, method, params, id_column, client) -> pd.DataFrame:
    import dask

    from survey_engine.catalog import layout

    margin_files = {(int(o), int(p)): str(layout.partition_path(cat.margin.path, int(o), int(p)))
                    for o, p in zip(cat.margin.partitions.Norder, cat.margin.partitions.Npix)}
    tasks = []
    for tile, (o, p, f) in enumerate(zip(cat.partitions.Norder, cat.partitions.Npix, cat.partition_files())):
        mfile = margin_files.get((int(o), int(p)))
        tasks.append(dask.delayed(_tile_task)(str(f), mfile, spec, feats, centre, scale, method, params, id_column, tile, cat.transforms))
    local = pd.concat(dask.compute(*tasks), ignore_index=True)
    return merge_tiles(local)


def _tile_task(main_file, margin_file, spec, feats, centre, scale, method, params, id_column, tile, transforms):
    from survey_engine.catalog.catalog import read_partition

    main = read_partition(main_file, transforms=transforms)
    margin = read_partition(margin_file, transforms=transforms) if margin_file else main.iloc[:0]
    fm, fg = spec.compute(main), spec.compute(margin)
    main = pd.DataFrame({id_column: main[id_column].to_numpy(), **{f: fm[f].to_numpy() for f in feats}})
    margin = pd.DataFrame({id_column: margin[id_column].to_numpy(), **{f: fg[f].to_numpy() for f in feats}})
    return _tile_labels(main, margin, feats, centre, scale, method, params, id_column, tile)


def _kmeans(featured, fcols, centre, scale, params, seed):
    from dask_ml.cluster import KMeans
    from sklearn.metrics import silhouette_score

    X = featured[fcols].dropna()
    X = ((X - centre) / scale).to_dask_array(lengths=True)
    k = int(params.get("n_clusters", 8))
    km = KMeans(n_clusters=k, random_state=seed, init_max_iter=params.get("init_max_iter", 2))
    km.fit(X)
    sample = X[: min(10_000, X.shape[0])].compute() if X.shape[0] else np.zeros((0, len(fcols)))
    labels = km.predict(sample).compute() if hasattr(km.predict(sample), "compute") else km.predict(sample)
    sil = float(silhouette_score(sample, labels)) if len(set(labels)) > 1 and len(sample) > k else float("nan")
    return km.cluster_centers_, {"silhouette_sample": sil, "n_clusters": k}


def _attach_kmeans(spec, feats, centre, scale, centers):
    def attach(df: pd.DataFrame) -> pd.DataFrame:
        X = (spec.compute(df)[feats].to_numpy(dtype=float) - centre) / scale
        ok = np.isfinite(X).all(axis=1)
        lab = np.full(len(df), -1, dtype=np.int64)
        if ok.any():
            d = ((X[ok, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
            lab[ok] = d.argmin(axis=1)
        return _keep_input_cluster_id(df).assign(cluster_id=lab)
    return attach


def summarize(frame: pd.DataFrame, ra: str, dec: str) -> dict:
    """Per-cluster members, centre (RA as a circular mean) and mean motions / parallax."""
    clusters = []
    for cid, g in frame[frame.cluster_id >= 0].groupby("cluster_id"):
        ra_r = np.radians(g[ra].to_numpy(float))
        entry = {"cluster_id": int(cid), "members": int(len(g)),
                 "ra": float(np.degrees(math.atan2(np.sin(ra_r).mean(), np.cos(ra_r).mean())) % 360), "dec": float(g[dec].mean())}
        for col in ("pmra", "pmdec", "parallax"):
            if col in g.columns:
                entry[f"{col}_mean"] = float(g[col].mean())
                entry[f"{col}_std"] = float(g[col].std())
        clusters.append(entry)
    return {"rows": int(len(frame)), "noise": int((frame.cluster_id < 0).sum()), "n_clusters": len(clusters), "clusters": clusters}
