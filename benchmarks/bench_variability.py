"""Variability features: survey_engine vs light-curve, feets and cesium, per core, on the same mock light curves.

    python benchmarks/bench_variability.py --objects 2000 [--cadence dense] [--out benchmarks/results]
    python benchmarks/bench_variability.py --objects 100000 --one-process-objects 20000 --peer-objects 0

The same single-band light curves (the r band of mock objects) go through:
* survey_engine on the cluster (2 workers x 1 thread): the whole feature set, nested catalog in, catalog out;
* survey_engine's feature function in one process (one thread);
* light-curve alone in one process: its features plus its own periodogram (no Stetson J/L, no Fourier terms),
  with its default grid (up to 20x the mean Nyquist frequency: it cannot see periods much shorter than the
  typical gap between epochs), with our grid (up to 20 / day, the same 2**k points, no refinement), the
  light curves given as float64 and as float32 (what survey_engine gave it before its coarse search moved
  to finufft), and on the 2x and 4x finer grids (3 and 6 samples per peak), to see what accuracy
  light-curve alone reaches;
* feets in one process (synchronous): the overlapping features (Amplitude, Skew, Std, PeriodLS, StetsonK);
* cesium in one process: the overlapping features (amplitude, skew, std, stetson_j, stetson_k, freq1_freq).
Reported: light curves per second per core (wall clock; on a machine shared with other work this
counts the waiting too) and per CPU-second (the CPU time of the process, or of the Dask workers: what a
core doing nothing else would give), and whether the overlapping values agree (amplitude, skew and std
to 1e-6; Stetson J equals cesium's; the period equals feets' where both find a clear peak).
BLAS/OpenMP pools are held to one thread in this process (environment variables set before numpy
loads), as they are in the Dask workers.
Writes benchmarks/results/variability.json.
"""

from __future__ import annotations

import os

# one BLAS/OpenMP thread, set before numpy loads: threadpoolctl's limit after the fact left OpenBLAS's
# idle second thread in the way here (a 305 x 120 complex matrix-vector product took ~20 ms instead
# of 0.02 ms, at random), and the Dask workers get these variables from distributed anyway
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def curves_of(objects: int, cadence: str, seed: int = 5) -> tuple[list, list]:
    from survey_engine.mock.lightcurves import BLOCK_OBJECTS, block_sizes, generate_block

    band = "r" if cadence == "dense" else "G"
    curves, periods = [], []
    for b, n in enumerate(block_sizes(objects, BLOCK_OBJECTS)):
        obj, det = generate_block(seed, b, n, cadence)
        true_period = dict(zip(obj["object_id"], obj["period"]))
        det = det[det["band"] == band].sort_values(["object_id", "time"])
        for oid, d in det.groupby("object_id"):
            curves.append((d["time"].to_numpy(), d["mag"].to_numpy(), d["mag_err"].to_numpy()))
            periods.append(true_period[oid])
    return curves, np.array(periods)


def timed(func, *args) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds of this process, and the result."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = func(*args)
    return time.perf_counter() - t0, time.process_time() - c0, out


def _cpu_seconds() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def ours_one_process(curves):
    from survey_engine.features.variability import features_of_many

    return features_of_many(curves)


def light_curve_alone(curves):
    import light_curve as lc

    from survey_engine.features.variability import lc_extractor

    ex = lc_extractor()
    pg = lc.Periodogram(peaks=1, resolution=10, max_freq_factor=20)
    return [
        np.concatenate([ex(t, m, e, sorted=True, check=False), pg(t, m, e, sorted=True, check=False)])
        for t, m, e in curves
    ]


