"""TLS between client, scheduler and workers, with self-signed certificates."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from survey_engine.catalog.catalog import open_catalog

JOB = """\
source:
  mock: {rows: 10000, seed: 9}
stages:
  - id: sky
    import: {max_rows: 5000, margin: 5}
"""


def make_certs(d: Path) -> None:
    """A throw-away CA and one certificate it signed (for 127.0.0.1), as a site would issue."""

    def sh(*args):
        subprocess.run(args, check=True, capture_output=True, cwd=d)

    sh(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    )
    sh(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    sh(
        "openssl",
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )


@pytest.mark.slow
def test_job_over_tls(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tls://127.0.0.1:{port}"
    tls = [
        "--tls-ca-file",
        str(certs / "ca.pem"),
        "--tls-cert",
        str(certs / "node.pem"),
        "--tls-key",
        str(certs / "node.key"),
    ]
    dask = str(Path(sys.executable).parent / "dask")
    procs = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--protocol",
                "tls",
                "--dashboard-address",
                ":0",
                *tls,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    try:
        time.sleep(2)
        procs.append(
            subprocess.Popen(
                [dask, "worker", address, "--nthreads", "1", "--no-dashboard", *tls],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        config = tmp_path / "tls.yaml"
        config.write_text(
            "security:\n  tls_ca_file: certs/ca.pem\n  tls_client_cert: certs/node.pem\n  tls_client_key: certs/node.key\n"
            "  require_encryption: true\n"
        )
        (tmp_path / "job.yaml").write_text(JOB)
        base = [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "submit",
            str(tmp_path / "job.yaml"),
            "--scheduler",
            address,
        ]
        done = subprocess.run(
            base + ["--security", str(config), "--workdir", str(tmp_path / "work"), "--no-progress"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads((tmp_path / "work" / "run_summary.json").read_text())
        assert summary["cluster"]["scheduler"] == address
        assert open_catalog(tmp_path / "work" / "sky").row_count() == 10_000
        # nothing written or printed carries the private key
        key_body = (certs / "node.key").read_text().splitlines()[1]
        written = (
            (tmp_path / "work" / "run.log").read_text() + json.dumps(summary) + done.stdout + done.stderr
        )
        assert key_body not in written
        # without credentials: refused with a clear message
        bare = subprocess.run(
            base + ["--workdir", str(tmp_path / "w2")], capture_output=True, text=True, timeout=120
        )
        assert bare.returncode == 2 and "needs credentials" in bare.stderr
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
