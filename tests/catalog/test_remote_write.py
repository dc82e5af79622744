"""Writing collections to S3 (the real moto server): partitions first, properties last, so a
reader never sees a half-written catalog; a re-run resumes or does nothing."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from survey_engine import open_catalog
from survey_engine.catalog import remote_write, storage
from survey_engine.catalog.layout import CatalogNotFoundError
from survey_engine.crossmatch import crossmatch
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from tests.conftest import random_sky

BUCKET = "survey-engine-test"


@pytest.fixture(scope="module")
def sky_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("rw")
    random_sky(20_000, seed=4).to_parquet(root / "sky.parquet")
    return root / "sky.parquet"


@pytest.fixture()
def s3_out(s3_server, monkeypatch, tmp_path):
    """A fresh location in the bucket, with the server's credentials in SURVEY_ENGINE_STORAGE_OPTIONS
    (as a user of the CLI would give them) and a private local staging folder."""
    import json

    import s3fs

    fs = s3fs.S3FileSystem(**s3_server)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    monkeypatch.setenv(storage.STORAGE_OPTIONS_ENV, json.dumps(s3_server))
    monkeypatch.setenv(remote_write.STAGING_ENV, str(tmp_path / "staging"))
    prefix = f"{BUCKET}/w-{uuid.uuid4().hex[:8]}"
    yield f"s3://{prefix}"
    if fs.exists(prefix):
        fs.rm(prefix, recursive=True)


def _import(src, out, client, **kw):
    return run_import(
        ImportArguments([str(src)], str(out), id_column="id", max_rows=2_000, margin_arcsec=20.0, **kw),
        client=client,
        progress=False,
    )


def test_import_to_s3_equals_a_local_import_and_a_rerun_does_nothing(sky_file, s3_out, tmp_path, client):
    local = _import(sky_file, tmp_path / "local", client)
    remote = _import(sky_file, f"{s3_out}/sky", client)
    assert (
        str(remote.out) == f"{s3_out}/sky"
        and remote.rows == local.rows == 20_000
        and remote.partitions == local.partitions > 4
    )
    a, b = open_catalog(tmp_path / "local"), open_catalog(f"{s3_out}/sky")
    pd.testing.assert_frame_equal(b.compute(), a.compute())
    pd.testing.assert_frame_equal(b.margin.compute(), a.margin.compute())
    again = _import(sky_file, f"{s3_out}/sky", client)
    assert again.up_to_date and "already up to date" in again.summary()
    assert not remote_write.local_stage(
        storage.as_path(f"{s3_out}/sky")
    ).exists()  # the staging folder is removed
    other = random_sky(100, seed=9)
    other.to_parquet(tmp_path / "other.parquet")
    with pytest.raises(Exception, match=f"{s3_out}/sky: already holds a different catalog"):
        _import(tmp_path / "other.parquet", f"{s3_out}/sky", client)


def test_an_interrupted_upload_is_invisible_and_a_rerun_resumes(sky_file, s3_out, client, monkeypatch):
    """The upload dies after the partitions went up: the location holds no catalog a reader can
    open; the same command again sends only what is missing (not the partitions) and publishes."""
    out = f"{s3_out}/sky"
    sent: list[list[str]] = []
    original = remote_write._put

    def dies_at_the_properties(target, pairs):
        if any(rel.endswith("properties") for _, rel in pairs):
            raise OSError("connection lost (simulated)")
        sent.append([rel for _, rel in pairs])
        original(target, pairs)

    monkeypatch.setattr(remote_write, "_put", dies_at_the_properties)
    with pytest.raises(OSError, match="simulated"):
        _import(sky_file, out, client)
    uploaded = storage.list_files(storage.as_path(out))
    assert any("/dataset/Norder=" in rel for rel in uploaded) and remote_write.UPLOAD_MARKER in uploaded
    assert not any(rel.endswith("properties") for rel in uploaded)
    with pytest.raises(CatalogNotFoundError, match=out):
        open_catalog(out)
    with pytest.raises(CatalogNotFoundError):
        open_catalog(f"{out}/sky")  # nor the main catalog inside it

    sent.clear()
    monkeypatch.setattr(
        remote_write,
        "_put",
        lambda target, pairs: (sent.append([rel for _, rel in pairs]), original(target, pairs)),
    )
    result = _import(sky_file, out, client)
    assert result.resumed and result.rows == 20_000
    assert not any(
        "/dataset/Norder=" in rel for batch in sent for rel in batch
    )  # partitions were not sent again
    assert sent[-1] == ["collection.properties"]  # the very last object written
    assert open_catalog(out).row_count() == 20_000
    assert remote_write.UPLOAD_MARKER not in storage.list_files(storage.as_path(out))


def test_a_crossmatch_result_written_to_s3_equals_the_local_one(sky_file, s3_out, tmp_path, client):
    _import(sky_file, tmp_path / "sky", client)
    sky = open_catalog(tmp_path / "sky")
    result = crossmatch(sky, sky, 5.0)  # every row finds itself
    local = open_catalog(result.write(tmp_path / "pairs", client=client))
    remote_path = result.write(f"{s3_out}/pairs", client=client)
    assert storage.is_remote(remote_path)
    remote = open_catalog(remote_path)
    assert remote.row_count() == local.row_count() == 20_000
    pd.testing.assert_frame_equal(remote.compute(), local.compute())
    with pytest.raises(storage.RemoteStorageError, match=f"{s3_out}/pairs: already exists"):
        result.write(f"{s3_out}/pairs", client=client)


def test_writing_to_a_web_server_is_refused():
    with pytest.raises(
        storage.RemoteStorageError, match="http://127.0.0.1:8089/out: cannot write to an http"
    ):
        remote_write.check_writable(storage.as_path("http://127.0.0.1:8089/out"))