def light_curve_on_grid(curves, samples_per_peak: float, single: bool = False):
    """light-curve's features and its FFT periodogram on survey_engine's kind of grid (0 to 20 / day,
    ``2**k`` points, at least ``samples_per_peak`` per peak width), no refinement; ``single``: the
    periodogram given float32 times (from the first epoch) and values (as survey_engine gave it
    before its coarse search moved to finufft)."""
    import functools

    import light_curve as lc

    from survey_engine.features.variability import PEAKS, TWO_PI, VariabilitySpec, coarse_grid, lc_extractor

    ex, spec = lc_extractor(), VariabilitySpec(samples_per_peak=samples_per_peak)
    fmax = 1.0 / spec.min_period

    @functools.cache
    def periodogram(log2_size: int):  # planned once per grid size, as survey_engine's plans are
        return lc.Periodogram(peaks=PEAKS, freqs=np.linspace(0.0, TWO_PI * fmax, 2**log2_size + 1), fast=True)

    out = []
    for t, m, e in curves:
        k = coarse_grid(t, spec)[2]
        x = (t - t[0], m, e) if single else (t, m, e)
        if single:
            x = tuple(np.asarray(a, dtype=np.float32) for a in x)
        out.append(
            np.concatenate(
                [
                    ex(t, m, e, sorted=True, check=False),
                    periodogram(k)(*x, sorted=True, check=False)[:2],
                ]
            )
        )
    return out


def feets_features(curves):
    import feets

    space = feets.FeatureSpace(
        only=["Amplitude", "Skew", "Std", "PeriodLS", "StetsonK"], dask_options={"scheduler": "synchronous"}
    )
    return [space.extract(time=t, magnitude=m, error=e).as_frame().iloc[0] for t, m, e in curves]


def cesium_features(curves):
    from cesium.featurize import featurize_time_series

    names = ["amplitude", "skew", "std", "stetson_j", "stetson_k", "freq1_freq"]
    out = []
    for t, m, e in curves:
        frame = featurize_time_series(times=t, values=m, errors=e, features_to_use=names, scheduler=None)
        out.append({n: float(frame[n].iloc[0, 0]) for n in names})
    return out


