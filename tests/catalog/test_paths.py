"""Paths are data: --name, output names and names read from catalog properties can never make a
write or a removal land outside the output folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from survey_engine.catalog import layout
from survey_engine.catalog.layout import UnsafePathError
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.readers import InputError
from tests.conftest import random_sky


def victim(root: Path) -> Path:
    v = root / "victim"
    v.mkdir()
    (v / "precious.txt").write_text("keep me")
    return v


def untouched(v: Path) -> bool:
    return sorted(p.name for p in v.iterdir()) == ["precious.txt"]


@pytest.mark.parametrize("name", ["..", ".", "../victim", "/tmp/victim", "a/b", "", ".hidden"])
def test_import_name_must_be_plain(tmp_path, name):
    random_sky(100).to_parquet(tmp_path / "in.parquet")
    with pytest.raises(UnsafePathError, match=r"--name \(the catalog name\)"):
        ImportArguments([str(tmp_path / "in.parquet")], str(tmp_path / "out"), name=name)


def test_cli_import_name_dotdot_exit_2_and_nothing_removed(tmp_path):
    v = victim(tmp_path)
    random_sky(100).to_parquet(tmp_path / "in.parquet")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "import",
            str(tmp_path / "in.parquet"),
            "--out",
            str(v / "cat"),
            "--name",
            "..",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        run.returncode == 2
        and "--name (the catalog name) '..'" in run.stderr
        and "Traceback" not in run.stderr
    )
    assert untouched(v)


def test_output_path_refuses_the_root():
    with pytest.raises(UnsafePathError):
        layout.output_path("/")
    assert layout.output_path("a/b/..").name == "a"


def test_margin_name_from_hostile_properties_is_refused(client, tmp_path):
    """obs_collection in hats.properties is data: ``../../victim`` must not place the margin
    (or the removal of its staging folder) outside the catalog's parent."""
    from survey_engine.catalog.margin_build import build_margin
    from survey_engine.ingest.file_import.run import run_import

    v = victim(tmp_path)
    random_sky(3000).to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "deep" / "cat"
    run_import(
        ImportArguments([str(tmp_path / "in.parquet")], str(out), max_rows=1000, margin_arcsec=None),
        client=client,
        progress=False,
    )
    props = out / "cat" / layout.PROPERTIES_FILE
    props.write_text(props.read_text().replace("obs_collection=cat", "obs_collection=../../victim"))
    with pytest.raises(UnsafePathError, match="margin catalog name"):
        build_margin(out / "cat", 10.0, client=client, progress=False)
    assert untouched(v) and not list(tmp_path.glob("*arcsec*"))


def test_job_publish_never_leaves_the_workdir(tmp_path):
    from survey_engine.jobs.run import _publish

    v = victim(tmp_path)
    work = tmp_path / "work"
    (work / ".tmp-x").mkdir(parents=True)
    with pytest.raises(UnsafePathError):
        _publish(work / ".tmp-x", work / ".." / "victim", work)
    assert untouched(v) and (work / ".tmp-x").exists()


def test_write_to_an_output_named_dotdot_does_not_escape(client, tmp_path, mock_catalog):
    """A derived catalog written to ``--out ..`` is refused (the parent exists and is not empty),
    and nothing beside it is removed."""
    from survey_engine.catalog.catalog import open_catalog

    v = victim(tmp_path)
    here = tmp_path / "here"
    here.mkdir()
    cat = open_catalog(mock_catalog)[["source_id", "ra", "dec"]]
    with pytest.raises((FileExistsError, InputError, UnsafePathError)):
        cat.write(here / "..", client=client)
    assert untouched(v) and here.exists()
