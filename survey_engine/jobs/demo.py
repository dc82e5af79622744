"""The demo: the job spec shipped with the package (``survey_engine/jobs/specs/demo.yaml``) run by
the same runner as ``survey-engine run``, with the size, seed and output folder of the command line.

Two mock surveys of one sky (astrometric at 2016.0, photometric at 2005.0 with spectra on part of
the sky) -> HATS collections with margins -> cross-match with and without proper-motion
propagation -> features -> star/galaxy/QSO classification -> photo-z with intervals -> open
clusters per tile, merged -> anomaly scores; mock variable stars -> nested light curves ->
variability features -> variable types -> ``report.html``. Re-running reuses finished stages.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from survey_engine.jobs.run import run_job
from survey_engine.jobs.spec import JobSpec, load_spec

DEFAULT_OUT = "survey-engine-demo"
DEFAULT_ROWS = 600_000


def demo_spec_path() -> Path:
    return Path(str(resources.files("survey_engine.jobs") / "specs" / "demo.yaml"))


def demo_spec(
    rows: int = DEFAULT_ROWS, out: str | Path = DEFAULT_OUT, seed: int = 42, workers: int | None = None
) -> JobSpec:
    """The shipped demo spec with the mock sky's ``rows`` and ``seed``, written to ``out``."""
    spec = load_spec(demo_spec_path())
    spec.workdir = Path(out).resolve()
    for name, (kind, params) in spec.sources.items():
        if kind == "mock":
            spec.sources[name] = (kind, {**params, "rows": int(rows), "seed": int(seed)})
        elif kind == "mock_lightcurves":  # the variable stars keep their (small) size; the seed is the demo's
            spec.sources[name] = (kind, {**params, "seed": int(seed)})
    if workers:
        spec.cluster = {**spec.cluster, "workers": int(workers)}
    return spec


def run_demo(
    rows: int = DEFAULT_ROWS,
    out: str | Path = DEFAULT_OUT,
    seed: int = 42,
    workers: int | None = None,
    client=None,
    progress: bool = True,
    echo=print,
) -> dict:
    """Run the demo; the run summary (as in ``run_summary.json``) with a short summary printed at the end."""
    spec = demo_spec(rows, out, seed, workers)
    if echo:
        echo(f"survey_engine demo: two mock surveys of a {rows:,}-row sky (seed {seed}) -> {spec.workdir}")
    summary = run_job(spec, client=client, progress=progress, echo=echo)
    if echo:
        for line in summary_lines(summary):
            echo(line)
    return summary


def summary_lines(summary: dict) -> list[str]:
    """The few lines a person reads at the end of the demo."""
    st = summary["stages"]
    lines = ["", "summary"]
    if all(s.get("skipped") for s in st.values()):
        lines.append("  every stage was already up to date (reused)")
    if "gaia" in st and "sdss" in st:
        lines.append(
            f"  catalogs        gaia {st['gaia']['rows']:,} rows (epoch 2016.0), sdss {st['sdss']['rows']:,} rows (epoch 2005.0)"
        )
    if "gaia_x_sdss" in st and "gaia_x_sdss_no_pm" in st:
        with_pm, without = st["gaia_x_sdss"], st["gaia_x_sdss_no_pm"]
        lines.append(
            f'  cross-match     {100 * with_pm["match_rate"]:.2f}% of gaia matched within 1" with proper motions '
            f"propagated, {100 * without['match_rate']:.2f}% without ({with_pm['matched'] - without['matched']:,} more)"
        )
    if "photoz_model" in st:
        h = st["photoz_model"].get("held_out", {})
        lines.append(
            f"  photo-z         held-out sigma_NMAD {h.get('sigma_nmad', float('nan')):.4f}, bias {h.get('bias', float('nan')):+.4f}, "
            f"outliers {100 * h.get('outlier_rate_015', float('nan')):.1f}% ({h.get('n', 0):,} galaxies)"
        )
    if "classifier" in st:
        h = st["classifier"].get("held_out", {})
        lines.append(
            f"  classification  held-out accuracy {h.get('accuracy', float('nan')):.3f}, macro-F1 {h.get('macro_f1', float('nan')):.3f}"
        )
    if "variable_types" in st:
        h = st["variable_types"].get("held_out", {})
        lines.append(
            f"  variable stars  types from light curves: held-out accuracy {h.get('accuracy', float('nan')):.3f}, "
            f"macro-F1 {h.get('macro_f1', float('nan')):.3f} ({st.get('light_curves', {}).get('detections', 0):,} detections "
            f"of {st.get('light_curves', {}).get('objects', 0):,} stars)"
        )
    if "open_clusters" in st:
        c = st["open_clusters"]
        lines.append(
            f"  open clusters   {c.get('n_clusters')} found (largest: {', '.join(str(n) for n in c.get('largest', []))} stars)"
        )
    seconds = sum(float(s.get("seconds") or 0) for s in st.values() if not s.get("skipped"))
    lines.append(
        f"  time            {seconds:.0f} s in {sum(not s.get('skipped') for s in st.values())} stages run "
        f"({sum(bool(s.get('skipped')) for s in st.values())} reused)"
    )
    if summary.get("report"):
        lines.append(f"  report          {summary['report']}")
    return lines
