"""The variable-star job (jobs/variables.yaml) at a small size: mock light curves -> nested catalog ->
variability features -> variable-type classifier per cadence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from survey_engine.jobs.run import run_job
from survey_engine.jobs.spec import JobSpecError, load_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_variables_job_classifies_variable_types(tmp_path, client):
    spec_text = (REPO / "jobs" / "variables.yaml").read_text()
    data = yaml.safe_load(spec_text)
    data["sources"]["dense"]["mock_lightcurves"]["objects"] = 800
    data["stages"] = [
        s for s in data["stages"] if s["id"].endswith("_dense")
    ]  # one cadence keeps the test short
    del data["sources"]["sparse"]
    small = tmp_path / "variables.yaml"
    small.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_spec(small, base=tmp_path)
    summary = run_job(spec, client=client, progress=False, echo=None)
    stages = summary["stages"]
    assert (
        stages["lightcurves_dense"]["objects"] == 800
        and stages["lightcurves_dense"]["unmatched_detections"] == 0
    )
    assert stages["features_dense"]["rows"] == 800
    held_out = stages["types_dense"]["held_out"]
    assert held_out["n"] >= 120
    assert held_out["accuracy"] >= 0.80 and held_out["macro_f1"] >= 0.70, held_out
    metrics = (
        json.loads((spec.workdir / "types_dense" / "metrics.json").read_text())
        if (spec.workdir / "types_dense" / "metrics.json").exists()
        else None
    )
    if metrics is not None:
        assert set(metrics["test"]["per_class"]) >= {"RRAB", "RRC", "CONST"}


def test_lightcurves_stage_checks_its_detections_source(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "sources:\n  sky: {mock: {rows: 1000}}\n  lcs: {mock_lightcurves: {objects: 10}}\n"
        "stages:\n  - id: objs\n    import: {source: lcs}\n"
        "  - id: lc\n    lightcurves: {objects: objs, detections: sky}\n"
    )
    with pytest.raises(
        JobSpecError,
        match=r"bad.yaml:\d+: stage 'lc': detections: 'sky' is not a files or mock_lightcurves source",
    ):
        load_spec(spec)
