"""Deterministic mock sky: stars, galaxies and QSOs with SDSS-like ugriz and Gaia-like astrometry.

Rows are made in fixed-size blocks; block ``b`` draws from ``numpy.random.default_rng([seed, b])``,
so the same (seed, rows) gives the same catalog whatever the number of workers, and any size can
be streamed to disk block by block.

What is in it (column names follow SDSS / Gaia):
- ``source_id`` (int64, Gaia-style: order-12 nested HEALPix index * 2**35 + a running number),
  ``ra``, ``dec`` (deg), ``l``, ``b`` (Galactic, deg), ``ebv`` (E(B-V), stronger in the plane).
- ``obj_class``: STAR / GALAXY / QSO. Stars follow the Galactic disc (denser toward the plane and
  the bulge); galaxies and QSOs are isotropic but thinned by extinction near the plane.
- ``u g r i z`` and ``u_err`` ... ``z_err``: observed (noisy, reddened) magnitudes with
  magnitude-dependent errors. Stars lie on a stellar locus (Covey et al. 2007 shape); galaxy
  colours come from a red/blue continuum with a 4000 A break redshifted through the filters; QSO
  colours from a power law with Lyman-alpha forest absorption, so colours carry redshift.
- ``redshift`` (0 for stars), ``phot_g_mean_mag``, ``bp_rp``, ``parallax``, ``parallax_error``,
  ``pmra`` (includes cos dec, as Gaia), ``pmdec``, ``pmra_error``, ``pmdec_error``: Gaia-like
  astrometry with errors growing toward faint magnitudes (NaN beyond G = 21).
- ``cluster_id``: index of the open cluster a star was drawn from, -1 for the field: a few
  clusters with common distance and motion, for cluster-finding tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from survey_engine.catalog.build import UNFINISHED_GLOB, remove_unfinished_files
from survey_engine.catalog.layout import atomic_write_text
from survey_engine.catalog.lock import output_lock
from survey_engine.catalog.owner import Owner, claim, release, write_file
from survey_engine.errors import UsageError

BLOCK_ROWS = 250_000
CLASS_FRACTIONS = {"STAR": 0.55, "GALAXY": 0.38, "QSO": 0.07}
FILTERS = ("u", "g", "r", "i", "z")
FILTER_WAVELENGTH = np.array([3551.0, 4686.0, 6166.0, 7480.0, 8932.0])  # Angstrom
FILTER_WIDTH = np.array([560.0, 1300.0, 1150.0, 1230.0, 950.0])
EXTINCTION_COEFF = np.array([4.239, 3.303, 2.285, 1.698, 1.263])  # A_x / E(B-V), Schlafly & Finkbeiner 2011
MAG_LIMIT = np.array([22.0, 22.8, 22.4, 21.8, 20.5])  # 5-sigma depth per filter
R_LIMIT = 22.5  # the mock survey is limited at r = 22.5

# ICRS -> Galactic rotation (Hipparcos convention, as astropy uses).
_ICRS_TO_GAL = np.array(
    [
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [+0.4941094278755837, -0.4448296299600112, +0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, +0.4559837761750669],
    ]
)


@dataclass(frozen=True)
class OpenCluster:
    l: float  # deg
    b: float
    distance_pc: float
    pmra: float  # mas/yr, includes cos dec
    pmdec: float
    radius_deg: float
    fraction: float  # of all stars


CLUSTERS = (
    OpenCluster(l=120.0, b=-2.0, distance_pc=450.0, pmra=-4.5, pmdec=2.1, radius_deg=0.6, fraction=0.004),
    OpenCluster(l=210.0, b=5.0, distance_pc=900.0, pmra=1.2, pmdec=-3.3, radius_deg=0.35, fraction=0.003),
    OpenCluster(l=300.0, b=-8.0, distance_pc=1600.0, pmra=-6.1, pmdec=-1.0, radius_deg=0.25, fraction=0.003),
    OpenCluster(l=30.0, b=1.5, distance_pc=2500.0, pmra=0.5, pmdec=-5.2, radius_deg=0.15, fraction=0.002),
    OpenCluster(l=15.0, b=-79.0, distance_pc=240.0, pmra=18.7, pmdec=2.6, radius_deg=1.2, fraction=0.002),
)


def galactic_to_icrs(l_deg: np.ndarray, b_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    l, b = np.radians(l_deg), np.radians(b_deg)
    gal = np.column_stack([np.cos(b) * np.cos(l), np.cos(b) * np.sin(l), np.sin(b)])
    icrs = gal @ _ICRS_TO_GAL
    ra = np.degrees(np.arctan2(icrs[:, 1], icrs[:, 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(icrs[:, 2], -1, 1)))
    return ra, dec


def icrs_to_galactic(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    icrs = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    gal = icrs @ _ICRS_TO_GAL.T
    l = np.degrees(np.arctan2(gal[:, 1], gal[:, 0])) % 360.0
    b = np.degrees(np.arcsin(np.clip(gal[:, 2], -1, 1)))
    return l, b


def _stellar_locus(t: np.ndarray) -> np.ndarray:
    """Intrinsic u-g, g-r, r-i, i-z along the main-sequence locus, t in [0, 1] (blue -> M dwarf)."""
    gr = -0.2 + 1.65 * t
    ug = np.where(gr < 0.8, 0.85 + 1.55 * (gr + 0.2), 2.4 + 0.25 * (gr - 0.8))
    ri = np.where(gr < 1.25, 0.02 + 0.38 * (gr + 0.2), 0.57 + 2.6 * (gr - 1.25))
    iz = 0.02 + 0.55 * ri
    return np.column_stack([ug, gr, ri, iz])


def _colours_to_mags(r: np.ndarray, colours: np.ndarray) -> np.ndarray:
    ug, gr, ri, iz = colours.T
    g = r + gr
    u = g + ug
    i = r - ri
    z = i - iz
    return np.column_stack([u, g, r, i, z])


def _smooth_step(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(x))


def _galaxy_mags(r: np.ndarray, z: np.ndarray, red: np.ndarray, rng) -> np.ndarray:
    """ugriz from a two-slope continuum with a 4000 A break, redshifted and seen through the filters."""
    n = len(z)
    beta = np.where(red, 1.2, -0.4) + rng.normal(0, 0.15, n)  # slope of f_nu in log wavelength
    break_mag = np.where(red, 1.1, 0.35) + rng.normal(0, 0.08, n)  # strength of the 4000 A break (mag)
    rest = FILTER_WAVELENGTH[None, :] / (1 + z[:, None])
    width = FILTER_WIDTH[None, :] / (1 + z[:, None])
    # magnitude offset relative to a flat spectrum: continuum slope + a smoothed break below 4000 A
    slope = -2.5 * beta[:, None] * np.log10(rest / 5000.0)
    blue_side = 1 - _smooth_step((rest - 4000.0) / (0.5 * width))
    brk = break_mag[:, None] * blue_side
    # the ultraviolet keeps falling blueward of the break (steeply for old populations)
    uv_slope = np.where(red, 6.0, 2.0)[:, None]
    uv = uv_slope * np.log10(np.maximum(4000.0 / rest, 1.0)) * blue_side
    mags = slope + brk + uv
    mags = mags - mags[:, 2:3] + r[:, None]
    return mags


def _qso_mags(r: np.ndarray, z: np.ndarray, rng) -> np.ndarray:
    n = len(z)
    alpha = rng.normal(-0.5, 0.25, n)  # f_nu ~ nu^alpha
    rest = FILTER_WAVELENGTH[None, :] / (1 + z[:, None])
    width = FILTER_WIDTH[None, :] / (1 + z[:, None])
    mags = 2.5 * alpha[:, None] * np.log10(rest / 5000.0)
    forest = 1.5 * (1 - _smooth_step((rest - 1216.0) / (0.5 * width))) * np.clip(z[:, None] / 3.0, 0.3, 1.5)
    lyman_limit = 3.0 * (1 - _smooth_step((rest - 912.0) / (0.5 * width)))
    emission = -0.25 * np.exp(-0.5 * ((rest - 2798.0) / (0.6 * width)) ** 2) - 0.3 * np.exp(
        -0.5 * ((rest - 1549.0) / (0.6 * width)) ** 2
    )
    mags = mags + forest + lyman_limit + emission
    return mags - mags[:, 2:3] + r[:, None]


def _counts_magnitudes(n: int, m_min: float, m_max: float, slope: float, rng) -> np.ndarray:
    """Magnitudes drawn from dN/dm ~ 10^(slope m) between m_min and m_max (inverse CDF)."""
    a, b = 10 ** (slope * m_min), 10 ** (slope * m_max)
    return np.log10(a + rng.uniform(size=n) * (b - a)) / slope


def _errors(mags: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Observed asinh magnitudes (SDSS "luptitudes") and their 1-sigma errors.

    Flux noise is set by each filter's 5-sigma depth, plus a 1% calibration floor; asinh
    magnitudes stay finite for faint and even negative fluxes, as in SDSS catalogues.
    """
    flux = 10 ** (-0.4 * mags)
    sigma_f = 10 ** (-0.4 * MAG_LIMIT[None, :]) / 5.0
    sigma_f = np.sqrt(sigma_f**2 + (0.01 * flux) ** 2)
    f_obs = flux + rng.normal(size=mags.shape) * sigma_f
    b = 10 ** (-0.4 * MAG_LIMIT[None, :]) / 5.0  # softening = 1-sigma sky noise
    k = 2.5 / np.log(10)
    obs = -k * (np.arcsinh(f_obs / (2 * b)) + np.log(b))
    err = k * sigma_f / np.sqrt(f_obs**2 + 4 * b**2)
    return obs, err


