"""Locations and storage options (no server needed: nothing here opens a connection)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from survey_engine.catalog import layout, storage
from survey_engine.errors import SurveyEngineError


def test_local_paths_stay_paths_and_urls_become_remote_paths():
    assert storage.as_path("/data/cat") == Path("/data/cat") and not storage.is_remote("/data/cat")
    assert not storage.is_remote("file:///data/cat")
    remote = storage.as_path("s3://bucket/cat", {"anon": True})
    assert (
        storage.is_remote(remote) and storage.protocol_of(remote) == "s3" and str(remote) == "s3://bucket/cat"
    )
    part = layout.partition_relpath(2, 50)
    assert str(remote / "dataset" / part) == "s3://bucket/cat/dataset/Norder=2/Dir=0/Npix=50.parquet"
    again = pickle.loads(pickle.dumps(remote / "x"))  # what a Dask worker receives: the options travel along
    assert again.storage_options["anon"] is True and str(again) == "s3://bucket/cat/x"
    assert storage.portable(Path("/a/b")) == "/a/b" and storage.portable(remote) is remote


def test_storage_options_from_the_environment(monkeypatch):
    monkeypatch.setenv(storage.STORAGE_OPTIONS_ENV, '{"anon": true, "endpoint_url": "http://127.0.0.1:9000"}')
    assert storage.env_storage_options("s3") == {"anon": True, "endpoint_url": "http://127.0.0.1:9000"}
    assert storage.env_storage_options("https") == {}  # flat options are not sent with every HTTP request
    assert storage.as_path("s3://b/c").storage_options["anon"] is True
    assert storage.as_path("s3://b/c", {"anon": False}).storage_options["anon"] is False  # the keyword wins
    monkeypatch.setenv(
        storage.STORAGE_OPTIONS_ENV, '{"s3": {"profile": "survey"}, "https": {"headers": {"X-A": "1"}}}'
    )
    assert storage.env_storage_options("s3") == {"profile": "survey"}
    assert storage.env_storage_options("http") == {"headers": {"X-A": "1"}}
    monkeypatch.setenv(storage.STORAGE_OPTIONS_ENV, "{anon: true}")
    with pytest.raises(SurveyEngineError, match=f"{storage.STORAGE_OPTIONS_ENV}: not valid JSON"):
        storage.as_path("s3://b/c")
    monkeypatch.setenv(storage.STORAGE_OPTIONS_ENV, "[1]")
    with pytest.raises(SurveyEngineError, match="must be a JSON object"):
        storage.env_storage_options("s3")


def test_remote_errors_name_the_location_without_secrets():
    path = storage.as_path("s3://bucket/cat", {"key": "AKIAEXAMPLEKEY", "secret": "s3cr3t-value"})
    err = storage.remote_error(
        path, PermissionError("The AWS Access Key Id AKIAEXAMPLEKEY is refused (s3cr3t-value)")
    )
    text = str(err)
    assert isinstance(err, SurveyEngineError) and text.startswith("s3://bucket/cat: cannot read")
    assert "AKIAEXAMPLEKEY" not in text and "s3cr3t-value" not in text and "check the credentials" in text
    assert storage.display("https://user:pw@host/cat?token=abc") == "https://host/cat?token=REDACTED"
