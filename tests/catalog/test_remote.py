"""Remote catalogs: a real collection served by nginx over HTTP (range requests) and by an
S3-compatible server (moto, with IAM authentication on) reads exactly as the local one."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from survey_engine import open_catalog
from survey_engine.catalog import storage
from survey_engine.catalog.layout import CatalogNotFoundError, partition_path
from survey_engine.crossmatch import crossmatch
from survey_engine.errors import SurveyEngineError
from tests.catalog.targets import near_targets
from tests.conftest import REPO

BUCKET = "survey-engine-test"
MOTO_LOG = Path("/var/lib/survey-engine-test/s3/moto.log")  # tests/services/s3/setup.sh: every request


@dataclass(frozen=True)
class Published:
    local: Path
    http: str
    s3: str
    creds: dict
    http_root: Path


@pytest.fixture(scope="module")
def published(mock_catalog, http_server, s3_server):
    """The 60,000-row mock-sky collection copied under the nginx root and uploaded to the bucket."""
    import s3fs

    name = f"sky-{uuid.uuid4().hex[:8]}"
    shutil.copytree(mock_catalog, http_server.root / name)
    fs = s3fs.S3FileSystem(**{k: v for k, v in s3_server.items()})
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.put(str(mock_catalog), f"{BUCKET}/{name}", recursive=True)
    yield Published(
        mock_catalog, f"{http_server.url}/{name}", f"s3://{BUCKET}/{name}", s3_server, http_server.root / name
    )
    shutil.rmtree(http_server.root / name, ignore_errors=True)
    fs.rm(f"{BUCKET}/{name}", recursive=True)


@pytest.fixture(scope="module")
def targets(published, tmp_path_factory, client):
    """300 sources nearest one point, moved by up to 0.3", as a local target catalog (one partition)."""
    return near_targets(published.local, tmp_path_factory.mktemp("targets"), client)


def _remotes(published):
    return [open_catalog(published.http), open_catalog(published.s3, storage_options=published.creds)]


def test_remote_catalogs_read_the_same_rows_as_local(published, client):
    local = open_catalog(published.local)
    want = local.compute()
    assert len(want) == 60_000
    for remote in _remotes(published):
        assert storage.is_remote(remote.path)
        assert remote.npartitions == local.npartitions > 4
        assert remote.row_count() == 60_000 and remote.margin.row_count() == local.margin.row_count() > 0
        got = remote.compute()  # on the Dask workers: the locations travel with their storage options
        pd.testing.assert_frame_equal(got, want)
        assert pd.util.hash_pandas_object(got).sum() == pd.util.hash_pandas_object(want).sum()
        pd.testing.assert_frame_equal(remote.margin.compute(), local.margin.compute())


def test_cone_and_box_selections_equal_local(published, client):
    local = open_catalog(published.local)
    searches = [
        lambda c: c.cone_search(200.0, 30.0, 8 * 3600),
        lambda c: c.box_search(30.0, 60.0, -10.0, 20.0),
    ]
    for search in searches:
        want = search(local)
        rows = want.compute()
        assert len(rows) > 100 and want.npartitions < local.npartitions
        for remote in _remotes(published):
            selected = search(remote)
            assert selected.npartitions == want.npartitions
            pd.testing.assert_frame_equal(selected.compute(), rows)


def test_crossmatch_against_a_remote_catalog_equals_local(published, targets, client):
    frame, target_list = targets
    local = crossmatch(target_list, open_catalog(published.local), 1.0).compute()
    assert set(zip(local.target_id_1, local.source_id_2)) >= set(zip(frame.target_id, frame.source))
    for remote in _remotes(published):
        got = crossmatch(target_list, remote, 1.0).compute()
        assert set(zip(got.target_id_1, got.source_id_2)) == set(zip(local.target_id_1, local.source_id_2))
        assert np.allclose(
            got.sort_values("target_id_1").sep_arcsec.to_numpy(),
            local.sort_values("target_id_1").sep_arcsec.to_numpy(),
            rtol=0,
            atol=0,
        )


def _access_log(http_server) -> list[tuple[str, str, int, int, str]]:
    """(method, uri, status, bytes, range) of each request nginx logged (the client's address,
    last on each line, left out)."""
    out = []
    for line in http_server.access_log.read_text().splitlines():
        method, uri, status, size, rng = line.split(" ")[:5]
        out.append((method, uri, int(status), int(size), rng.strip('"')))
    return out