def ours_on_cluster(objects: int, cadence: str, workdir: Path) -> tuple[float, float]:
    """Wall seconds of the variability stage on 2 workers, and the CPU seconds its workers spent."""
    import logging

    from distributed import Client, LocalCluster

    from survey_engine.features.variability import VariabilitySpec, variability_catalog
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import
    from survey_engine.ingest.lightcurves import LightcurveArguments, attach_lightcurves
    from survey_engine.mock.lightcurves import write_mock_lightcurves

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):
        write_mock_lightcurves(
            objects, workdir / "mock", seed=5, cadence=cadence, client=client, progress=False
        )
        run_import(
            ImportArguments(
                [str(workdir / "mock" / "objects")],
                str(workdir / "objects"),
                id_column="object_id",
                max_rows=max(100, objects // 8),
                margin_arcsec=0,
            ),
            client=client,
            progress=False,
        )
        attach_lightcurves(
            LightcurveArguments(
                str(workdir / "objects"), [str(workdir / "mock" / "detections")], str(workdir / "nested")
            ),
            client=client,
            progress=False,
        )
        band = "r" if cadence == "dense" else "G"
        c0 = sum(client.run(_cpu_seconds).values())
        t0 = time.perf_counter()
        variability_catalog(
            str(workdir / "nested"),
            str(workdir / "features"),
            VariabilitySpec(bands=[band]),
            client=client,
            progress=False,
        )
        return time.perf_counter() - t0, sum(client.run(_cpu_seconds).values()) - c0


def _period_fraction(periods: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the periodic mock stars whose period is found to 0.1%."""
    periodic = np.isfinite(truth)
    return float(np.mean((np.abs(periods - truth) / truth)[periodic] < 1e-3))


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000, help="mock objects through the 2-worker stage")
    parser.add_argument(
        "--one-process-objects",
        type=int,
        default=None,
        help="the first N of those curves through survey_engine and light-curve in one process (default all)",
    )
    parser.add_argument(
        "--peer-objects", type=int, default=300, help="objects for feets and cesium (they are slow; 0: skip)"
    )
    parser.add_argument("--cadence", choices=["dense", "sparse"], default="dense")
    parser.add_argument("--skip-cluster", action="store_true", help="only the one-process rows")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    import shutil
    import tempfile

    from survey_engine.features.variability import VariabilitySpec

    curves, truth = curves_of(min(args.one_process_objects or args.objects, args.objects), args.cadence)
    peer = curves[: args.peer_objects]
    rows, periods = {}, {}

    def row(n: int, wall: float, cpu: float, cores: int = 1) -> dict:
        return {
            "curves": n,
            "seconds": wall,
            "cpu_seconds": cpu,
            "per_second_per_core": n / wall / cores,
            "per_cpu_second": n / cpu,
        }

    spp = VariabilitySpec().samples_per_peak
    # each tool runs once on a few curves first (imports, FFT plans for the grid sizes), as each Dask
    # worker has after its first partition
    ours_one_process(curves[:20])
    t, c, ours = timed(ours_one_process, curves)
    rows["survey_engine, one process"] = row(len(curves), t, c)
    periods["survey_engine"] = ours["period"].to_numpy()
    lc_runs = {
        "light-curve alone (its grid)": (light_curve_alone,),
        f"light-curve alone (our grid, {spp:g} samples/peak, float64)": (light_curve_on_grid, spp, False),
        f"light-curve alone (our grid, {spp:g} samples/peak, float32)": (light_curve_on_grid, spp, True),
        "light-curve alone (3 samples/peak, float32)": (light_curve_on_grid, 3, True),
        "light-curve alone (6 samples/peak, float32)": (light_curve_on_grid, 6, True),
    }
    for name, (func, *extra) in lc_runs.items():
        func(curves[:20], *extra)
        t, c, found = timed(func, curves, *extra)
        rows[f"{name}, one process"] = row(len(curves), t, c)
        periods[name] = np.array([r[-2] for r in found])
    if len(peer):
        t, c, theirs_feets = timed(feets_features, peer)
        rows["feets, one process"] = row(len(peer), t, c)
        t, c, theirs_cesium = timed(cesium_features, peer)
        rows["cesium, one process"] = row(len(peer), t, c)
    if not args.skip_cluster:
        work = Path(tempfile.mkdtemp(prefix="bench-variability-"))
        try:
            t, c = ours_on_cluster(args.objects, args.cadence, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows["survey_engine, 2 workers"] = row(args.objects, t, c, cores=2)
    agree = {
        "period_to_0.1%_of_truth": {name: _period_fraction(p, truth) for name, p in periods.items()},
    }
    if len(peer):
        from cesium.features.stetson import stetson_j

        n = len(peer)
        agree.update(
            {
                "amplitude_vs_feets": bool(
                    np.allclose(ours["amplitude"][:n], [f["Amplitude"] for f in theirs_feets], rtol=1e-6)
                ),
                "skew_vs_feets": bool(
                    np.allclose(ours["skew"][:n], [f["Skew"] for f in theirs_feets], rtol=1e-6)
                ),
                "std_vs_feets": bool(
                    np.allclose(ours["standard_deviation"][:n], [f["Std"] for f in theirs_feets], rtol=1e-6)
                ),
                # cesium's featurize() computes stetson_j without the errors; its function with them is
                # the definition
                "stetson_j_vs_cesium": bool(
                    np.allclose(ours["stetson_j"][:n], [stetson_j(m, dx=e) for _, m, e in peer], rtol=1e-9)
                ),
            }
        )
        feets_p = np.array([f["PeriodLS_0"] for f in theirs_feets])
        cesium_p = np.array([1.0 / c["freq1_freq"] for c in theirs_cesium])
        agree["period_to_0.1%_of_truth"].update(
            {
                "survey_engine_same_curves_as_peers": _period_fraction(
                    periods["survey_engine"][:n], truth[:n]
                ),
                "feets": _period_fraction(feets_p, truth[:n]),
                "cesium": _period_fraction(cesium_p, truth[:n]),
            }
        )
    from survey_engine.bench.measure import machine_info

    result = {
        "objects": args.objects,
        "one_process_objects": len(curves),
        "cadence": args.cadence,
        "rows": rows,
        "agree": agree,
        "load_average_1_5_15_min_at_end": list(os.getloadavg()),
        "machine": machine_info(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "variability.json").write_text(json.dumps(result, indent=1))
    for name, r in rows.items():
        print(
            f"{name:62s} {r['curves']:7d} curves {r['seconds']:8.1f} s {r['per_second_per_core']:8.1f} "
            f"curves/s/core {r['per_cpu_second']:8.1f} curves/CPU-s"
        )
    print("agreement:", json.dumps(agree, indent=1))


if __name__ == "__main__":
    main()