def generate_block(seed: int, block: int, rows: int) -> pd.DataFrame:
    """One block of the mock sky (``rows`` rows), fully determined by (seed, block)."""
    rng = np.random.default_rng([seed, block])
    kind = rng.choice(3, size=rows, p=list(CLASS_FRACTIONS.values()))
    n_star, n_gal, n_qso = (int((kind == k).sum()) for k in range(3))
    frames = [_stars(n_star, rng), _extragalactic(n_gal, "GALAXY", rng), _extragalactic(n_qso, "QSO", rng)]
    df = pd.concat(frames, ignore_index=True)
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    from survey_engine.catalog.healpix import radec_to_healpix

    pix12 = radec_to_healpix(df.ra.to_numpy(), df.dec.to_numpy(), 12)
    df.insert(0, "source_id", (pix12 << 35) + (np.int64(block) << 20) + np.arange(rows, dtype=np.int64))
    return df


def _stars(n: int, rng) -> pd.DataFrame:
    # Galactic structure: thin disc (|b| scale ~ distance dependent), thick disc/halo, bulge.
    comp = rng.choice(3, size=n, p=[0.72, 0.22, 0.06])
    l = rng.uniform(0, 360, n)
    sinb = np.empty(n)
    thin, thick, bulge = comp == 0, comp == 1, comp == 2
    sinb[thin] = _truncated_laplace(0.09, int(thin.sum()), rng)
    sinb[thick] = _truncated_laplace(0.35, int(thick.sum()), rng)
    l[bulge] = rng.normal(0, 8, bulge.sum()) % 360
    sinb[bulge] = np.clip(rng.normal(0, 0.1, bulge.sum()), -1, 1)
    b = np.degrees(np.arcsin(sinb))
    t = rng.beta(2.2, 2.0, n)
    abs_r = 4.0 + 6.0 * t + rng.normal(0, 0.3, n)  # main sequence: redder = fainter
    # magnitude-limited: r from star counts (dN/dm ~ 10^(0.25 m)), distance from r and M_r
    r_obs = _counts_magnitudes(n, 14.0, R_LIMIT, 0.25, rng)
    dist = 10 ** ((r_obs - abs_r) / 5.0 + 1.0)
    dist[bulge] = np.maximum(dist[bulge], rng.normal(8000, 800, bulge.sum()))
    cluster_id = np.full(n, -1, dtype=np.int64)
    # open clusters: a share of the stars, with common distance and motion
    start = 0
    for cid, cl in enumerate(CLUSTERS):
        k = int(round(cl.fraction * n))
        if k == 0 or start + k > n:
            continue
        sl = slice(start, start + k)
        l[sl] = (cl.l + rng.normal(0, cl.radius_deg / 2, k) / max(np.cos(np.radians(cl.b)), 0.2)) % 360
        b[sl] = cl.b + rng.normal(0, cl.radius_deg / 2, k)
        dist[sl] = cl.distance_pc + rng.normal(0, 0.01 * cl.distance_pc, k)
        t[sl] = rng.beta(2.0, 2.5, k)
        cluster_id[sl] = cid
        start += k
    ra, dec = galactic_to_icrs(l, np.clip(b, -90, 90))
    l, b = icrs_to_galactic(ra, dec)
    ebv = _ebv(b, l, rng)
    colours = _stellar_locus(t) + rng.normal(0, 0.03, (n, 4))
    r_true = abs_r + 5 * np.log10(dist / 10.0)
    mags = _colours_to_mags(r_true, colours)
    # G, BP-RP from ugriz (Jordi et al. style linear transforms) before reddening
    gr = colours[:, 1]
    g_gaia = r_true - 0.1 + 0.35 * gr - 0.2 * gr**2
    bp_rp = 0.15 + 1.3 * gr + 0.3 * colours[:, 2]
    # kinematics: dispersion grows with component; proper motion = v_tan / (4.74 d_kpc)
    sigma_v = np.where(comp == 0, 25.0, 60.0)
    v_l = rng.normal(-15.0, sigma_v)
    v_b = rng.normal(0.0, sigma_v * 0.6)
    pm_l = v_l / (4.74 * dist / 1000.0)
    pm_b = v_b / (4.74 * dist / 1000.0)
    pmra, pmdec = _rotate_pm(ra, dec, pm_l, pm_b)
    for cid, cl in enumerate(CLUSTERS):
        m = cluster_id == cid
        pmra[m] = cl.pmra + rng.normal(0, 0.08, m.sum()) * (1000.0 / cl.distance_pc) ** 0.5
        pmdec[m] = cl.pmdec + rng.normal(0, 0.08, m.sum()) * (1000.0 / cl.distance_pc) ** 0.5
    frame = _assemble(ra, dec, l, b, ebv, mags, np.zeros(n), "STAR", rng)
    _gaia_columns(frame, g_gaia + 2.74 * ebv * 0.86, bp_rp + 1.34 * ebv, 1000.0 / dist, pmra, pmdec, rng)
    frame["cluster_id"] = cluster_id
    return frame


