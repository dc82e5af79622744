"""The Python API (survey_engine.api): one function per CLI stage, same parameters, a result object.

Every function runs here on a small mock sky in the session's LocalCluster, and its counts are
checked against the data (brute force where there is one)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import survey_engine as se
from survey_engine import api
from tests.conftest import REPO, random_sky

MOCK_ROWS = 8_000


@pytest.fixture(scope="module")
def mock_files(tmp_path_factory, client):
    from survey_engine.mock.sky import write_mock_sky

    root = tmp_path_factory.mktemp("api_mock")
    write_mock_sky(MOCK_ROWS, root / "files", seed=11, client=client, progress=False)
    return root / "files"


@pytest.fixture(scope="module")
def mock_sky(mock_files, tmp_path_factory, client):
    out = tmp_path_factory.mktemp("api_sky") / "sky"
    return se.import_catalog(
        mock_files, out=out, id="source_id", max_rows=1_500, margin=1800, no_progress=True, client=client
    )


@pytest.fixture(scope="module")
def photoz_model(mock_sky, tmp_path_factory, client):
    out = tmp_path_factory.mktemp("api_model") / "photoz"
    return se.train(
        "photoz",
        catalog=mock_sky.path,
        features="u-g,g-r,r-i,i-z,r",
        target="redshift",
        where="obj_class == 'GALAXY'",
        members=1,
        rounds=150,  # the API's path, not the model's accuracy: sigma_NMAD < 0.2 needs few rounds
        model_out=out,
        client=client,
    )


# -- the contract: the names, and the CLI's parameters -------------------------------------------

CONTRACT = {
    "import": "import_catalog",
    "ingest": "ingest_tap",
    "crossmatch": "crossmatch",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "cluster": "cluster",
    "run": "run_job",
}


@pytest.mark.parametrize("command,function", sorted(CONTRACT.items()))
def test_each_function_takes_exactly_its_commands_parameters(command, function):
    """Keyword names are the CLI's argument names (argparse dests: flags with - as _); a flag added to
    the CLI without its keyword here (or the reverse) fails this test."""
    from survey_engine.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    dests = {
        a.dest for a in sub._actions if a.dest not in ("help", "verbose")
    }  # --verbose: the CLI's terminal only
    params = set(inspect.signature(getattr(api, function)).parameters) - {"client"}
    assert params == dests, f"{function}: missing {sorted(dests - params)}, extra {sorted(params - dests)}"
    # and the same defaults
    for action in sub._actions:
        if action.dest in params and action.default is not None and not action.required:
            default = inspect.signature(getattr(api, function)).parameters[action.dest].default
            assert default == action.default, (
                f"{function}({action.dest}=...) defaults to {default!r}, the CLI to {action.default!r}"
            )


def test_the_contract_names_are_exported_lazily():
    code = textwrap.dedent("""
        import sys
        import survey_engine as se
        assert "survey_engine.api" not in sys.modules and "distributed" not in sys.modules, "import survey_engine is not light"
        names = ["import_catalog", "ingest_tap", "crossmatch", "train", "predict", "evaluate", "cluster", "run_job"]
        assert all(callable(getattr(se, n)) for n in names)
        assert set(names) <= set(dir(se)) and set(names) <= set(se.__all__)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("first", ["function", "submodules"])
