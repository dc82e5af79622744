"""Secrets never printed: tokens in every place a user might put one (user info, ``?token=``,
``api_key=``, a password holding ``#`` and ``/``) never reach stderr, run.log, run_summary.json,
manifest.json or tap_ingest.json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from survey_engine.redact import REDACTED, redact_text, redact_url, split_userinfo

SECRETS = ("hunter2", "pa/ss#w0rd", "TOKEN123abc", "KEY456def", "SIG789ghi")
HOSTILE_URLS = [
    "http://alice:hunter2@127.0.0.1:9/tap",
    "http://alice:pa/ss#w0rd@127.0.0.1:9/tap",
    "http://127.0.0.1:9/tap?token=TOKEN123abc",
    "http://127.0.0.1:9/tap?lang=adql&api_key=KEY456def",
    "http://bob:pa/ss#w0rd@127.0.0.1:9/tap?token=TOKEN123abc&X-Amz-Signature=SIG789ghi",
]


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_redact_url_drops_user_info_and_credential_parameters(url):
    clean = redact_url(url)
    assert not leaks(clean) and clean.startswith("http://127.0.0.1:9/tap")
    assert "alice" not in clean and "bob" not in clean


def test_redact_url_keeps_what_is_not_secret():
    assert (
        redact_url("https://host:8443/tap?lang=adql&token=x")
        == f"https://host:8443/tap?lang=adql&token={REDACTED}"
    )
    assert redact_url("https://host/tap?email=a@b.c") == "https://host/tap?email=a@b.c"
    assert redact_url("https://host/tap#frag") == "https://host/tap"


def test_password_with_hash_and_slash_is_split_not_misparsed():
    bare, user, password = split_userinfo("https://alice:pa/ss#w0rd@example.org:8443/tap")
    assert (bare, user, password) == ("https://example.org:8443/tap", "alice", "pa/ss#w0rd")
    bare, user, password = split_userinfo("https://alice:p%40ss@example.org/tap")
    assert (bare, password) == ("https://example.org/tap", "p@ss")


def test_redact_text_scrubs_messages_that_quote_the_url():
    url = HOSTILE_URLS[-1]
    message = (
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
        "/tap/sync?token=TOKEN123abc&X-Amz-Signature=SIG789ghi; auth pa/ss#w0rd"
    )
    assert not leaks(redact_text(message, url))
    assert not leaks(redact_text("failed: http://u:hunter2@h/x?api_key=KEY456def"))


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_tap_arguments_keep_credentials_out_of_the_url(url, tmp_path):
    from survey_engine.ingest.tap.arguments import TapIngestArguments

    args = TapIngestArguments(url, "segaia.main", str(tmp_path / "out"))
    assert not leaks(json.dumps(args.describe_source())) and not leaks(args.fingerprint())
    if "@" in url:
        assert args.basic_auth[1] in ("hunter2", "pa/ss#w0rd") and "@" not in args.tap_url


def test_unreachable_service_error_has_no_secret(tmp_path):
    from survey_engine.ingest.tap.client import TapError, TapService

    service = TapService(
        "http://127.0.0.1:9/tap?token=TOKEN123abc&api_key=KEY456def", token="TOKEN123abc", retries=0
    )
    with pytest.raises(TapError) as info:
        service.query("SELECT TOP 1 * FROM t", 10, "p0")
    assert "127.0.0.1:9" in str(info.value) and not leaks(str(info.value))


@pytest.mark.slow
@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_cli_ingest_error_and_manifest_have_no_secret(url, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "ingest",
            "--tap",
            url,
            "--table",
            "segaia.main",
            "--out",
            str(out),
            "--retries",
            "0",
            "--paging",
            "keyset",
            "--id",
            "source_id",
            "--dask-workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "SURVEY_ENGINE_TAP_TOKEN": "TOKEN123abc"},
    )
    assert run.returncode == 2, run.stderr
    assert "127.0.0.1:9" in run.stderr and not leaks(run.stdout + run.stderr), run.stderr
    assert "Traceback" not in run.stderr and "Port could not be cast" not in run.stderr
    for f in tmp_path.rglob("*.json"):
        assert not leaks(f.read_text()), f


@pytest.mark.slow
def test_job_with_secrets_in_the_tap_url_leaks_nothing(client, tmp_path):
    from survey_engine.jobs.run import run_job
    from survey_engine.jobs.spec import load_spec

    spec = tmp_path / "job.yaml"
    spec.write_text(f"""\
name: leak
workdir: work
source:
  tap: {{url: "{HOSTILE_URLS[-1]}", table: segaia.main, id: source_id, paging: keyset}}
stages:
  - id: gaia
    ingest: {{max_rows: 1000}}
""")
    lines: list[str] = []
    with pytest.raises(Exception) as info:
        run_job(load_spec(spec, base=tmp_path), client=client, progress=False, echo=lines.append)
    assert not leaks(str(info.value)) and not leaks("\n".join(lines))
    work = tmp_path / "work"
    texts = {f: f.read_text() for f in [work / "run.log", work / "run_summary.json", *work.rglob("*.json")]}
    assert "127.0.0.1:9" in texts[work / "run.log"]
    assert not [f for f, t in texts.items() if leaks(t)]