def _truncated_laplace(scale: float, n: int, rng) -> np.ndarray:
    """Laplace(0, scale) restricted to (-1, 1), by inverse CDF (clipping would pile rows up at +-1)."""
    u = rng.uniform(size=n)
    magnitude = -scale * np.log1p(-u * (1 - np.exp(-1 / scale)))
    return np.where(rng.uniform(size=n) < 0.5, -magnitude, magnitude)


def _rotate_pm(ra, dec, pm_l, pm_b):
    """Rotate proper motions from Galactic (l, b) to equatorial (ra*, dec) components."""
    ra_ngp, dec_ngp = np.radians(192.85948), np.radians(27.12825)
    a, d = np.radians(ra), np.radians(dec)
    c1 = np.sin(dec_ngp) * np.cos(d) - np.cos(dec_ngp) * np.sin(d) * np.cos(a - ra_ngp)
    c2 = np.cos(dec_ngp) * np.sin(a - ra_ngp)
    norm = np.hypot(c1, c2)
    norm = np.where(norm == 0, 1.0, norm)  # exactly at a celestial pole the frames coincide
    c1, c2 = c1 / norm, c2 / norm
    pmra = c1 * pm_l - c2 * pm_b
    pmdec = c2 * pm_l + c1 * pm_b
    return pmra, pmdec


