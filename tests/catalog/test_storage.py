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


def _counting_memory_fs():
    """fsspec's in-memory file system, counting the ``cat_file`` calls (one per request on a server)."""
    from fsspec.implementations.memory import MemoryFileSystem

    fs = MemoryFileSystem()
    calls = []
    original = fs.cat_file

    def cat_file(path, start=None, end=None, **kwargs):
        calls.append((start, end))
        return original(path, start=start, end=end, **kwargs)

    fs.cat_file = cat_file
    fs.cat_ranges = lambda paths, starts, ends, **kw: [
        cat_file(p, s, e) for p, s, e in zip(paths, starts, ends)
    ]
    return fs, calls


def test_remote_parquet_reads_the_footer_then_only_the_asked_columns():
    """A remote Parquet file is read from its tail (one suffix request: the whole file when it is
    smaller than the sample, a second one for a larger footer) and the asked columns' byte ranges,
    and decodes to exactly the local table; a file that is not Parquet is an error naming it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from upath import UPath

    fs, calls = _counting_memory_fs()
    rng = np.random.default_rng(3)
    wide = pa.table({f"c{i}": rng.normal(size=50_000) for i in range(40)})  # ~16 MB, one row group
    small = pa.table({"a": np.arange(100), "b": rng.normal(size=100)})
    many = pa.table({f"column_with_a_long_name_{i}": [1.0] for i in range(2_000)})  # a footer > 64 kB
    for name, table in (("wide", wide), ("small", small), ("many", many)):
        with fs.open(f"/t/{name}.parquet", "wb") as f:
            pq.write_table(table, f, write_page_checksum=True)
    fs.pipe_file("/t/not.parquet", b"x" * 100_000)

    def path(name):
        p = UPath(f"memory:///t/{name}.parquet")
        p._fs_cached = fs
        return p

    calls.clear()
    source, metadata = storage.remote_parquet(path("wide"), ["c3", "c30"])
    got = pq.ParquetFile(source, metadata=metadata, page_checksum_verification=True).read(["c3", "c30"])
    assert got.equals(wide.select(["c3", "c30"]))
    assert (
        calls[0] == (-storage.FOOTER_SAMPLE_BYTES, None) and len(calls) == 3
    )  # tail, then 2 far-apart chunks
    assert sum(e - s for s, e in calls[1:]) < 0.06 * fs.info("/t/wide.parquet")["size"]

    calls.clear()
    source, metadata = storage.remote_parquet(path("wide"))
    assert pq.ParquetFile(source, metadata=metadata).read().equals(wide) and len(calls) == 2  # coalesced

    calls.clear()
    source, metadata = storage.remote_parquet(path("small"), ["b"])
    assert pq.ParquetFile(source, metadata=metadata).read(["b"]).equals(small.select(["b"]))
    assert len(calls) == 1  # the tail was the whole file

    calls.clear()
    assert storage.remote_parquet_footer(path("many"))[1].num_columns == 2_000 and len(calls) == 2

    with pytest.raises(OSError, match="t/not.parquet: not a Parquet file"):
        storage.remote_parquet(path("not"))
