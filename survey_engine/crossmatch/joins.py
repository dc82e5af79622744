"""The rows a cross-match did not pair, for left and outer joins that are finished on the driver.

Which rows were paired is known from the pairs themselves: a row is identified by its
``_healpix_29`` and exact coordinates (as in one-to-one matching). Each partition of the side in
question is read on a worker together with the keys paired inside its pixel range, and its
unpaired rows come back with nulls on the other side and ``sep_arcsec`` null. Right rows are
indexed by their own ``_healpix_29``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from survey_engine.catalog import storage
from survey_engine.catalog.healpix import SPATIAL_INDEX_COLUMN, pixel_range29


def row_keys(hp: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> pd.MultiIndex:
    """A row's identity in a cross-match: its ``_healpix_29`` and exact coordinates."""
    return pd.MultiIndex.from_arrays(
        [np.asarray(hp, dtype=np.int64), np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)]
    )


def _unmatched_in_partition(
    file: str,
    columns,
    ra: str,
    dec: str,
    epoch,
    paired: tuple,
    suffix: str,
    is_right: bool,
    meta: pd.DataFrame,
    nullable=(),
    rows: int | None = None,
) -> pd.DataFrame:
    from survey_engine.crossmatch.tasks import read_side  # the same columns a match task reads

    frame = read_side([file], columns, ra, dec, epoch, nullable, {file: rows})
    if len(frame) == 0:
        return meta.iloc[:0]
    hp = frame.index.to_numpy()
    keep = ~row_keys(hp, frame[ra].to_numpy(), frame[dec].to_numpy()).isin(row_keys(*paired))
    rows = frame[keep]
    data = {
        f"{c}{suffix}": rows[c].to_numpy() if isinstance(rows[c].dtype, np.dtype) else rows[c].array
        for c in rows.columns
    }
    if is_right:
        data[f"{SPATIAL_INDEX_COLUMN}{suffix}"] = rows.index.to_numpy()
    out = pd.DataFrame(data, index=pd.Index(rows.index.to_numpy(), name=SPATIAL_INDEX_COLUMN))
    return out.reindex(columns=meta.columns).astype(meta.dtypes.to_dict())


def unmatched_rows(result, side: str, pairs: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``side`` ("left" or "right") that appear in no pair of ``pairs``."""
    import dask

    s1, s2 = result.params.suffixes
    catalog = result.left if side == "left" else result.right
    suffix = s1 if side == "left" else s2
    columns = result.params.left_columns if side == "left" else result.params.right_columns
    epoch = result.params.left_epoch if side == "left" else result.params.right_epoch
    nullable = result.params.left_nullable if side == "left" else result.params.right_nullable
    ra, dec = catalog.ra_column, catalog.dec_column
    if side == "left":
        hp = pairs.index.to_numpy(dtype=np.int64)
    else:
        hp = pairs[f"{SPATIAL_INDEX_COLUMN}{s2}"].to_numpy(dtype=np.int64, na_value=-1)
    pra = pairs[f"{ra}{suffix}"].to_numpy(dtype=float, na_value=np.nan)
    pdec = pairs[f"{dec}{suffix}"].to_numpy(dtype=float, na_value=np.nan)
    ok = hp >= 0
    order = np.argsort(hp[ok], kind="stable")
    hp, pra, pdec = hp[ok][order], pra[ok][order], pdec[ok][order]
    tasks = []
    for o, p, f, rows in zip(
        catalog.partitions.Norder,
        catalog.partitions.Npix,
        catalog.partition_files(),
        catalog._expected_rows(),
    ):
        start, stop = pixel_range29(int(o), int(p))
        a, b = np.searchsorted(hp, int(start)), np.searchsorted(hp, int(stop))
        tasks.append(
            dask.delayed(_unmatched_in_partition)(
                storage.portable(f),
                columns,
                ra,
                dec,
                epoch,
                (hp[a:b], pra[a:b], pdec[a:b]),
                suffix,
                side == "right",
                meta,
                nullable,
                rows,
            )
        )
    parts = [t for t in dask.compute(*tasks) if len(t)]
    return pd.concat(parts) if parts else meta.iloc[:0]


def pixels_outside(
    index29: np.ndarray, orders: np.ndarray, pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """HEALPix pixels, disjoint from the given ones, that hold every index in ``index29`` not
    inside them: each as coarse as it can be without overlapping a given pixel (so right-only
    rows of an outer join get partitions of their own that never overlap the left's)."""
    starts, stops = pixel_range29(np.asarray(orders), np.asarray(pixels))
    order = np.argsort(starts)
    starts, stops = starts[order], stops[order]
    idx = np.asarray(index29, dtype=np.int64)
    j = np.searchsorted(starts, idx, side="right") - 1
    inside = (j >= 0) & (idx < stops[np.clip(j, 0, None)])
    rest = np.unique(idx[~inside])
    if len(rest) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    deepest = int(np.max(orders)) if len(orders) else 0
    pix = np.unique(rest >> (2 * (29 - deepest)))  # cells at the deepest given order: inside none of them
    done_o, done_p = [], []
    for o in range(deepest, 0, -1):  # all cells climb together while their parent overlaps no given pixel
        parent = pix >> 2
        ps, pe = pixel_range29(o - 1, parent)
        k = np.searchsorted(starts, pe)  # the given pixels starting before each parent ends; being
        blocked = (k > 0) & (stops[np.maximum(k - 1, 0)] > ps)  # disjoint, the last of them reaches furthest
        done_o.append(np.full(int(blocked.sum()), o, dtype=np.int64))
        done_p.append(pix[blocked])
        pix = np.unique(parent[~blocked])
        if len(pix) == 0:
            break
    done_o.append(np.zeros(len(pix), dtype=np.int64))
    done_p.append(pix)
    o_all, p_all = np.concatenate(done_o), np.concatenate(done_p).astype(np.int64)
    order = np.lexsort((p_all, o_all))
    return o_all[order], p_all[order]
