"""Check what `survey-engine demo` wrote, as a new user would look at it (run by .ci/run after the
README's first command, in the fresh venv). Exit 1 with the reason on the first thing that is wrong."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import survey_engine as se


def fail(message: str) -> None:
    print(f"demo check: {message}", file=sys.stderr)
    sys.exit(1)


def main(workdir: str) -> None:
    work = Path(workdir)
    summary_file = work / "run_summary.json"
    if not summary_file.exists():
        fail(f"{summary_file} missing")
    summary = json.loads(summary_file.read_text())
    if summary.get("status") != "ok":
        fail(f"run status {summary.get('status')!r}: {summary.get('error')}")
    report = work / "report.html"
    if not report.exists() or report.stat().st_size < 50_000:
        fail(f"{report} missing or too small to hold its plots")
    html = report.read_text()
    for section in ("gaia_x_sdss", "photoz", "open_clusters", "id='variables'", "data:image/png;base64"):
        if section not in html:
            fail(f"{report} has no {section!r}")
    stages = summary["stages"]
    rows = {}
    for name in (
        "gaia",
        "sdss",
        "gaia_x_sdss",
        "gaia_x_sdss_no_pm",
        "classes",
        "photoz",
        "open_clusters",
        "anomalies",
        "light_curves",
        "variable_classes",
    ):
        cat = se.open_catalog(work / name)
        rows[name] = cat.row_count()
        if rows[name] <= 0:
            fail(f"{work / name}: no rows")
        if cat.name != name:
            fail(f"{work / name}: the catalog is called {cat.name!r}, not after its stage")
    if rows["gaia_x_sdss"] != rows["gaia"]:  # a left join keeps every Gaia row
        fail(f"gaia_x_sdss has {rows['gaia_x_sdss']} rows, gaia {rows['gaia']}")
    with_pm, without_pm = (
        stages["gaia_x_sdss"].get("match_rate"),
        stages["gaia_x_sdss_no_pm"].get("match_rate"),
    )
    if not (with_pm and without_pm and with_pm > without_pm and with_pm > 0.9):
        fail(f"match rates with / without proper motions: {with_pm} / {without_pm}")
    photoz = stages["photoz_model"]["held_out"]
    if not 0.005 < photoz["sigma_nmad"] < 0.08:
        fail(f"photo-z sigma_NMAD {photoz['sigma_nmad']} out of range")
    classes = stages["classifier"]["held_out"]
    if classes["accuracy"] < 0.85:
        fail(f"classifier accuracy {classes['accuracy']} below 0.85")
    variables = stages["variable_types"]["held_out"]
    if variables["accuracy"] < 0.8:
        fail(f"variable-star classifier accuracy {variables['accuracy']} below 0.8")
    zphot = se.open_catalog(work / "photoz").head(5)
    for column in ("z_phot", "z_phot_lo", "z_phot_hi"):
        if column not in zphot.columns:
            fail(f"photoz has no {column!r}")
    print(
        f"demo check: ok ({rows['gaia']:,} Gaia-like, {rows['sdss']:,} SDSS-like rows; match rate {with_pm:.4f} with "
        f"proper motions, {without_pm:.4f} without; photo-z sigma_NMAD {photoz['sigma_nmad']:.4f}; "
        f"class accuracy {classes['accuracy']:.3f}; variable types {variables['accuracy']:.3f}; report {report})"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "survey-engine-demo")
