"""Two surveys of the same mock sky, as two real surveys of one sky differ: an astrometric one
(Gaia-like, epoch 2016.0) and a photometric one (SDSS-like, epoch 2005.0) with a spectroscopic
subset on part of the sky.

Both are cut from the blocks of ``survey_engine.mock.sky`` (same seed, same block, same rows), so
a source is in both where both surveys see it, and the surveys stay deterministic for a seed and
independent of the number of workers.

- ``astrometric`` (epoch 2016.0, the sky's own epoch): sources with G < 21. ``source_id``, ``ra``,
  ``dec``, ``parallax``, ``parallax_error``, ``pmra`` (includes cos dec), ``pmra_error``,
  ``pmdec``, ``pmdec_error``, ``phot_g_mean_mag``, ``phot_bp_mean_mag``, ``phot_rp_mean_mag``,
  ``bp_rp``, ``ref_epoch``.
- ``photometric`` (epoch 2005.0): sources with r < 22.6. ``objid``, ``ra``, ``dec`` moved back
  from 2016.0 to 2005.0 by the astrometric proper motions (so a match that ignores them loses
  the high-proper-motion stars) plus 0.05" of measurement noise, ``u g r i z`` with ``*_err``,
  ``ebv``, and the spectroscopic subset: ``z_spec`` and ``spec_class`` (GALAXY / QSO / STAR; NaN
  and null elsewhere) inside a footprint of RA 110-260 deg, Dec -5..70 deg: galaxies and stars
  with r < 21.5 and half of the QSOs with r < 21.
- Both keep the mock's truth for checking results (never as features): ``true_class``, and
  ``true_cluster_id`` (astrometric) / ``true_redshift`` (photometric).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.crossmatch.epochs import propagate
from survey_engine.errors import UsageError
from survey_engine.mock.sky import BLOCK_ROWS, generate_block

SURVEYS = ("sky", "astrometric", "photometric")
EPOCHS = {"astrometric": 2016.0, "photometric": 2005.0}
G_LIMIT = 21.0
R_LIMIT = 22.6
POSITION_NOISE_ARCSEC = 0.05
SPEC_FOOTPRINT = {"ra": (110.0, 260.0), "dec": (-5.0, 70.0)}
OBJID_BASE = 1_237_000_000_000_000_000  # SDSS-looking 19-digit ids


def astrometric_block(sky: pd.DataFrame) -> pd.DataFrame:
    """The Gaia-like survey's rows of one sky block (sources brighter than G = 21)."""
    seen = sky[np.isfinite(sky["phot_g_mean_mag"])]
    g = seen["phot_g_mean_mag"].to_numpy(np.float32)
    bp_rp = seen["bp_rp"].to_numpy(np.float32)
    rp = g - np.float32(0.05) - np.float32(0.55) * bp_rp
    cols = [
        "source_id",
        "ra",
        "dec",
        "parallax",
        "parallax_error",
        "pmra",
        "pmra_error",
        "pmdec",
        "pmdec_error",
    ]
    out = seen[cols].reset_index(drop=True)
    out["phot_g_mean_mag"] = g
    out["phot_bp_mean_mag"] = (rp + bp_rp).astype(np.float32)
    out["phot_rp_mean_mag"] = rp.astype(np.float32)
    out["bp_rp"] = bp_rp
    out["ref_epoch"] = EPOCHS["astrometric"]
    out["true_class"] = seen["obj_class"].to_numpy()
    out["true_cluster_id"] = seen["cluster_id"].to_numpy()
    return out


def photometric_block(sky: pd.DataFrame, seed: int, block: int) -> pd.DataFrame:
    """The SDSS-like survey's rows of one sky block: positions at 2005.0, spectra on part of the sky."""
    rng = np.random.default_rng([seed, block, 2005])
    row = np.arange(len(sky), dtype=np.int64)
    keep = sky["r"].to_numpy() < R_LIMIT
    seen, row = sky[keep], row[keep]
    ra, dec = propagate(
        seen["ra"].to_numpy(),
        seen["dec"].to_numpy(),
        seen["pmra"].to_numpy(),
        seen["pmdec"].to_numpy(),
        EPOCHS["astrometric"],
        EPOCHS["photometric"],
    )
    noise = rng.normal(0.0, POSITION_NOISE_ARCSEC / 3600.0, (2, len(seen)))
    dec = np.clip(dec + noise[1], -90.0, 90.0)
    ra = (ra + noise[0] / np.maximum(np.cos(np.radians(dec)), 1e-6)) % 360.0
    out = pd.DataFrame({"objid": OBJID_BASE + (np.int64(block) << 24) + row, "ra": ra, "dec": dec})
    for band in ("u", "g", "r", "i", "z"):
        out[band] = seen[band].to_numpy()
    for band in ("u", "g", "r", "i", "z"):
        out[f"{band}_err"] = seen[f"{band}_err"].to_numpy()
    out["ebv"] = seen["ebv"].to_numpy()
    cls, r = seen["obj_class"].to_numpy(), seen["r"].to_numpy()
    inside = (
        (ra > SPEC_FOOTPRINT["ra"][0])
        & (ra < SPEC_FOOTPRINT["ra"][1])
        & (dec > SPEC_FOOTPRINT["dec"][0])
        & (dec < SPEC_FOOTPRINT["dec"][1])
    )
    target = np.where(cls == "QSO", r < 21.0, r < 21.5) & (
        (cls != "QSO") | (rng.uniform(size=len(cls)) < 0.5)
    )
    has_spec = inside & target
    z_true = seen["redshift"].to_numpy()
    out["z_spec"] = np.where(has_spec, z_true + rng.normal(0.0, 3e-5, len(cls)) * (cls != "STAR"), np.nan)
    out["spec_class"] = pd.array(np.where(has_spec, cls, None), dtype="string")
    out["true_class"] = cls
    out["true_redshift"] = z_true
    return out


def survey_block(survey: str, seed: int, block: int, rows: int) -> pd.DataFrame:
    """One block of ``survey`` (``sky``, ``astrometric`` or ``photometric``)."""
    sky = generate_block(seed, block, rows)
    if survey == "sky":
        return sky
    if survey == "astrometric":
        return astrometric_block(sky)
    if survey == "photometric":
        return photometric_block(sky, seed, block)
    raise UsageError(f"survey must be one of {', '.join(SURVEYS)}, got {survey!r}")


def write_survey(
    survey: str, rows: int, out: str | Path, seed: int = 42, client=None, progress: bool = True
) -> int:
    """Stream ``survey`` of a ``rows``-row mock sky to ``out/part-NNNNN.parquet``; the rows written.

    Resumable block by block; an ``out`` holding another survey, size or seed is refused."""
    from functools import partial

    from survey_engine.mock.sky import write_blocks

    if survey not in SURVEYS:
        raise UsageError(f"survey must be one of {', '.join(SURVEYS)}, got {survey!r}")
    spec = {
        "rows": int(rows),
        "seed": int(seed),
        "block_rows": BLOCK_ROWS,
        "survey": survey,
        "generator": "survey_engine.mock.surveys v1",
    }
    return int(
        sum(
            write_blocks(
                partial(survey_block, survey),
                rows,
                out,
                spec,
                f"mock {survey} survey",
                seed,
                client,
                progress,
            )
        )
    )
