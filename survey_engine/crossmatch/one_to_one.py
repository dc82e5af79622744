"""One-to-one matching: each left and each right row used at most once, best separations first.

All pairs within the radius are found partition by partition (exact at edges, as for
``how="all"``); the greedy choice then runs on the driver over those pairs: sort by separation,
accept a pair when neither of its rows is taken yet. Ties in separation are broken by the left
row's (``_healpix_29``, ra, dec), then the right row's. A row is identified by its
``_healpix_29`` and exact coordinates, so two rows at identical positions count as one. The
driver holds one entry per candidate pair: fine for tens of millions of pairs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def greedy_one_to_one(left_key: np.ndarray, right_key: np.ndarray, sep: np.ndarray) -> np.ndarray:
    """Indices of the pairs kept by greedy matching; keys are integer row ids, pairs pre-sorted."""
    used_left = np.zeros(int(left_key.max()) + 1 if len(left_key) else 0, dtype=bool)
    used_right = np.zeros(int(right_key.max()) + 1 if len(right_key) else 0, dtype=bool)
    keep = np.zeros(len(sep), dtype=bool)
    for i, (lk, rk) in enumerate(zip(left_key.tolist(), right_key.tolist())):
        if not used_left[lk] and not used_right[rk]:
            used_left[lk] = used_right[rk] = True
            keep[i] = True
    return keep


def select_one_to_one(
    pairs: pd.DataFrame, left_ra: str, left_dec: str, right_ra: str, right_dec: str
) -> pd.DataFrame:
    """Keep the greedy one-to-one subset of an all-pairs result frame."""
    if len(pairs) == 0:
        return pairs
    lhp = pairs.index.to_numpy()
    frame = pairs.reset_index()
    right_hp = [c for c in frame.columns if c.startswith("_healpix_29") and c != "_healpix_29"][0]
    from survey_engine.crossmatch.joins import row_keys

    lkey = row_keys(lhp, frame[left_ra].to_numpy(), frame[left_dec].to_numpy()).factorize()[0]
    rkey = row_keys(
        frame[right_hp].to_numpy(), frame[right_ra].to_numpy(), frame[right_dec].to_numpy()
    ).factorize()[0]
    order = np.lexsort(
        (
            frame[right_dec].to_numpy(),
            frame[right_ra].to_numpy(),
            frame[right_hp].to_numpy(),
            frame[left_dec].to_numpy(),
            frame[left_ra].to_numpy(),
            lhp,
            frame["sep_arcsec"].to_numpy(),
        )
    )
    keep = greedy_one_to_one(lkey[order], rkey[order], frame["sep_arcsec"].to_numpy()[order])
    chosen = np.sort(order[keep])
    return pairs.iloc[chosen]