def test_crossmatch_is_callable_whatever_was_imported_first(first):
    """``survey_engine.crossmatch`` is the package (its submodules import as before) and calls the
    stage function, in either import order."""
    code = textwrap.dedent(f"""
        import inspect
        if {first!r} == "submodules":
            import survey_engine.crossmatch.match, survey_engine.crossmatch.zones
            from survey_engine.crossmatch.epochs import EpochSpec
            import survey_engine as se
        else:
            import survey_engine as se
            f = se.crossmatch
            import survey_engine.crossmatch.match, survey_engine.crossmatch.zones
            assert se.crossmatch is f
        import survey_engine.api
        import survey_engine.crossmatch.match as match
        from survey_engine.crossmatch import crossmatch as planner, CrossmatchResult
        assert callable(se.crossmatch) and se.crossmatch.match is match and planner is match.crossmatch
        assert inspect.signature(se.crossmatch) == inspect.signature(survey_engine.api.crossmatch)
        try:
            se.crossmatch("no-such-left", "no-such-right", radius=1, out="x")
        except FileNotFoundError as exc:   # reached survey_engine.api.crossmatch, which opened LEFT
            assert "no-such-left" in str(exc)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr


# -- each stage -----------------------------------------------------------------------------------


def test_import_catalog_returns_the_catalog_and_its_counts(mock_sky, mock_files):
    frame = pd.concat(pd.read_parquet(f) for f in sorted(mock_files.glob("*.parquet")))
    assert isinstance(mock_sky, api.CatalogResult)
    assert mock_sky.rows == len(frame) == MOCK_ROWS
    cat = mock_sky.catalog
    assert isinstance(cat, se.Catalog) and cat.row_count() == MOCK_ROWS
    assert mock_sky.partitions == cat.npartitions > 1
    assert mock_sky.margin_rows == cat.margin.row_count() > 0
    assert mock_sky.details["ra"] == "ra" and mock_sky.details["dec"] == "dec"  # --ra/--dec auto found them
    assert set(cat.compute().source_id) == set(frame.source_id)


def test_import_catalog_again_is_a_no_op_with_the_same_counts(mock_sky, mock_files, client):
    again = se.import_catalog(
        mock_files,
        out=mock_sky.path,
        id="source_id",
        max_rows=1_500,
        margin=1800,
        no_progress=True,
        client=client,
    )
    assert again.details["up_to_date"] and (again.rows, again.partitions, again.margin_rows) == (
        mock_sky.rows,
        mock_sky.partitions,
        mock_sky.margin_rows,
    )


@pytest.mark.slow
def test_crossmatch_self_match_equals_brute_force(tmp_path, client):
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    sky = random_sky(2_000, seed=5)
    sky.to_parquet(tmp_path / "sky.parquet")
    cat = se.import_catalog(
        str(tmp_path / "sky.parquet"),
        out=tmp_path / "cat",
        id="id",
        max_rows=500,
        margin=1200,
        no_progress=True,
        client=client,
    )
    radius = 1200.0
    pairs = se.crossmatch(
        cat.path,
        cat.catalog,
        radius=radius,
        exclude_self=True,
        out=tmp_path / "pairs",
        no_progress=True,
        client=client,
    )
    coords = SkyCoord(sky.ra.to_numpy() * u.deg, sky.dec.to_numpy() * u.deg)
    i, j, _, _ = coords.search_around_sky(coords, radius * u.arcsec)
    with_neighbour = np.unique(i[i != j])
    assert isinstance(pairs, api.CatalogResult)
    assert pairs.rows == len(with_neighbour) > 0
    got = pairs.catalog.compute()
    assert set(got.id_1) == set(sky.id.to_numpy()[with_neighbour])
    assert (got.sep_arcsec <= radius).all() and pairs.details["how"] == "nearest"


@pytest.mark.slow
def test_train_predict_evaluate(photoz_model, mock_sky, tmp_path, client):
    assert isinstance(photoz_model, api.ModelResult) and photoz_model.task == "photoz"
    assert photoz_model.report is not None and (photoz_model.path / "metrics.json").exists()
    held_out = photoz_model.metrics["test"]
    assert 0 < held_out["n"] < MOCK_ROWS and held_out["sigma_nmad"] < 0.2

    predicted = se.predict(
        model=photoz_model.path,
        catalog=mock_sky.path,
        out=tmp_path / "zphot",
        no_progress=True,
        client=client,
    )
    assert predicted.rows == MOCK_ROWS and predicted.partitions == mock_sky.partitions
    frame = predicted.catalog.compute()
    assert {"z_phot", "z_phot_lo", "z_phot_hi"} <= set(frame.columns) and frame.z_phot.notna().all()

    metrics = se.evaluate(
        model=photoz_model.path,
        catalog=mock_sky.path,
        where="obj_class == 'GALAXY'",
        out=tmp_path / "metrics.json",
        client=client,
    )
    galaxies = int((mock_sky.catalog.compute().obj_class == "GALAXY").sum())
    assert isinstance(metrics, api.MetricsResult) and metrics.rows == galaxies
    assert json.loads(metrics.path.read_text())["n"] == galaxies
    assert metrics["sigma_nmad"] == pytest.approx(json.loads(metrics.path.read_text())["sigma_nmad"])


def test_train_takes_a_list_of_features_and_rejects_an_unknown_task(mock_sky, tmp_path, client):
    result = se.train(
        "pca",
        catalog=mock_sky.path,
        features=["u-g", "g-r", "r-i"],
        components=2,
        model_out=tmp_path / "pca",
        client=client,
    )
    assert result.task == "pca" and result.path.exists() and result.metrics
    with pytest.raises(api.ApiError, match="task must be one of"):
        se.train("regress", catalog=mock_sky.path, features="r", model_out=tmp_path / "x", client=client)


@pytest.mark.slow
def test_cluster_kmeans_labels_every_row(mock_sky, tmp_path, client):
    result = se.cluster(
        catalog=mock_sky.path,
        features="pmra,pmdec,parallax",
        method="kmeans",
        n_clusters=4,
        out=tmp_path / "clusters",
        no_progress=True,
        client=client,
    )
    assert isinstance(result, api.ClusterResult)
    frame = result.catalog.compute()
    assert result.rows == len(frame) == MOCK_ROWS
    assert result.n_clusters == frame.cluster_id[frame.cluster_id >= 0].nunique() == 4
    assert result.noise == int((frame.cluster_id < 0).sum())


def test_run_job_checks_then_runs_and_opens_each_stage(tmp_path, client):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        textwrap.dedent("""
        name: tiny
        workdir: work
        source:
          mock: {rows: 3000, seed: 3}
        stages:
          - id: sky
            import: {max_rows: 1000, margin: 5}
    """)
    )
    checked = se.run_job(spec, workdir=tmp_path / "work", check=True)
    assert checked.status == "valid" and list(checked.outputs) == ["sky"] and not (tmp_path / "work").exists()
    ran = se.run_job(spec, workdir=tmp_path / "work", no_progress=True, client=client)
    assert isinstance(ran, api.JobResult) and ran.status == "ok"
    assert ran.open("sky").row_count() == 3000 == ran.summary["stages"]["sky"]["rows"]
    with pytest.raises(api.ApiError, match="no stage 'nope'"):
        ran.open("nope")


def test_ingest_tap_builds_the_commands_arguments(monkeypatch, mock_sky):
    """Without a TAP service: the arguments reach run_ingest as the CLI builds them, and the result
    counts the collection written (here the mock catalog stands in for it). The real ingest is
    tested against DaCHS below and in tests/ingest/test_tap.py."""
    from survey_engine.ingest.tap import run as tap_run

    seen = {}

    def fake_run_ingest(args, client=None, progress=True):
        seen.update(args=args, progress=progress)
        return tap_run.IngestResult(out=mock_sky.path, rows=mock_sky.rows, pages=3, paging=args.paging)

    monkeypatch.setattr(tap_run, "run_ingest", fake_run_ingest)
    monkeypatch.setenv("MY_TOKEN", "secret")
    result = se.ingest_tap(
        tap="http://127.0.0.1:1/tap",
        table="segaia.main",
        columns="source_id, phot_g_mean_mag",
        id="source_id",
        async_mode=True,
        token_env="MY_TOKEN",
        paging="keyset",
        out="unused",
        no_progress=True,
        client=object(),
    )
    args = seen["args"]
    assert args.columns[:2] == ["source_id", "phot_g_mean_mag"] and {"ra", "dec"} <= set(
        args.columns
    )  # always added
    assert args.mode == "async" and args.token == "secret"
    assert args.paging == "keyset" and seen["progress"] is False
    assert (
        result.rows == mock_sky.rows
        and result.partitions == mock_sky.partitions
        and result.details["pages"] == 3
    )


@pytest.mark.services
def test_ingest_tap_from_dachs(dachs, tmp_path, client):
    result = se.ingest_tap(
        tap=dachs,
        table="segaia.main",
        columns=["source_id", "phot_g_mean_mag"],
        where="phot_g_mean_mag < 7",
        id="source_id",
        page_rows=5_000,
        out=tmp_path / "bright",
        no_progress=True,
        client=client,
    )
    frame = result.catalog.compute()
    assert result.rows == len(frame) > 0 and (frame.phot_g_mean_mag < 7).all()
    assert result.details["verification"]["ok"]


def test_a_bad_keyword_names_itself(tmp_path, client):
    with pytest.raises(api.ApiError, match="suffixes takes two"):
        se.crossmatch("a", "b", radius=1, suffixes="_x", out=tmp_path / "o", client=client)