def _ebv(b, l, rng):
    plane = 0.6 * np.exp(-np.abs(b) / 4.0) * (1 + 0.5 * np.cos(np.radians(l)))
    return np.round(0.015 + plane * rng.lognormal(0, 0.3, len(b)), 4)


def _extragalactic(n: int, cls: str, rng) -> pd.DataFrame:
    # isotropic, thinned near the plane where extinction hides them (resampled, so n is exact)
    ra = np.empty(0)
    dec = np.empty(0)
    while len(ra) < n:
        m = 2 * (n - len(ra)) + 16
        r_ = rng.uniform(0, 360, m)
        d_ = np.degrees(np.arcsin(rng.uniform(-1, 1, m)))
        _, b_ = icrs_to_galactic(r_, d_)
        keep = rng.uniform(size=m) < 1 - 0.8 * np.exp(-np.abs(b_) / 10.0)
        ra, dec = np.concatenate([ra, r_[keep]]), np.concatenate([dec, d_[keep]])
    ra, dec = ra[:n], dec[:n]
    l, b = icrs_to_galactic(ra, dec)
    ebv = _ebv(b, l, rng)
    if cls == "GALAXY":
        # magnitude-limited: r from galaxy counts, then redshift from the r - z relation of
        # flux-limited samples (median z ~ 0.1 at r = 17, ~0.45 at r = 22)
        r_true = _counts_magnitudes(n, 14.0, R_LIMIT, 0.45, rng)
        z_med = 0.1 * 10 ** (0.13 * (r_true - 17.0))
        z = np.clip(z_med * rng.lognormal(0, 0.35, n), 0.005, 1.4)
        red = rng.uniform(size=n) < 0.35 + 0.2 * np.exp(-z / 0.3)
        mags = _galaxy_mags(r_true, z, red, rng)
    else:
        z = np.clip(rng.gamma(4.0, 0.45, n) + 0.1, 0.1, 4.5)
        r_true = np.clip(rng.normal(19.5, 1.1, n), 15.5, 23.0)
        mags = _qso_mags(r_true, z, rng)
    frame = _assemble(ra, dec, l, b, ebv, mags, z, cls, rng)
    g_gaia = mags[:, 2] - 0.1 + 0.35 * (mags[:, 1] - mags[:, 2])
    bp_rp = 0.2 + 1.2 * (mags[:, 1] - mags[:, 2])
    _gaia_columns(frame, g_gaia + 2.36 * ebv, bp_rp, np.zeros(n), np.zeros(n), np.zeros(n), rng)
    frame["cluster_id"] = np.full(n, -1, dtype=np.int64)
    return frame


