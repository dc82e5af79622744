"""Per-stage cost models fitted from the benchmark's per-task times, and full-sky projections from them."""

from __future__ import annotations

import numpy as np

OURS = ("survey_engine", "xgboost.dask")
MODELLED = ("import", "margins", "crossmatch", "features", "train", "predict")
FULL_SKY = (("Gaia DR3", 1_800_000_000), ("LSST-scale", 20_000_000_000))


def cost_models(rows: list[dict]) -> list[dict]:
    """Per stage, a cost model fitted from the measured per-task (per-partition) times:
    ``time(R rows, N cores) = a + s * R + c * R / N``. ``c`` (core-seconds per row) is the least
    squares slope of the summed task times over the measured sizes; what the wall time holds
    beyond the tasks' share per worker (planning, driver work, scheduling) is fitted as
    ``a + s * R`` (a constant when only one size was measured), since driver work grows with the
    data too. ``max_rel_residual`` says how well one per-row cost describes every size."""
    models = []
    for stage in MODELLED:
        pts = [
            r
            for r in rows
            if r["suite"] == stage
            and r["tool"] in OURS
            and r.get("task_seconds")
            and r.get("rows")
            and r.get("seconds")
            and r.get(
                "modelled", True
            )  # predict: the default photo-z model's rows, not the reference models'
        ]
        if stage == "train" and pts:
            pts = [r for r in pts if "predict with" not in r["case"]]  # training only
            top = max(r["workers"] for r in pts)
            pts = [r for r in pts if r["workers"] == top]
        if not pts:
            continue
        R = np.array([float(r["rows"]) for r in pts])
        C = np.array([r["task_seconds"] for r in pts])
        c = float((C * R).sum() / (R * R).sum())
        serial = np.array([max(0.0, r["seconds"] - r["task_seconds"] / r["workers"]) for r in pts])
        a, s_row = float(np.median(serial)), 0.0
        if len(set(R)) > 1:
            s_row, a = (float(v) for v in np.polyfit(R, serial, 1))
            if s_row < 0 or a < 0:  # no growth measured: keep the median as a constant
                a, s_row = float(np.median(serial)), 0.0
        models.append(
            {
                "stage": stage,
                "core_s_per_row": c,
                "serial_s": a,
                "serial_s_per_row": s_row,
                "sizes": [int(x) for x in R],
                "task_s_p95": [r.get("task_s_p95") for r in pts],
                "max_rel_residual": float(np.max(np.abs(c * R - C) / C)),
            }
        )
    return models


def projections(rows: list[dict], cores: tuple[int, ...] = (128, 1024)) -> list[dict]:
    """Full-sky projections (Gaia DR3 1.8 B rows, LSST-scale 20 B rows) from each stage's cost
    model, onto N cores. A projection, not a measurement: it assumes the per-row cost measured here
    holds at scale, work spreads evenly over the cores and storage keeps up."""
    out = []
    for m in cost_models(rows):
        for name, total in FULL_SKY:
            for n in cores:
                seconds = (
                    m["serial_s"] + m.get("serial_s_per_row", 0.0) * total + m["core_s_per_row"] * total / n
                )
                out.append(
                    {
                        "stage": m["stage"],
                        "catalog": name,
                        "rows": total,
                        "cores": n,
                        "projected_hours": seconds / 3600,
                        "core_s_per_row": m["core_s_per_row"],
                        "serial_s": m["serial_s"],
                        "serial_s_per_row": m.get("serial_s_per_row", 0.0),
                    }
                )
    return out
