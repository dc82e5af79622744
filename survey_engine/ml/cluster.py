"""Clustering and structure finding on catalogs.

* ``kmeans``: dask-ml K-Means on the standardised features of the whole catalog (global), with
  the silhouette score on a sample.
* ``dbscan`` / ``hdbscan`` (scikit-learn): run per sky tile (a catalog partition) together with the
  tile's margin, as full-sky searches for open clusters do. A cluster that straddles a tile border
  is found in both tiles; the rows they share (a row of one tile is in its neighbour's margin)
  link the two local clusters, and linked clusters are merged into one (union-find). Each row takes
  its label from the tile that owns it. Needs a catalog with a margin at least as wide as the
  clusters' spatial linking scale, and an id column (to recognise the shared rows).

The margin must reach as far as the clusters do: a cluster wider than the margin is seen whole by
no tile and comes out split or shrunk (Blanco 1 with a 60" margin: 84% of its members found). After
clustering, the clusters' reach (the median distance on the sky from a member to its 5th nearest
fellow member) is compared with the margin: a narrower margin stops with an error that
says how wide a margin is needed, or, with ``build_margin``, a margin that wide is built and the
clustering runs again.
``where`` (a pandas query) selects the rows that take part (e.g. only stars); the others get -1.

Features are standardised by global robust scales (median and IQR / 1.349 over the catalog, from
per-partition quantile sketches merged on the workers), so every tile sees the same metric. A
cluster that several tiles saw is then clustered again on a worker, in one sky window holding it
whole plus the margin, with ``max_cluster_fraction`` a share of the whole catalog: each tile's own
density hierarchy had shaped its edge. With both, Blanco 1, NGC 2516 and NGC 2323 over 4 to 22
tiles come out as one HDBSCAN over the whole field finds them (members and purity within 0.4
points; ``benchmarks/bench_tiled_clusters.py``). Output: the input columns plus ``cluster_id`` (-1 for noise), and
a per-cluster summary (members, centre, mean motions and parallax).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from survey_engine.catalog.row_filter import RowFilterError, check_where, filter_rows, normalise_where
from survey_engine.errors import SurveyEngineError
from survey_engine.features.spec import FeatureError, FeatureSpec

METHODS = ("kmeans", "dbscan", "hdbscan")
# The clusters' spatial reach: the median distance from a member to its 5th nearest fellow member.
# A margin narrower than that leaves a tile too few of a cluster's members beyond its border to
# link the pieces (Blanco 1: reach about 470", a 60" margin found 84% of its members).
REACH_NEIGHBOURS = 5
REACH_QUANTILE = 0.5


class ClusterError(SurveyEngineError, ValueError):
    pass


SKETCH_POINTS = 2001  # quantiles per partition and feature in the robust-scale sketch
SKETCH_FAN_IN = 16  # sketches merged per task


def robust_scales(frame, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Global median and IQR/1.349 per feature over the whole catalog.

    Each partition makes a sketch (its row count and ``SKETCH_POINTS`` quantiles per feature);
    workers merge the sketches in a tree (their piecewise-linear CDFs summed), so the driver gets
    one. Dask's own ``quantile`` over many partitions was far off where the partitions hold
    different populations (NGC 2516 in 14 tiles: the pmdec scale 9.0 against 1.45 in one
    partition), so tiling changed the metric the clustering uses."""
    import dask

    probs = np.linspace(0, 1, SKETCH_POINTS)
    level = [dask.delayed(_quantile_sketch)(part, features, probs) for part in frame[features].to_delayed()]
    while len(level) > 1:
        level = [
            dask.delayed(_merge_sketches)(level[i : i + SKETCH_FAN_IN], probs)
            for i in range(0, len(level), SKETCH_FAN_IN)
        ]
    counts, quantiles = (
        dask.compute(level[0])[0] if level else ([0] * len(features), [np.zeros(0)] * len(features))
    )
    centre, scale = np.zeros(len(features)), np.ones(len(features))
    for j in range(len(features)):
        if counts[j] > 0:
            q25, q50, q75 = np.interp([0.25, 0.5, 0.75], probs, quantiles[j])
            centre[j], scale[j] = q50, (q75 - q25) / 1.349
    scale[~(scale > 0)] = 1.0
    return centre, scale