def _assemble(ra, dec, l, b, ebv, true_mags, z, cls, rng) -> pd.DataFrame:
    reddened = true_mags + EXTINCTION_COEFF[None, :] * ebv[:, None]
    obs, err = _errors(reddened, rng)
    data = {
        "ra": ra,
        "dec": dec,
        "l": l,
        "b": b,
        "obj_class": np.full(len(ra), cls),
        "redshift": z,
        "ebv": ebv,
    }
    for k, f in enumerate(FILTERS):
        data[f] = obs[:, k].astype(np.float32)
    for k, f in enumerate(FILTERS):
        data[f"{f}_err"] = err[:, k].astype(np.float32)
    return pd.DataFrame(data)


def _gaia_columns(frame, g_mag, bp_rp, parallax_true, pmra_true, pmdec_true, rng) -> None:
    n = len(frame)
    g = g_mag + rng.normal(0, 0.003, n)
    plx_err = 0.02 + 0.03 * 10 ** (0.2 * np.clip(g - 15, 0, None)) ** 2 / 10
    pm_err = 0.8 * plx_err
    faint = g > 21.0
    frame["phot_g_mean_mag"] = np.where(faint, np.nan, g).astype(np.float32)
    frame["bp_rp"] = np.where(faint, np.nan, bp_rp + rng.normal(0, 0.01, n)).astype(np.float32)
    frame["parallax"] = np.where(faint, np.nan, parallax_true + rng.normal(size=n) * plx_err)
    frame["parallax_error"] = np.where(faint, np.nan, plx_err).astype(np.float32)
    frame["pmra"] = np.where(faint, np.nan, pmra_true + rng.normal(size=n) * pm_err)
    frame["pmdec"] = np.where(faint, np.nan, pmdec_true + rng.normal(size=n) * pm_err)
    frame["pmra_error"] = np.where(faint, np.nan, pm_err).astype(np.float32)
    frame["pmdec_error"] = np.where(faint, np.nan, pm_err).astype(np.float32)


