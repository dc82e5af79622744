"""Independent brute-force references (healpy + dense boundary sampling), for tests only."""

from __future__ import annotations

import healpy as hp
import numpy as np
from scipy.spatial import cKDTree


def healpy_xyz(ra, dec):
    return np.asarray(hp.ang2vec(np.asarray(ra, float), np.asarray(dec, float), lonlat=True)).reshape(-1, 3)


def boundary_samples(order: int, pix: int, spacing_arcsec: float) -> np.ndarray:
    nside = 2**order
    edge_arcsec = 1.6 * np.degrees(hp.nside2resol(nside)) * 3600
    step = int(np.ceil(edge_arcsec / spacing_arcsec))
    return hp.boundaries(nside, pix, step=step, nest=True).T  # (4*step, 3)


def nearest_sample_chord(samples: np.ndarray, points: np.ndarray, stride: int = 100) -> np.ndarray:
    """Chord from each unit vector in ``points`` to its nearest sample of ``samples`` (exact), where
    ``samples`` trace a closed ring in order (as ``hp.boundaries`` returns them).

    A KD-tree over a million samples on a curve answers far points slowly (tens of ms each), so the
    nearest of every ``stride``-th sample bounds the answer, and only the windows of samples around
    the coarse samples within that bound plus half a window's length are measured: by the triangle
    inequality the nearest sample lies in one of them.
    """
    n = len(samples)
    coarse_idx = np.arange(0, n, stride)
    coarse_samples = samples[coarse_idx]
    gaps = np.linalg.norm(np.diff(samples, axis=0, append=samples[:1]), axis=1)
    reach = (stride // 2 + 1) * gaps.max()  # every sample is within this of a coarse sample
    window = np.arange(-(stride // 2) - 1, stride // 2 + 2)
    out = np.empty(len(points))
    for start in range(0, len(points), 500):
        chunk = points[start : start + 500]
        # squared chords from dot products (unit vectors): only selects windows, so a loose bound is fine
        coarse_sq = np.maximum(2.0 - 2.0 * (chunk @ coarse_samples.T), 0.0)
        bound_sq = (np.sqrt(coarse_sq.min(axis=1)) + reach) ** 2 + 1e-12
        rows, cols = np.nonzero(coarse_sq <= bound_sq[:, None])
        idx = (coarse_idx[cols][:, None] + window) % n
        chord = np.linalg.norm(samples[idx] - chunk[rows][:, None, :], axis=2).min(axis=1)
        best = np.full(len(chunk), np.inf)
        np.minimum.at(best, rows, chord)
        out[start : start + len(chunk)] = best
    return out


def brute_margin(ra, dec, own_order, own_pix, partitions, radius_arcsec, spacing_arcsec=0.5):
    """{(row, partition index): distance_arcsec} for rows within radius (+spacing) of another partition.

    Distances are to densely sampled boundary points (an overestimate by at most spacing/2).
    """
    xyz = healpy_xyz(ra, dec)
    out = {}
    for idx, (order, pix) in enumerate(partitions):
        nside = 2**order
        centre = np.array(hp.pix2vec(nside, pix, nest=True))
        reach = hp.max_pixrad(nside) + np.radians((radius_arcsec + spacing_arcsec) / 3600)
        near = np.flatnonzero(xyz @ centre >= np.cos(min(reach, np.pi)))
        own = (own_order[near] == order) & (own_pix[near] == pix)
        near = near[~own]
        if len(near) == 0:
            continue
        tree = cKDTree(boundary_samples(order, pix, spacing_arcsec))
        bound = 2 * np.sin(np.radians((radius_arcsec + 2 * spacing_arcsec) / 3600) / 2)
        chord, _ = tree.query(xyz[near], distance_upper_bound=bound)
        dist = np.degrees(2 * np.arcsin(np.clip(chord / 2, 0, 1))) * 3600
        for row, d in zip(
            near[dist <= radius_arcsec + spacing_arcsec], dist[dist <= radius_arcsec + spacing_arcsec]
        ):
            out[(int(row), idx)] = float(d)
    return out


def edge_stress_sky(n_background: int = 20_000, seed: int = 3):
    """Uniform sky plus dense clumps at both poles, across RA 0/360 and on HEALPix pixel borders."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    parts = []
    ra = rng.uniform(0, 360, n_background)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n_background)))
    parts.append((ra, dec))
    for pole in (90.0, -90.0):  # caps of 0.2 deg around each pole
        k = 3000
        r = np.degrees(np.arccos(1 - rng.uniform(0, 1 - np.cos(np.radians(0.2)), k)))
        parts.append((rng.uniform(0, 360, k), np.sign(pole) * (90 - r)))
    k = 4000  # a strip straddling RA = 0 / 360
    parts.append(((rng.uniform(-0.05, 0.05, k)) % 360, rng.uniform(-60, 60, k)))
    # points scattered within 40 arcsec of the borders of a few order-1..3 pixels
    for order, pix in ((1, 5), (2, 70), (3, 300), (0, 4), (2, 0)):
        vec = hp.boundaries(2**order, pix, step=200, nest=True).T
        b_ra, b_dec = hp.vec2ang(vec, lonlat=True)
        idx = rng.integers(0, len(b_ra), 1500)
        jitter = rng.normal(0, 40 / 3600, (2, 1500))
        d = np.clip(b_dec[idx] + jitter[1], -90, 90)
        r = (b_ra[idx] + jitter[0] / np.maximum(np.cos(np.radians(d)), 1e-3)) % 360
        parts.append((r, d))
    ra = np.concatenate([p[0] for p in parts])
    dec = np.concatenate([p[1] for p in parts])
    ra = np.where(ra >= 360, 0.0, ra)
    return pd.DataFrame(
        {"id": np.arange(len(ra), dtype=np.int64), "ra": ra, "dec": dec, "flux": rng.lognormal(0, 1, len(ra))}
    )
