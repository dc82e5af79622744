"""TAP ingest against a real GAVO DaCHS server on loopback (tests/services/dachs/setup.sh)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.ingest.readers import InputError
from survey_engine.ingest.tap import adql
from survey_engine.ingest.tap.arguments import TapIngestArguments
from survey_engine.ingest.tap.client import TapError, TapService
from survey_engine.ingest.tap.run import REPORT_FILE, run_ingest
from tests.conftest import REPO, TAP_TABLE, shared_path
from tests.ingest.fault_proxy import FaultProxy

COLUMNS = ["source_id", "ra", "dec", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"]
SUBSET_WHERE = "phot_g_mean_mag < 8.5"
DACHS_SETUP = REPO / "tests" / "services" / "dachs" / "setup.sh"


def server_scalar(url: str, query: str):
    answer = TapService(url).query(query, 10, "test")
    return answer.table[answer.table.colnames[0]][0]


def frame(out: Path) -> pd.DataFrame:
    df = open_catalog(out).compute()
    return df.sort_values("source_id").reset_index(drop=True)


def ingest(url, out, client, **kw) -> object:
    args = TapIngestArguments(url, TAP_TABLE, str(out), id_column="source_id", **kw)
    return run_ingest(args, client=client, progress=False)


@pytest.fixture(scope="module")
def source_table() -> pd.DataFrame:
    """The table the server was loaded from (read in place from ../shared/data)."""
    df = pd.read_parquet(shared_path("clusters_xmatch/gaia_dr3_allsky_G10.parquet"))
    return df.sort_values("source_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def whole_table(dachs, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("tap") / "gaia_tap"
    result = ingest(dachs, out, client, page_rows=20_000)
    return out, result


@pytest.fixture(scope="module")
def subset_reference(dachs, client, tmp_path_factory):
    """The WHERE-restricted request, ingested undisturbed: what interrupted runs must reproduce."""
    out = tmp_path_factory.mktemp("tap") / "bright"
    result = ingest(dachs, out, client, where=SUBSET_WHERE, page_rows=2_000, pages_in_flight=4)
    return out, result


# -- whole table, checked against the server ---------------------------------------------------


def test_whole_table_equals_server(dachs, whole_table, source_table):
    out, result = whole_table
    assert result.paging == "healpix"  # DaCHS declares ivo_healpix_index
    n_server = int(server_scalar(dachs, f"SELECT COUNT(*) AS n FROM {TAP_TABLE}"))
    got = frame(out)
    assert len(got) == result.rows == n_server == len(source_table)
    assert set(got.source_id) == set(source_table.source_id)
    pd.testing.assert_frame_equal(got[COLUMNS], source_table[COLUMNS], check_exact=True)
    # column checksums computed by the server itself
    for col in ("ra", "dec", "phot_g_mean_mag"):
        server_sum = float(
            server_scalar(dachs, f"SELECT SUM(CAST({col} AS DOUBLE PRECISION)) AS s FROM {TAP_TABLE}")
        )
        assert np.isclose(got[col].astype(np.float64).sum(), server_sum, rtol=1e-9), col
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["verification"]["ok"] and report["verification"]["service_rows"] == n_server
    assert report["verification"]["duplicate_ids"] == 0
    assert not Path(str(out) + ".pages").exists()  # staging removed once published


def test_units_ucds_and_descriptions_kept(whole_table):
    out, _ = whole_table
    cat = open_catalog(out)
    field = cat.schema.field("ra") if hasattr(cat, "schema") else None
    import pyarrow.parquet as pq

    first = sorted((out / out.name / "dataset").rglob("Npix=*.parquet"))[0]
    meta = pq.read_schema(first).field("ra").metadata
    assert meta[b"unit"] == b"deg"
    assert meta[b"ucd"] == b"pos.eq.ra;meta.main"
    assert b"Right ascension" in meta[b"description"]
    assert field is None or field.name == "ra"


def test_rerun_is_up_to_date(dachs, whole_table, client):
    out, result = whole_table
    again = ingest(dachs, out, client, page_rows=20_000)
    assert again.up_to_date and again.rows == result.rows


def test_where_and_columns_honoured(dachs, client, tmp_path, source_table):
    out = tmp_path / "subset"
    args = TapIngestArguments(
        dachs,
        TAP_TABLE,
        str(out),
        columns=["source_id", "phot_g_mean_mag"],
        where="phot_g_mean_mag < 7.5 AND dec > 0",
        id_column="source_id",
    )
    result = run_ingest(args, client=client, progress=False)
    got = frame(out)
    # ra/dec are added because the catalog needs them; nothing else comes along
    assert set(got.columns) - {"_healpix_29"} == {"source_id", "phot_g_mean_mag", "ra", "dec"}
    want = source_table[(source_table.phot_g_mean_mag < 7.5) & (source_table.dec > 0)]
    assert result.rows == len(got) == len(want)
    assert set(got.source_id) == set(want.source_id)


# -- adaptive paging ----------------------------------------------------------------------------


def test_small_pages_force_deeper_plan(dachs, client, tmp_path, source_table):
    """Pages of 500 rows, far below the densest order-0 pixel: dense pixels are counted deeper."""
    out = tmp_path / "deep"
    want = source_table[source_table.phot_g_mean_mag < 7]
    pix0 = (
        TapService(dachs)
        .query(
            f"SELECT ivo_healpix_index(0, ra, dec) AS p, COUNT(*) AS n FROM {TAP_TABLE} "
            "WHERE phot_g_mean_mag < 7 GROUP BY p",
            20,
            "test",
        )
        .table
    )
    assert pix0["n"].max() > 5 * 500
    result = ingest(dachs, out, client, where="phot_g_mean_mag < 7", page_rows=500, order=0)
    got = frame(out)
    assert result.rows == len(want) and set(got.source_id) == set(want.source_id)
    assert (
        result.pages >= len(want) / 500 and result.splits == 0
    )  # planned deeper up front, nothing overflowed
    assert result.queries >= result.pages + 3  # 2 whole-sky counts (plan, check) + counts at deeper orders


def test_overflowing_pages_split_into_children(dachs, client, tmp_path, source_table):
    """Id paging plans blind: whole order-0 id ranges overflow and are split, recursively."""
    out = tmp_path / "split"
    result = ingest(dachs, out, client, where=SUBSET_WHERE, paging="id", order=0, page_rows=1_500)
    want = source_table[source_table.phot_g_mean_mag < 8.5]
    got = frame(out)
    assert result.splits >= 12
    assert result.rows == len(want) and set(got.source_id) == set(want.source_id)
    # the Hipparcos-only stars (negative ids) come through the catch-all page
    assert (got.source_id < 0).sum() == (want.source_id < 0).sum() > 0


@pytest.mark.parametrize("paging", ["contains", "keyset"])
def test_other_pagings_give_the_same_rows(dachs, client, tmp_path, subset_reference, paging):
    ref_out, ref = subset_reference
    out = tmp_path / paging
    result = ingest(dachs, out, client, where=SUBSET_WHERE, paging=paging, order=1, page_rows=4_000)
    assert result.paging == paging and result.rows == ref.rows
    pd.testing.assert_frame_equal(frame(out)[COLUMNS], frame(ref_out)[COLUMNS], check_exact=True)


def test_async_uws_queries(dachs, client, tmp_path, subset_reference):
    ref_out, ref = subset_reference
    out = tmp_path / "async"
    result = ingest(
        dachs, out, client, where="phot_g_mean_mag < 7", page_rows=20_000, mode="async", pages_in_flight=2
    )
    want = frame(ref_out)
    assert set(frame(out).source_id) == set(want.source_id[want.phot_g_mean_mag < 7])
    assert result.rows > 0


# -- interruptions ------------------------------------------------------------------------------


def _done_pages(pages_dir: Path) -> int:
    try:
        return len(json.loads((pages_dir / "manifest.json").read_text())["done"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_kill9_then_resume_is_identical(dachs, tmp_path, subset_reference):
    ref_out, ref = subset_reference
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "survey_engine.cli",
        "ingest",
        "--tap",
        dachs,
        "--table",
        TAP_TABLE,
        "--id",
        "source_id",
        "--where",
        SUBSET_WHERE,
        "--page-rows",
        "2000",
        "--workers",
        "1",
        "--min-interval",
        "0.15",
        "--dask-workers",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    pages = Path(str(out) + ".pages")
    deadline = time.time() + 120
    while _done_pages(pages) < 8 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the ingest finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _done_pages(pages)
    assert 8 <= killed_at < ref.pages
    assert not (out / REPORT_FILE).exists()
    done = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed" in done.stdout
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["rows"] == ref.rows and report["verification"]["ok"]
    pd.testing.assert_frame_equal(frame(out), frame(ref_out), check_exact=True)
    a = open_catalog(out).partitions.reset_index(drop=True)
    b = open_catalog(ref_out).partitions.reset_index(drop=True)
    pd.testing.assert_frame_equal(a[["Norder", "Npix"]], b[["Norder", "Npix"]])


def test_server_stop_and_restart_mid_ingest(dachs, client, tmp_path, subset_reference):
    ref_out, ref = subset_reference
    out = tmp_path / "restart"
    args = TapIngestArguments(
        dachs,
        TAP_TABLE,
        str(out),
        id_column="source_id",
        where=SUBSET_WHERE,
        page_rows=2_000,
        pages_in_flight=2,
        min_interval=0.25,
        backoff=0.5,
        retries=8,
    )
    outcome = {}

    def work():
        try:
            outcome["result"] = run_ingest(args, client=client, progress=False)
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    try:
        deadline = time.time() + 60
        while _done_pages(args.pages_dir) < 5 and time.time() < deadline:
            time.sleep(0.05)
        assert "error" not in outcome and thread.is_alive()
        os.kill(
            int(Path("/var/gavo/state/web.pid").read_text().split()[0]), signal.SIGTERM
        )  # the server goes away
        time.sleep(3)
    finally:
        subprocess.run(
            ["bash", str(DACHS_SETUP), "start"],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHON": sys.executable},
        )
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.retries > 0  # the outage was really met, and survived
    assert result.rows == ref.rows and result.verification["ok"]
    pd.testing.assert_frame_equal(frame(out), frame(ref_out), check_exact=True)


def test_pages_of_another_request_are_refused(dachs, client, tmp_path):
    out = tmp_path / "mixed"
    pages = Path(str(out) + ".pages")
    pages.mkdir()
    (pages / "manifest.json").write_text(
        json.dumps({"fingerprint": "someone-else", "done": {}, "planned": []})
    )
    with pytest.raises(InputError, match="different ingest"):
        ingest(dachs, out, client, where=SUBSET_WHERE)


# -- errors name the query and the page ---------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"where": "phot_g_mean_mag <<< 3"}, "rejected the query"),
        ({"columns": ["source_id", "no_such_column"]}, "no_such_column"),
        ({"table": "segaia.no_such_table"}, "no_such_table"),
    ],
)
def test_service_errors_name_query_and_page(dachs, client, tmp_path, kwargs, message):
    table = kwargs.pop("table", TAP_TABLE)
    args = TapIngestArguments(dachs, table, str(tmp_path / "bad"), id_column="source_id", **kwargs)
    with pytest.raises(TapError, match=message) as info:
        run_ingest(args, client=client, progress=False)
    text = str(info.value)
    assert "query: SELECT" in text and "page " in text
    assert not (tmp_path / "bad").exists()


def test_unreachable_service(tmp_path, client):
    args = TapIngestArguments(
        "http://127.0.0.1:9/tap",
        TAP_TABLE,
        str(tmp_path / "x"),
        paging="id",
        id_column="source_id",
        retries=2,
        backoff=0.01,
    )
    with pytest.raises(TapError, match=r"(?s)failed after 3 attempts.*Connection"):
        run_ingest(args, client=client, progress=False)


def test_html_answer(dachs, tmp_path, client):
    with FaultProxy(mode="html") as proxy:
        args = TapIngestArguments(
            proxy.url + "/tap", TAP_TABLE, str(tmp_path / "x"), paging="id", id_column="source_id"
        )
        with pytest.raises(TapError, match="answered HTML"):
            run_ingest(args, client=client, progress=False)


def test_truncated_votable_is_retried_then_reported(dachs, tmp_path, client):
    with FaultProxy(mode="truncate") as proxy:
        args = TapIngestArguments(
            proxy.url + "/tap",
            TAP_TABLE,
            str(tmp_path / "x"),
            paging="id",
            id_column="source_id",
            retries=2,
            backoff=0.01,
            pages_in_flight=1,
        )
        with pytest.raises(TapError, match=r"(?s)page id-o03-\d+-\d+.*cut short|page id-rest.*cut short"):
            run_ingest(args, client=client, progress=False)
        assert proxy.requests >= 3


def test_503s_are_retried(dachs, tmp_path, client):
    with FaultProxy(mode="flaky", failures=3) as proxy:
        out = tmp_path / "flaky"
        args = TapIngestArguments(
            proxy.url + "/tap",
            TAP_TABLE,
            str(out),
            id_column="source_id",
            where="phot_g_mean_mag < 6",
            paging="id",
            order=0,
            page_rows=50_000,
            backoff=0.01,
            pages_in_flight=1,
        )
        result = run_ingest(args, client=client, progress=False)
    assert result.retries == 3
    assert result.rows == int(
        server_scalar(dachs, f"SELECT COUNT(*) FROM {TAP_TABLE} WHERE phot_g_mean_mag < 6")
    )


def test_maxrec_below_one_pixel_at_max_order(dachs, tmp_path, client):
    args = TapIngestArguments(
        dachs, TAP_TABLE, str(tmp_path / "x"), id_column="source_id", order=2, max_order=2, page_rows=100
    )
    with pytest.raises(
        TapError, match=r"(?s)more than 100 rows even at the deepest order \(2\).*query: SELECT"
    ):
        run_ingest(args, client=client, progress=False)


# -- hostile input and secrets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "1=1) OR (1=1",
        "phot_g_mean_mag < 5; DELETE FROM segaia.main",
        "phot_g_mean_mag < 5 -- AND paging",
        "phot_g_mean_mag < 5 /* */",
        "(phot_g_mean_mag < 5",
        "ra > 'unterminated",
    ],
)
def test_hostile_where_cannot_break_out(where, tmp_path):
    with pytest.raises(InputError, match="WHERE clause"):
        TapIngestArguments("http://127.0.0.1:8080/tap", TAP_TABLE, str(tmp_path / "x"), where=where)


def test_where_with_parentheses_inside_strings_is_fine(dachs, tmp_path, client):
    out = tmp_path / "strings"
    args = TapIngestArguments(
        dachs,
        TAP_TABLE,
        str(out),
        id_column="source_id",
        where="phot_g_mean_mag < 5 AND 'a) OR (1=1' = 'a) OR (1=1'",
    )
    result = run_ingest(args, client=client, progress=False)
    assert result.rows == int(
        server_scalar(dachs, f"SELECT COUNT(*) FROM {TAP_TABLE} WHERE phot_g_mean_mag < 5")
    )


@pytest.mark.parametrize("name", ["ra; DROP TABLE x", "ra--", "1ra", "select", "ra dec", 'a"b'])
def test_identifiers_are_validated(name, tmp_path):
    with pytest.raises(InputError):
        TapIngestArguments("http://127.0.0.1:8080/tap", TAP_TABLE, str(tmp_path / "x"), columns=[name])
    with pytest.raises(InputError):
        TapIngestArguments("http://127.0.0.1:8080/tap", name, str(tmp_path / "x"))


def test_identifier_rules():
    assert adql.identifier('"weird col"') == '"weird col"'
    assert adql.table_name("gaiadr3.gaia_source") == "gaiadr3.gaia_source"
    assert adql.where_clause("  ") is None
    assert adql.where_clause("a < 1") == "(a < 1)"


def test_credentials_never_logged_or_stored(dachs, tmp_path, client, capfd, caplog):
    secret = "tok-SECRET-4711"
    url = dachs.replace("http://", f"http://user:{secret}@")
    out = tmp_path / "secret"
    args = TapIngestArguments(
        url, TAP_TABLE, str(out), id_column="source_id", where="phot_g_mean_mag < 4", token=secret
    )
    result = run_ingest(args, client=client, progress=True)
    assert result.rows > 0
    stored = "".join(
        p.read_text(errors="replace")
        for p in out.rglob("*")
        if p.is_file() and p.suffix in ("", ".json", ".properties", ".csv")
    )
    captured = capfd.readouterr()
    assert secret not in stored + captured.out + captured.err + caplog.text + repr(args)
    assert "user:" not in (out / REPORT_FILE).read_text()
    # and a failure message does not leak it either
    bad = TapIngestArguments(
        url, "segaia.nope", str(tmp_path / "y"), paging="id", id_column="source_id", token=secret
    )
    with pytest.raises(TapError) as info:
        run_ingest(bad, client=client, progress=False)
    assert secret not in str(info.value)


def test_presets_resolve_without_network(tmp_path):
    args = TapIngestArguments("gaia", "gaiadr3.gaia_source", str(tmp_path / "x"))
    assert args.tap_url.startswith("https://gea.esac.esa.int/")
    assert args.paging == "id" and args.id_column == "source_id"
    with pytest.raises(InputError, match="not an http"):
        TapIngestArguments("nosuchservice", TAP_TABLE, str(tmp_path / "x"))


def test_cli_ingest(dachs, tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "survey_engine.cli",
        "ingest",
        "--tap",
        dachs,
        "--table",
        TAP_TABLE,
        "--columns",
        "source_id,phot_g_mean_mag",
        "--where",
        "phot_g_mean_mag < 6",
        "--ra",
        "ra",
        "--dec",
        "dec",
        "--id",
        "source_id",
        "--order",
        "2",
        "--page-rows",
        "500",
        "--workers",
        "3",
        "--dask-workers",
        "1",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "checked against the service" in done.stdout and "rows/s" in done.stdout
    assert "ingest pages" in done.stderr  # the progress bar
    n = int(server_scalar(dachs, f"SELECT COUNT(*) FROM {TAP_TABLE} WHERE phot_g_mean_mag < 6"))
    assert open_catalog(out).row_count() == n
    bad = subprocess.run(
        cmd[:-2] + ["--where", "1=1) OR (1=1", "--out", str(tmp_path / "bad")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "WHERE clause" in bad.stderr


def test_server_side_failures_are_told_from_refusals():
    from survey_engine.ingest.tap.client import server_side_failure

    # what DaCHS answered once under concurrent sync queries (a race in its job directories)
    assert server_side_failure(
        "Field query: [Errno 13] Permission denied: '/var/gavo/state/uwsjobs/8rajgr6s/tmp24gvf7ta'"
    )
    assert server_side_failure("Query timed out after 60 seconds")
    # what DaCHS answered once just after it restarted (its UWS jobs table still locked)
    assert server_side_failure(
        "Could not access the jobs table. This probably means there is a stale lock on it.  Please "
        "notify the service operators."
    )
    for refusal in (
        "Field query: Could not locate table 'segaia.nope'",
        "Field query: No such field known: column 'nope' could not be located in table metadata",
        "Field query: Could not parse your query: Expected \"SELECT\", found 'S'  (at char 0), (line:1, col:1)",
    ):
        assert not server_side_failure(refusal)