def _files_needed(remote, frame: pd.DataFrame) -> tuple[list[tuple[int, int]], set[str]]:
    """The partitions of ``remote`` that hold a target, and the URLs of their files and margin files."""
    from survey_engine.catalog.healpix import radec_to_healpix

    touched = [
        (int(o), int(p))
        for o, p in zip(remote.partitions.Norder, remote.partitions.Npix)
        if np.any(radec_to_healpix(frame.ra.to_numpy(), frame.dec.to_numpy(), int(o)) == int(p))
    ]
    margins = {
        (int(o), int(p)) for o, p in zip(remote.margin.partitions.Norder, remote.margin.partitions.Npix)
    }
    expected = {str(partition_path(remote.path, o, p)) for o, p in touched}
    expected |= {str(partition_path(remote.margin.path, o, p)) for o, p in touched if (o, p) in margins}
    return touched, expected


def _moto_requests(since: int) -> list[tuple[str, str]]:
    """(method, URL path and query, unquoted) of each request moto logged after its line ``since``
    (moto logs a request after answering it: read once the log stops growing)."""
    lines, before = [], -1
    while len(lines) != before:
        before = len(lines)
        time.sleep(0.5)
        lines = MOTO_LOG.read_text(errors="replace").splitlines()[since:]
    found = (re.search(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP/', line) for line in lines)
    return [(m.group(1), unquote(m.group(2))) for m in found if m]


def _moto_log_lines() -> int:
    return len(MOTO_LOG.read_text(errors="replace").splitlines())


def test_a_remote_crossmatch_fetches_each_file_it_needs_in_two_requests(published, targets, client):
    """Request counts on S3 (moto's log), which must not grow: opening the collection is one GET
    for each of its 7 small files (no HEAD first); the cross-match then fetches each partition and
    margin file it overlaps in at most 2 GETs (the tail with the footer, then the columns' byte
    ranges together; a file smaller than the tail in one), and nothing else (a worker process's
    first look at the catalogs' properties aside): no HEAD, no listing, no other file, and nothing
    at open while the process holds the catalog's metadata."""
    from survey_engine.catalog import layout

    frame, target_list = targets
    for cache in (layout._REMOTE_TEXT, layout._REMOTE_PROPERTIES, layout._REMOTE_METADATA):
        cache.clear()  # as in a new process
    since = _moto_log_lines()
    remote = open_catalog(published.s3, storage_options=published.creds)
    opened = _moto_requests(since)
    small = ["hats.properties", "partition_info.csv", "dataset/_metadata"]
    root = "/" + published.s3.split("://", 1)[1]
    want = [f"{root}/collection.properties"]
    want += [f"/{cat.path.path}/{name}" for cat in (remote, remote.margin) for name in small]
    assert sorted(opened) == sorted(("GET", path) for path in want)

    since = _moto_log_lines()
    again = open_catalog(published.s3, storage_options=published.creds)
    got = crossmatch(target_list, again, 1.0).compute()
    assert set(zip(got.target_id_1, got.source_id_2)) >= set(zip(frame.target_id, frame.source))
    reads = _moto_requests(since)
    touched, expected = _files_needed(remote, frame)
    expected = {"/" + url.split("://", 1)[1] for url in expected}
    assert 0 < len(touched) < remote.npartitions / 2 and len(expected) > len(touched)
    assert all(method == "GET" and "?" not in path for method, path in reads), reads  # no HEAD, no LIST
    per_file = Counter(path for _, path in reads)
    # a Dask worker process reads a catalog's properties once (its spatial index column), then holds them
    properties = {f"/{cat.path.path}/hats.properties" for cat in (remote, remote.margin)}
    assert all(per_file.pop(path, 0) <= len(client.scheduler_info()["workers"]) for path in properties)
    assert set(per_file) == expected, reads
    assert all(n <= 2 for n in per_file.values()), per_file
    assert sum(per_file.values()) < 2 * len(expected)  # margin files are smaller than the tail: one GET


def test_a_small_target_list_fetches_only_the_partitions_it_overlaps(published, targets, http_server, client):
    """Over HTTP, a 300-row target list cross-matched against the remote catalog requests only the
    partitions (and their margins) that hold a target, by byte ranges: the footer and the asked-for
    columns, never a whole file, and no listing."""
    frame, target_list = targets
    remote = open_catalog(published.http)
    http_server.access_log.write_text("")
    got = crossmatch(target_list, remote, 1.0, right_columns=["source_id"]).compute()
    assert set(zip(got.target_id_1, got.source_id_2)) >= set(zip(frame.target_id, frame.source))
    log = _access_log(http_server)
    base = published.http.split("127.0.0.1:8089", 1)[1]
    touched, expected = _files_needed(remote, frame)
    expected = {u.split("127.0.0.1:8089", 1)[1] for u in expected}
    data_gets = [entry for entry in log if entry[0] == "GET" and "/dataset/Norder=" in entry[1]]
    assert {uri for _, uri, *_ in data_gets} == expected
    assert 0 < len(touched) < remote.npartitions / 2
    assert all(
        status == 206 and rng.startswith("bytes=") for _, _, status, _, rng in data_gets
    )  # ranges only
    fetched = sum(size for _, _, _, size, _ in data_gets)
    on_disk = sum((published.http_root / uri[len(base) + 1 :]).stat().st_size for uri in expected)
    assert fetched < 0.6 * on_disk  # 4 of 28 columns (_healpix_29, source_id, ra, dec) plus footers
    assert len(data_gets) <= 2 * len(expected)  # the tail with the footer, then the columns' ranges
    assert all(entry[0] in ("GET", "HEAD") for entry in log) and not any(
        uri.endswith("/") for _, uri, *_ in log
    )


def test_training_and_prediction_inputs_open_remote_catalogs(published, client):
    from survey_engine.ml.data import open_table

    local = open_table(str(published.local))
    remote = open_table(published.s3, storage_options=published.creds)
    assert remote.catalog is not None and remote.fingerprint == local.fingerprint
    pd.testing.assert_frame_equal(remote.frame.compute(), local.frame.compute())


def test_storage_options_from_the_environment_reach_every_door(published, monkeypatch):
    """SURVEY_ENGINE_STORAGE_OPTIONS: the API without storage_options=, and the CLI unchanged."""
    monkeypatch.setenv(storage.STORAGE_OPTIONS_ENV, json.dumps(published.creds))
    assert open_catalog(published.s3).row_count() == 60_000
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", "info", published.s3],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rows: 60,000" in proc.stdout and published.s3 in proc.stdout
    keyed = json.dumps({"s3": published.creds, "https": {}})
    proc = subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", "info", published.http],
        capture_output=True,
        text=True,
        env={**env, storage.STORAGE_OPTIONS_ENV: keyed},
        timeout=300,
    )
    assert proc.returncode == 0 and "rows: 60,000" in proc.stdout, proc.stderr
    bad = {**published.creds, "secret": "wrong-secret-0123456789"}
    proc = subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", "info", published.s3],
        capture_output=True,
        text=True,
        env={**env, storage.STORAGE_OPTIONS_ENV: json.dumps(bad)},
        timeout=300,
    )
    assert proc.returncode == 2 and published.s3 in proc.stderr
    assert (
        "wrong-secret" not in proc.stderr + proc.stdout
        and published.creds["secret"] not in proc.stderr + proc.stdout
    )