def _quantile_sketch(
    df: pd.DataFrame, features: list[str], probs: np.ndarray
) -> tuple[list[int], list[np.ndarray]]:
    counts, quantiles = [], []
    for f in features:
        v = pd.to_numeric(df[f], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        counts.append(len(v))
        quantiles.append(np.quantile(v, probs) if len(v) else np.zeros(0))
    return counts, quantiles


def _merge_sketches(sketches: list, probs: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """One sketch of several: the count-weighted sum of their CDFs, read back at ``probs``."""
    counts, quantiles = [], []
    for j in range(len(sketches[0][0])):
        parts = [(n[j], q[j]) for n, q in sketches if n[j] > 0]
        total = sum(n for n, _ in parts)
        counts.append(total)
        if not parts:
            quantiles.append(np.zeros(0))
            continue
        grid = np.unique(np.concatenate([q for _, q in parts]))
        cdf = sum(n * np.interp(grid, q, probs) for n, q in parts) / total
        quantiles.append(np.interp(probs, cdf, grid))
    return counts, quantiles


def _tile_labels(
    main: pd.DataFrame,
    margin: pd.DataFrame,
    feats: list[str],
    centre,
    scale,
    method: str,
    params: dict,
    id_column: str,
    tile: int,
    positions: tuple[np.ndarray, np.ndarray] | None = None,
    cap_rows: int | None = None,
) -> pd.DataFrame:
    """Cluster one tile plus its margin; local labels for every row it saw. ``cap_rows``: the rows
    ``max_cluster_fraction`` is a share of (default: the rows clustered here)."""
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
            max_size = int(params.get("max_cluster_fraction", 0.5) * (cap_rows or ok.sum())) or None
            est = HDBSCAN(
                min_cluster_size=params.get("min_cluster_size", 20),
                min_samples=params.get("min_samples"),
                cluster_selection_epsilon=params.get("cluster_selection_epsilon", 0.0),
                max_cluster_size=max_size,
                copy=True,
            )
        labels[ok] = est.fit_predict(X[ok])
    out = pd.DataFrame(
        {"id": both[id_column].to_numpy(), "owned": both["_owned"].to_numpy(), "tile": tile, "local": labels}
    )
    if positions is not None:
        out["_ra"], out["_dec"] = positions
    return out


def cluster_reach_arcsec(
    local: pd.DataFrame, assignments: pd.DataFrame, k: int, quantile: float = REACH_QUANTILE
) -> pd.Series:
    """Each merged cluster's spatial reach: how far on the sky its members link to each other, the
    ``quantile`` of the members' angular distances to their k-th nearest fellow member (arcsec).
    Tiles see a cluster's pieces together with their margins, so
    pieces merge through shared rows when the margin is at least this wide."""
    from sklearn.neighbors import NearestNeighbors

    owned = local[local.owned].drop_duplicates("id").set_index("id")[["_ra", "_dec"]]
    members = assignments[assignments.cluster_id >= 0].join(owned, on="id").dropna(subset=["_ra", "_dec"])
    out = {}
    for cid, g in members.groupby("cluster_id"):
        ra, dec = np.radians(g["_ra"].to_numpy(float)), np.radians(g["_dec"].to_numpy(float))
        xyz = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)
        kk = min(k, len(xyz) - 1)
        if kk < 1:
            continue
        dist, _ = NearestNeighbors(n_neighbors=kk + 1).fit(xyz).kneighbors(xyz)
        chord = dist[:, kk]
        out[cid] = float(np.quantile(np.degrees(2 * np.arcsin(np.clip(chord / 2, 0, 1))) * 3600, quantile))
    return pd.Series(out, dtype=float)


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
    return pd.DataFrame(
        {"id": ids.to_numpy(), "cluster_id": root.map(lambda r: relabel.get(r, -1)).to_numpy(np.int64)}
    )


def cluster_catalog(
    catalog_path: str,
    features: list[str],
    method: str,
    out: str,
    *,
    id_column: str | None = None,
    params: dict | None = None,
    client=None,
    progress: bool = True,
    seed: int = 42,
    where: str | None = None,
    build_margin: bool = False,
    check_margin: bool = False,
    storage_options: dict | None = None,
) -> dict:
    """Cluster a catalog; write it with ``cluster_id`` to ``out`` (a new collection) plus a summary.
    ``where`` selects the rows that take part. ``check_margin`` stops where the margin is narrower
    than the clusters' reach; ``build_margin`` builds one as wide instead. The stage (command, job
    stage, ``se.cluster``: ``ml/arguments.run_cluster``) checks unless ``skip_margin_check``; this
    function's own default is off for callers that checked already. ``catalog_path`` may be remote
    (``https://``, ``s3://``; ``storage_options`` as in ``open_catalog``)."""
    from survey_engine.runtime import dask_client

    where = normalise_where(where)
    cat, spec, feats, params = _plan(catalog_path, features, method, params, where, storage_options)
    with dask_client(client) as client:
        featured, fcols, centre, scale = _featured_scales(cat, spec, feats, where)
        if method == "kmeans":
            labels, summary_extra = _kmeans(featured, fcols, centre, scale, params, seed)
            result = cat.map_partitions(_attach_kmeans(spec, feats, centre, scale, labels))
        else:
            id_column = _density_id_column(cat, catalog_path, id_column)
            cat, assignments, needed = _tiled_assignments(
                cat,
                catalog_path,
                spec,
                feats,
                centre,
                scale,
                method,
                params,
                id_column,
                client,
                where,
                build_margin,
                check_margin,
                progress,
            )
            mapping = assignments.set_index("id")["cluster_id"]
            result = cat.map_partitions(_attach_mapping(mapping, id_column))
            summary_extra = {
                "tiles": int(cat.npartitions),
                "margin_arcsec": cat.margin_radius_arcsec,
                "reach_arcsec": round(needed, 1),
            }
        written = result.write(out, client=client, progress=progress)
        from survey_engine.catalog.catalog import open_catalog as _open

        labelled = _open(written, margin=None).compute()
    summary = summarize(labelled, cat.ra_column, cat.dec_column)
    summary.update({"method": method, "features": feats, "params": params, **summary_extra})
    import json

    from survey_engine.catalog.layout import atomic_write_text

    atomic_write_text(written / "clusters.json", json.dumps(summary, indent=1, default=float))
    return summary


def _plan(
    catalog_path: str,
    features: list[str],
    method: str,
    params: dict | None,
    where: str | None,
    storage_options: dict | None = None,
):
    """(catalog, feature spec, feature names, params) checked before any work."""
    from survey_engine.catalog.catalog import open_catalog

    if method not in METHODS:
        raise ClusterError(f"--method must be one of {METHODS}, got {method!r}")
    params = dict(params or {})
    cat = open_catalog(catalog_path, storage_options=storage_options)
    spec = FeatureSpec(features, ra_column=cat.ra_column, dec_column=cat.dec_column)
    try:
        spec.plan(cat.column_names())
    except FeatureError as exc:
        raise ClusterError(f"{catalog_path}: {exc}") from None
    feats = list(spec.features)
    if where:
        try:
            check_where(cat.to_dask()._meta_nonempty, where)
        except RowFilterError as exc:
            raise ClusterError(f"{catalog_path}: {exc}") from None
    return cat, spec, feats, params


def _featured_scales(cat, spec, feats: list[str], where: str | None):
    """The rows taking part with their features as ``_f_*`` columns, those columns' names, and the
    features' robust centre and scale over the whole catalog."""
    featured = filter_rows(cat.to_dask(), where).map_partitions(
        lambda df: pd.concat([df, spec.compute(df).add_prefix("_f_")], axis=1)
    )
    fcols = [f"_f_{f}" for f in feats]
    centre, scale = robust_scales(featured, fcols)
    return featured, fcols, centre, scale


def _density_id_column(cat, catalog_path: str, id_column: str | None) -> str:
    """The id column density clustering merges tiles by; an error without one or without a margin."""
    id_column = id_column or cat.properties.get("se_col_id")
    if not id_column or id_column not in cat.column_names():
        raise ClusterError(
            f"{catalog_path}: density clustering per tile needs a unique id column (--id); columns: {cat.column_names()}"
        )
    if cat.margin is None:
        raise ClusterError(
            f"{catalog_path}: density clustering per tile needs a margin (build one with `survey-engine margin`)"
        )
    return id_column


def cluster_assignments(
    catalog_path: str,
    features: list[str],
    method: str = "hdbscan",
    *,
    id_column: str | None = None,
    params: dict | None = None,
    client=None,
    where: str | None = None,
    build_margin: bool = False,
    check_margin: bool = False,
    progress: bool = False,
    storage_options: dict | None = None,
) -> tuple[pd.DataFrame, object]:
    """The density clustering of ``cluster_catalog`` without writing anything: (assignments (id,
    cluster_id) for every row, the catalog clustered (with the margin used))."""
    from survey_engine.runtime import dask_client

    if method not in ("dbscan", "hdbscan"):
        raise ClusterError(f"cluster_assignments: method must be dbscan or hdbscan, got {method!r}")
    where = normalise_where(where)
    cat, spec, feats, params = _plan(catalog_path, features, method, params, where, storage_options)
    id_column = _density_id_column(cat, catalog_path, id_column)
    with dask_client(client) as client:
        _, _, centre, scale = _featured_scales(cat, spec, feats, where)
        cat, assignments, _ = _tiled_assignments(
            cat,
            catalog_path,
            spec,
            feats,
            centre,
            scale,
            method,
            params,
            id_column,
            client,
            where,
            build_margin,
            check_margin,
            progress,
        )
    return assignments, cat


def _tiled_assignments(
    cat,
    catalog_path,
    spec,
    feats,
    centre,
    scale,
    method,
    params,
    id_column,
    client,
    where,
    build_margin,
    check_margin,
    progress,
):
    """(catalog, assignments, reach): the tiles clustered and merged; where the margin is narrower than
    the clusters' reach, an error or (``build_margin``) a wider margin and the clustering again."""
    assignments, needed = _tiles(cat, spec, feats, centre, scale, method, params, id_column, client, where)
    while (check_margin or build_margin) and needed > cat.margin_radius_arcsec:
        if not build_margin:
            raise ClusterError(
                f"{catalog_path}: the margin ({cat.margin_radius_arcsec:g} arcsec) is narrower than the clustering's reach: "
                f"members of a cluster link over {needed:.0f} arcsec, so tiles split it. Build a margin of at least {math.ceil(needed)} arcsec "
                f"(survey-engine margin --catalog {catalog_path} --radius {math.ceil(needed)}) or pass --build-margin"
            )
        cat = _with_wider_margin(cat, catalog_path, float(math.ceil(needed * 1.05)), client, progress)
        assignments, needed = _tiles(
            cat, spec, feats, centre, scale, method, params, id_column, client, where
        )
    return cat, assignments, needed


def _keep_input_cluster_id(df: pd.DataFrame) -> pd.DataFrame:
    """An input column already called ``cluster_id`` (e.g. a truth label) is kept as ``cluster_id_input``."""
    return df.rename(columns={"cluster_id": "cluster_id_input"}) if "cluster_id" in df.columns else df


def _attach_mapping(mapping: pd.Series, id_column: str):
    def attach(df: pd.DataFrame) -> pd.DataFrame:
        df = _keep_input_cluster_id(df)
        return df.assign(
            cluster_id=mapping.reindex(df[id_column].to_numpy()).fillna(-1).astype(np.int64).to_numpy()
        )

    return attach


def _with_wider_margin(cat, catalog_path: str, radius_arcsec: float, client, progress: bool):
    """``cat`` with a margin of ``radius_arcsec`` built beside it (as the cross-match does)."""
    from dataclasses import replace

    from survey_engine.catalog import layout
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.catalog.margin_build import build_margin
    from survey_engine.catalog.margins import margin_catalog_name

    margin_path = cat.path.parent / margin_catalog_name(cat.name, radius_arcsec)
    if not margin_path.exists():
        in_collection = (cat.path.parent / layout.COLLECTION_FILE).exists()
        build_margin(
            cat.path.parent if in_collection else cat.path, radius_arcsec, client=client, progress=progress
        )
    return replace(cat, margin=open_catalog(margin_path, margin=None))


def _tiles(
    cat, spec, feats, centre, scale, method, params, id_column, client, where=None
) -> tuple[pd.DataFrame, float]:
    """Merged assignments (id, cluster_id) and the largest spatial reach of a cluster in arcsec.

    Clusters found in several tiles are then clustered again, each in one window of the sky that
    holds them whole (``_refine_windows``), so that tiling does not change them (``params["refine"]
    = False`` skips that, for measuring its effect)."""
    import dask

    margin_files = cat.margin.files_by_pixel()
    tasks = []
    for tile, (pixel, f) in enumerate(cat.files_by_pixel().items()):
        mfile = margin_files.get(pixel)
        tasks.append(
            dask.delayed(_tile_task)(
                f,
                mfile,
                spec,
                feats,
                centre,
                scale,
                method,
                params,
                id_column,
                tile,
                cat.transforms,
                where,
                cat.ra_column,
                cat.dec_column,
            )
        )
    parts = dask.compute(*tasks)
    field_rows = sum(n for _, n in parts)
    local = pd.concat([frame for frame, _ in parts], ignore_index=True)
    assignments = merge_tiles(local)
    if params.get("refine", True) and cat.npartitions > 1:
        assignments = _refine_windows(
            cat, local, assignments, spec, feats, centre, scale, method, params, id_column, where, field_rows
        )
    reach = cluster_reach_arcsec(local, assignments, REACH_NEIGHBOURS)
    return assignments, float(reach.max()) if len(reach) else 0.0


def _unit(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _enclosing_cone(c1: np.ndarray, r1: float, c2: np.ndarray, r2: float) -> tuple[np.ndarray, float]:
    """The smallest cone (unit centre, radius in radians) holding two cones."""
    d = float(np.arccos(np.clip(c1 @ c2, -1, 1)))
    if d + r2 <= r1:
        return c1, r1
    if d + r1 <= r2:
        return c2, r2
    radius = (d + r1 + r2) / 2
    if radius >= np.pi or d < 1e-12:
        return c1, min(np.pi, radius)
    t = (radius - r1) / d  # slide from c1 towards c2 along the great circle
    w = (np.sin((1 - t) * d) * c1 + np.sin(t * d) * c2) / np.sin(d)
    return w / np.linalg.norm(w), radius


def _refine_windows(
    cat, local, assignments, spec, feats, centre, scale, method, params, id_column, where, field_rows
):
    """Cluster again, in one sky window per group of overlapping multi-tile clusters, the rows around them.

    A cluster that several tiles saw was shaped by each tile's own density hierarchy (the field
    around it, the ``max_cluster_fraction`` of a tile); a window holding the whole cluster plus the
    margin around it sees what one process over the field sees. Each window is read and clustered
    on a worker from the tiles it overlaps; only the ids of the refined clusters come back."""
    import dask

    tiles_of = local[local.local >= 0].merge(assignments, on="id")
    tiles_of = tiles_of[tiles_of.cluster_id >= 0].groupby("cluster_id")["tile"].nunique()
    multi = tiles_of.index[tiles_of > 1]
    if not len(multi):
        return assignments
    owned = local[local.owned].drop_duplicates("id").set_index("id")[["_ra", "_dec"]]
    members = assignments[assignments.cluster_id.isin(multi)].join(owned, on="id")
    pad = np.radians(cat.margin_radius_arcsec / 3600.0)
    cones = []  # [centre, radius, cluster ids]
    for cid, g in members.groupby("cluster_id"):
        xyz = _unit(g["_ra"].to_numpy(float), g["_dec"].to_numpy(float))
        c = xyz.sum(axis=0)
        c = c / np.linalg.norm(c)
        radius = float(np.arccos(np.clip(xyz @ c, -1, 1)).max()) + pad
        cones.append([c, radius, [int(cid)], radius])
    merged = True
    while merged:  # overlapping windows become one, no wider than their largest cluster's plus a margin
        merged = False
        for i in range(len(cones)):
            for j in range(i + 1, len(cones)):
                ci, cj = cones[i], cones[j]
                if float(np.arccos(np.clip(ci[0] @ cj[0], -1, 1))) < ci[1] + cj[1]:
                    c, r = _enclosing_cone(ci[0], ci[1], cj[0], cj[1])
                    base = max(ci[3], cj[3])
                    if r <= base + pad:
                        cones[i] = [c, r, ci[2] + cj[2], base]
                        del cones[j]
                        merged = True
                        break
            if merged:
                break
    tasks = []
    for c, r, cids, _ in cones:
        ra = float(np.degrees(np.arctan2(c[1], c[0])) % 360)
        dec = float(np.degrees(np.arcsin(np.clip(c[2], -1, 1))))
        window = cat.cone_search(ra, dec, min(np.degrees(r), 180.0) * 3600)
        groups = {cid: members.loc[members.cluster_id == cid, "id"].to_numpy() for cid in cids}
        tasks.append(
            dask.delayed(_window_task)(
                list(window.files_by_pixel().values()),
                window.transforms,
                spec,
                feats,
                centre,
                scale,
                method,
                params,
                id_column,
                where,
                field_rows,
                groups,
            )
        )
    refined = pd.concat(dask.compute(*tasks), ignore_index=True)
    out = assignments.set_index("id")["cluster_id"].copy()
    out[out.isin(multi)] = -1
    refined = refined.drop_duplicates("id")  # a row claimed twice keeps the larger cluster's id
    out = out.reindex(out.index.union(pd.Index(refined.id.to_numpy()))).fillna(-1).astype(np.int64)
    out.loc[refined.id.to_numpy()] = refined.cluster_id.to_numpy()
    sizes = out[out >= 0].value_counts()
    order = sorted(sizes.index, key=lambda r: (-sizes[r], r))
    relabel = {r: i for i, r in enumerate(order)}
    return pd.DataFrame(
        {"id": out.index.to_numpy(), "cluster_id": out.map(lambda r: relabel.get(r, -1)).to_numpy(np.int64)}
    )


def _window_task(
    files, transforms, spec, feats, centre, scale, method, params, id_column, where, field_rows, groups: dict
) -> pd.DataFrame:
    """(id, cluster_id) of the rows of each group as the window's clustering finds it: the window's
    cluster holding most of the group's tiled members."""
    from survey_engine.catalog.catalog import read_partition

    rows = pd.concat([read_partition(f, transforms=transforms) for f in files])
    if where:
        rows = rows.query(where)
    fm = spec.compute(rows)
    frame = pd.DataFrame({id_column: rows[id_column].to_numpy(), **{f: fm[f].to_numpy() for f in feats}})
    lab = _tile_labels(
        frame, frame.iloc[:0], feats, centre, scale, method, params, id_column, -1, cap_rows=field_rows
    )
    lab = lab[lab.local >= 0]
    out = []
    for cid in sorted(groups, key=lambda c: -len(groups[c])):
        hits = lab[lab.id.isin(groups[cid])]
        if hits.empty:
            continue
        best = hits.local.value_counts().index[0]
        ids = lab.id[lab.local == best].to_numpy()
        if len(ids) > 2 * len(groups[cid]) + params.get("min_cluster_size", 20):
            ids = groups[cid]  # the window's field became one clump around it: keep the tiles' cluster
        out.append(pd.DataFrame({"id": ids, "cluster_id": cid}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame({"id": [], "cluster_id": []})


def _tile_task(
    main_file,
    margin_file,
    spec,
    feats,
    centre,
    scale,
    method,
    params,
    id_column,
    tile,
    transforms,
    where=None,
    ra="ra",
    dec="dec",
) -> tuple[pd.DataFrame, int]:
    """The tile's clustered rows (noise left out: it is -1 by default) and its own rows with every feature."""
    from survey_engine.catalog.catalog import read_partition

    main = read_partition(main_file, transforms=transforms)
    margin = read_partition(margin_file, transforms=transforms) if margin_file else main.iloc[:0]
    if where:
        main, margin = main.query(where), margin.query(where)
    fm, fg = spec.compute(main), spec.compute(margin)
    positions = (
        np.concatenate([main[ra].to_numpy(float), margin[ra].to_numpy(float)]),
        np.concatenate([main[dec].to_numpy(float), margin[dec].to_numpy(float)]),
    )
    main = pd.DataFrame({id_column: main[id_column].to_numpy(), **{f: fm[f].to_numpy() for f in feats}})
    margin = pd.DataFrame({id_column: margin[id_column].to_numpy(), **{f: fg[f].to_numpy() for f in feats}})
    labels = _tile_labels(main, margin, feats, centre, scale, method, params, id_column, tile, positions)
    usable = int(np.isfinite(main[feats].to_numpy(dtype=float)).all(axis=1).sum())  # the rows HDBSCAN sees
    return labels[labels.local >= 0].reset_index(drop=True), usable


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
    sil = (
        float(silhouette_score(sample, labels)) if len(set(labels)) > 1 and len(sample) > k else float("nan")
    )
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
        entry = {
            "cluster_id": int(cid),
            "members": int(len(g)),
            "ra": float(np.degrees(math.atan2(np.sin(ra_r).mean(), np.cos(ra_r).mean())) % 360),
            "dec": float(g[dec].mean()),
        }
        for col in ("pmra", "pmdec", "parallax"):
            if col in g.columns:
                entry[f"{col}_mean"] = float(g[col].mean())
                entry[f"{col}_std"] = float(g[col].std())
        clusters.append(entry)
    return {
        "rows": int(len(frame)),
        "noise": int((frame.cluster_id < 0).sum()),
        "n_clusters": len(clusters),
        "clusters": clusters,
    }