def block_sizes(rows: int, block_rows: int = BLOCK_ROWS) -> list[int]:
    full, rest = divmod(rows, block_rows)
    return [block_rows] * full + ([rest] if rest else [])


def _write_block(
    make_block, seed: int, block: int, rows: int, out_dir: str, owner: Owner | None = None
) -> int:
    """Block ``block`` as ``out_dir/part-NNNNN.parquet`` (written under a temporary name, then renamed
    while ``owner``'s write still owns ``out_dir``); a block already there is kept (a resumed run).
    The rows in the file."""
    path = Path(out_dir) / f"part-{block:05d}.parquet"
    if path.exists():
        return pq.read_metadata(path).num_rows
    table = pa.Table.from_pandas(make_block(seed, block, rows), preserve_index=False)
    write_file(
        path,
        lambda tmp: pq.write_table(table, tmp, row_group_size=max(table.num_rows, 1), compression="snappy"),
        owner,
    )
    return table.num_rows


@contextmanager
def mock_folder(out: Path, spec: dict, what: str) -> Iterator[Owner]:
    """``out`` made ready for a mock writer, which its blocks fill in place: refused when it holds
    other files or a mock of another ``spec`` (the same spec resumes: its finished blocks are kept,
    a killed writer's temporaries removed), written by one writer at a time (``OUT.lock``), and
    claimed for this write, so that a late task of an earlier one puts nothing in it; ``out/mock.json``
    holds ``spec``. Yields the claim for the tasks."""
    with output_lock(out, f"write {what} to {out}"):
        manifest = out / "mock.json"
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder; choose another --out")
        # a killed writer's temporaries alone (even a half-written mock.json) do not make it another's
        if out.exists() and any(not p.match(UNFINISHED_GLOB) for p in out.iterdir()):
            try:
                held_spec = json.loads(manifest.read_text())
            except (OSError, ValueError):
                raise FileExistsError(
                    f"{out}: already holds other files (no readable {manifest.name}); choose another --out"
                ) from None
            if held_spec != spec:
                raise FileExistsError(
                    f"{out}: already holds {what} with other arguments ({manifest.name}: {held_spec}); "
                    "choose another --out"
                )
        out.mkdir(parents=True, exist_ok=True)
        remove_unfinished_files(out)
        atomic_write_text(manifest, json.dumps(spec))
        owner = claim(out)
        yield owner
        release(out)  # from here a late task of this write is refused too
        remove_unfinished_files(out)  # a lost worker's, whose task ran again elsewhere


def write_blocks(
    make_block,
    rows: int,
    out: str | Path,
    spec: dict,
    what: str,
    seed: int = 42,
    client=None,
    progress: bool = True,
) -> list[int]:
    """Stream ``make_block(seed, block, rows)`` for every block of a ``rows``-row sky to
    ``out/part-NNNNN.parquet``, resumable block by block (``mock_folder``). The rows of each block."""
    from survey_engine.runtime import dask_client, run_tasks

    if rows < 1:
        raise UsageError(f"--rows must be positive, got {rows}")
    with mock_folder(Path(out), spec, what) as owner, dask_client(client) as c:
        calls = [(make_block, seed, b, n, str(out), owner) for b, n in enumerate(block_sizes(rows))]
        return list(run_tasks(c, _write_block, calls, what, progress))


def write_mock_sky(
    rows: int, out: str | Path, seed: int = 42, client=None, progress: bool = True
) -> list[Path]:
    """Stream a mock sky of ``rows`` rows to ``out/part-NNNNN.parquet`` (resumable, block by block)."""
    spec = {
        "rows": int(rows),
        "seed": int(seed),
        "block_rows": BLOCK_ROWS,
        "generator": "survey_engine.mock.sky v1",
    }
    counts = write_blocks(generate_block, rows, out, spec, "mock sky", seed, client, progress)
    return [Path(out) / f"part-{b:05d}.parquet" for b in range(len(counts))]
