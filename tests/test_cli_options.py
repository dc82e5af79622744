"""Every option explained, one name for one thing: help on every CLI option, ingest's
--pages-in-flight (and --workers meaning Dask workers there too), the job spec's pages_in_flight,
and errors that name the CLI flag."""

import argparse
import contextlib
import subprocess
import sys

import pytest

from survey_engine.cli import build_parser, main


def _options_without_help(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _options_without_help(sub, path + (name,))
        elif not action.help or action.help == argparse.SUPPRESS or not action.help.strip():
            missing.append(
                " ".join(path + (action.option_strings[0] if action.option_strings else action.dest,))
            )
    return missing


def test_every_option_and_argument_has_help_text():
    parser = build_parser()
    assert _options_without_help(parser) == []
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert len(commands) >= 14  # the walk saw every command (import ... info)
    # every command takes --verbose, before or after its name
    for name, sub in commands.items():
        assert any("--verbose" in a.option_strings for a in sub._actions), name
    assert (
        parser.parse_args(["--verbose", "info", "x"]).verbose
        and parser.parse_args(["info", "x", "--verbose"]).verbose
    )
    assert not parser.parse_args(["info", "x"]).verbose


def test_workers_means_dask_workers_everywhere():
    """--workers is the number of local Dask workers in every command that has it (ingest included)."""
    for name, sub in next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices.items():
        for action in sub._actions:
            if "--workers" in action.option_strings:
                assert "Dask workers" in action.help, (name, action.help)


def test_ingest_pages_in_flight_and_workers(monkeypatch):
    """--pages-in-flight reaches the TAP ingest; --workers (old name --dask-workers) sizes the cluster."""
    import survey_engine.ingest.tap.run as tap_run
    import survey_engine.runtime as runtime

    seen = {}

    @contextlib.contextmanager
    def fake_client(client=None, n_workers=None, memory_limit="auto"):
        seen["n_workers"] = n_workers
        yield None

    class Result:
        def summary(self):
            return "done"

    def fake_ingest(args, client=None, progress=True):
        seen["pages_in_flight"] = args.pages_in_flight
        return Result()

    monkeypatch.setattr(runtime, "dask_client", fake_client)
    monkeypatch.setattr(tap_run, "run_ingest", fake_ingest)
    base = ["ingest", "--tap", "http://127.0.0.1:9/tap", "--table", "t", "--out", "o", "--no-progress"]
    assert main(base + ["--pages-in-flight", "7", "--workers", "3"]) == 0
    assert seen == {"n_workers": 3, "pages_in_flight": 7}
    assert main(base + ["--dask-workers", "2"]) == 0
    assert seen == {"n_workers": 2, "pages_in_flight": 4}  # the default: 4 pages in flight


def test_ingest_pages_in_flight_must_be_positive():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "ingest",
            "--tap",
            "http://127.0.0.1:9/tap",
            "--table",
            "t",
            "--out",
            "o",
            "--pages-in-flight",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "--pages-in-flight" in run.stderr and "at least 1" in run.stderr


def test_python_keyword_workers_is_a_deprecated_name_of_pages_in_flight():
    from survey_engine.ingest.tap.arguments import TapIngestArguments

    new = TapIngestArguments("http://127.0.0.1:9/tap", "t", "o", pages_in_flight=3)
    with pytest.warns(DeprecationWarning, match="pages_in_flight"):
        old = TapIngestArguments("http://127.0.0.1:9/tap", "t", "o", workers=3)
    assert old.pages_in_flight == new.pages_in_flight == 3
    assert old.fingerprint() == new.fingerprint()  # pages in flight do not change the pages: resumes match


def _tap_job(tmp_path, extra: str):
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: t\nworkdir: w\nsource:\n  tap: {url: 'http://127.0.0.1:9/tap', table: t" + extra + "}\n"
        "stages:\n  - id: cat\n    ingest: {}\n"
    )
    return job


def test_job_spec_pages_in_flight_and_the_old_workers_key(tmp_path, capsys):
    from survey_engine.jobs.spec import JobSpecError, load_spec

    spec = load_spec(_tap_job(tmp_path, ", pages_in_flight: 6"))
    assert spec.sources["source"][1]["pages_in_flight"] == 6
    assert "deprecated" not in capsys.readouterr().err
    spec = load_spec(_tap_job(tmp_path, ", workers: 5"))  # the old key: read, with a note naming the new one
    assert spec.sources["source"][1]["pages_in_flight"] == 5 and "workers" not in spec.sources["source"][1]
    err = capsys.readouterr().err
    assert "'workers' is deprecated" in err and "pages_in_flight: 5" in err
    with pytest.raises(JobSpecError, match="pages_in_flight only"):
        load_spec(_tap_job(tmp_path, ", workers: 5, pages_in_flight: 6"))


def test_errors_name_the_cli_flag_and_the_python_keyword(tmp_path, client):
    """A right catalog without a wide enough margin: the message says --build-margin (and the
    keyword for Python users), never only build_margin=True."""
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.crossmatch import crossmatch
    from survey_engine.crossmatch.plan import MarginTooSmallError
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import
    from tests.conftest import random_sky

    random_sky(3000, seed=5).to_parquet(tmp_path / "sky.parquet")
    run_import(
        ImportArguments(
            [str(tmp_path / "sky.parquet")],
            str(tmp_path / "cat"),
            id_column="id",
            max_rows=1000,
            margin_arcsec=0,
        ),
        client=client,
        progress=False,
    )
    cat = open_catalog(tmp_path / "cat")
    with pytest.raises(MarginTooSmallError) as info:
        crossmatch(cat, cat, 2.0)
    assert "--build-margin (build_margin=True in Python)" in str(info.value)
    with pytest.raises(ValueError, match=r"--radius \(radius_arcsec in Python\) must be positive"):
        crossmatch(cat, cat, -1.0)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "crossmatch",
            "cat",
            "cat",
            "--radius",
            "2",
            "--out",
            "m",
            "--workers",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 2 and "--build-margin" in run.stderr and "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1  # one line: the error, nothing else on the terminal