def test_missing_catalogs_and_wrong_credentials_are_errors_naming_the_location(
    published, http_server, s3_server
):
    missing = f"{http_server.url}/no-such-catalog"
    with pytest.raises(CatalogNotFoundError, match=f"{missing}: not a HATS catalog"):
        open_catalog(missing)
    with pytest.raises(SurveyEngineError, match=f"s3://{BUCKET}/no-such-catalog"):
        open_catalog(f"s3://{BUCKET}/no-such-catalog", storage_options=s3_server)
    for bad in (
        {**s3_server, "secret": "wrong-secret-0123456789"},
        {**s3_server, "key": "AKIANOSUCHKEY0000000", "secret": "x" * 20},
    ):
        with pytest.raises(storage.RemoteStorageError) as err:
            open_catalog(published.s3, storage_options=bad)
        text = str(err.value)
        assert published.s3 in text and "credentials" in text
        assert bad["secret"] not in text and s3_server["secret"] not in text and bad["key"] not in text
    # a partition that went missing on the server after the catalog was opened names its URL
    remote = open_catalog(published.http)
    first = remote.partition_files()[0]
    on_disk = published.http_root / str(first).split(published.http + "/", 1)[1]
    hidden = on_disk.with_name(on_disk.name + ".hidden")
    on_disk.rename(hidden)
    try:
        with pytest.raises(SurveyEngineError, match=f"{first}: partition file missing"):
            remote.compute()
    finally:
        hidden.rename(on_disk)


def test_hats_variants_read_remotely(mock_catalog, s3_server, http_server, tmp_path, client):
    """Another spatial index column (healpix13) over HTTP, and partitions stored as Npix=N/
    folders of several files on S3 (an object store lists them), read as the local copies."""
    import pyarrow.parquet as pq
    import s3fs

    from tests.catalog.test_variants import _rewrite_metadata, _set_properties, pc_shift

    name = f"variant-{uuid.uuid4().hex[:8]}"
    hp13 = tmp_path / "hp13"
    shutil.copytree(mock_catalog / "sky", hp13)
    for f in (hp13 / "dataset").rglob("Npix=*.parquet"):
        table = pq.read_table(f)
        pq.write_table(
            table.drop_columns(["_healpix_29"]).append_column(
                "healpix13", pc_shift(table.column("_healpix_29"))
            ),
            f,
        )
    _rewrite_metadata(hp13)
    _set_properties(hp13, hats_col_healpix="healpix13", hats_col_healpix_order=13)
    folders = tmp_path / "folders"
    shutil.copytree(mock_catalog / "sky", folders)
    for f in list((folders / "dataset").rglob("Npix=*.parquet")):
        table = pq.read_table(f)
        f.unlink()
        f.with_suffix("").mkdir()
        pq.write_table(table.slice(0, table.num_rows // 2), f.with_suffix("") / "part0.parquet")
        pq.write_table(table.slice(table.num_rows // 2), f.with_suffix("") / "part1.parquet")
    _rewrite_metadata(folders)
    _set_properties(folders, hats_npix_suffix="/")

    shutil.copytree(hp13, http_server.root / name)
    fs = s3fs.S3FileSystem(**s3_server)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.put(str(folders), f"{BUCKET}/{name}", recursive=True)
    try:
        for local, remote in (
            (hp13, open_catalog(f"{http_server.url}/{name}")),
            (folders, open_catalog(f"s3://{BUCKET}/{name}", storage_options=s3_server)),
        ):
            want = open_catalog(local).compute()
            assert len(want) == 60_000
            pd.testing.assert_frame_equal(remote.compute(), want)
            cone = remote.cone_search(200.0, 30.0, 8 * 3600).compute()
            pd.testing.assert_frame_equal(
                cone, open_catalog(local).cone_search(200.0, 30.0, 8 * 3600).compute()
            )
    finally:
        shutil.rmtree(http_server.root / name, ignore_errors=True)
        fs.rm(f"{BUCKET}/{name}", recursive=True)


def test_storage_options_flag_and_keyword(published, monkeypatch, tmp_path):
    """--storage-options JSON on the command line, storage_options= in Python, and a job spec's
    storage_options: section reach an s3:// catalog without the environment variable."""
    import survey_engine as se

    monkeypatch.delenv(storage.STORAGE_OPTIONS_ENV, raising=False)
    env = {k: v for k, v in os.environ.items() if k != storage.STORAGE_OPTIONS_ENV} | {
        "PYTHONPATH": str(REPO)
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "info",
            published.s3,
            "--storage-options",
            json.dumps(published.creds),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0 and "rows: 60,000" in proc.stdout, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", "info", published.s3, "--storage-options", "{not json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2 and "--storage-options: not valid JSON" in proc.stderr
    job = tmp_path / "remote.yaml"
    job.write_text(
        f"name: remote\nsource:\n  catalog: {published.s3}\nstorage_options: {json.dumps(published.creds)}\n"
        "stages:\n  - id: near\n    cluster: {catalog: source, features: [pmra, pmdec], method: kmeans, n_clusters: 3}\n"
    )
    done = se.run_job(job, workdir=tmp_path / "work", no_progress=True)
    assert done.status == "ok" and done.open("near").row_count() == 60_000
    assert storage.STORAGE_OPTIONS_ENV not in os.environ  # restored after the call
