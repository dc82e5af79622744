"""Workers on other hosts: a Dask scheduler on a bridge address and two workers, each in its own
network namespace with its own IP address (cluster/dev/netns.sh), run a job (import, a
cross-match, training) whose outputs equal those of the same job on a local cluster, and
cross-match against a catalog that a second nginx serves on the bridge address, read over HTTP by
the workers in the namespaces. The driver's fetch-from-the-workers shortcut sees that the workers
are not on its host and is not taken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from survey_engine import open_catalog
from tests.catalog.targets import near_targets
from tests.conftest import REPO

DRIVER = "10.77.0.1"
PORT = 8797
HTTP_PORT = 8089
HTTP_STATE = Path("/var/lib/survey-engine-test/nginx-netns")
JOB = textwrap.dedent("""\
    name: hosts
    source:
      mock: {rows: 24000, seed: 9}
    stages:
      - id: sky
        import: {max_rows: 5000, margin: 900}
      - id: pairs
        crossmatch: {left: sky, right: sky, radius: 600, how: all, self: true}
      - id: model
        train: {task: photoz, catalog: sky, features: [u-g, g-r, r-i, i-z, r], target: redshift,
                where: "obj_class == 'GALAXY'", members: 1, rounds: 60}
""")


@pytest.fixture(scope="module")
def hosts():
    """The scheduler in this namespace, one worker in each of two other namespaces."""
    script = REPO / "cluster" / "dev" / "netns.sh"
    made = subprocess.run(["bash", str(script), "start", "2"], capture_output=True, text=True)
    assert made.returncode == 0, f"cannot make the network namespaces (root needed, as in CI): {made.stderr}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                DRIVER,
                "--port",
                str(PORT),
                "--dashboard-address",
                ":0",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    time.sleep(3)
    for i in (1, 2):
        procs.append(
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    f"se-host{i}",
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    f"tcp://{DRIVER}:{PORT}",
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    "4GB",
                    "--name",
                    f"host{i}",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    yield f"tcp://{DRIVER}:{PORT}"
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _run(job, cluster, cwd):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "run",
            str(job),
            "--cluster",
            cluster,
            "--min-workers",
            "2",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


def _pairs(path):
    frame = open_catalog(path).compute()
    return np.sort(frame["source_id_1"].to_numpy() * 10**7 + frame["source_id_2"].to_numpy() % 10**7)


@pytest.mark.services
@pytest.mark.slow
def test_a_job_on_workers_in_other_namespaces_equals_the_local_run(hosts, tmp_path):
    from distributed import Client

    from survey_engine.runtime import workers_reachable

    with Client(hosts, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        addresses = sorted(client.scheduler_info()["workers"])
        assert [a.split("//")[1].rsplit(":", 1)[0] for a in addresses] == ["10.77.0.2", "10.77.0.3"], (
            addresses
        )
        assert not workers_reachable(client)  # not on the driver's host: results come through the scheduler
    job = tmp_path / "hosts.yaml"
    job.write_text(JOB)
    (tmp_path / "remote").mkdir()
    (tmp_path / "local").mkdir()
    remote = _run(job, hosts, tmp_path / "remote")
    assert remote.returncode == 0, remote.stderr[-3000:]
    local = _run(job, "local", tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    r, lo = tmp_path / "remote" / "hosts-job", tmp_path / "local" / "hosts-job"
    assert open_catalog(r / "sky").row_count() == open_catalog(lo / "sky").row_count() == 24000
    remote_pairs, local_pairs = _pairs(r / "pairs"), _pairs(lo / "pairs")
    assert len(remote_pairs) > 0 and np.array_equal(remote_pairs, local_pairs)
    import json

    remote_model = json.loads((r / "model" / "metrics.json").read_text())["test"]
    local_model = json.loads((lo / "model" / "metrics.json").read_text())["test"]
    assert remote_model["n"] == local_model["n"] > 100
    assert remote_model["sigma_nmad"] == pytest.approx(local_model["sigma_nmad"], rel=0.1)


@pytest.fixture(scope="module")
def bridge_http(hosts, tmp_path_factory):
    """A second nginx (tests/services/nginx/setup.sh, own state and root) listening on the bridge
    address 10.77.0.1, which the workers in the namespaces reach (127.0.0.1 is their own)."""
    root = tmp_path_factory.mktemp("www")
    script = REPO / "tests" / "services" / "nginx" / "setup.sh"
    env = {
        **os.environ,
        "SURVEY_ENGINE_HTTP_HOST": DRIVER,
        "SURVEY_ENGINE_HTTP_PORT": str(HTTP_PORT),
        "SURVEY_ENGINE_HTTP_STATE": str(HTTP_STATE),
        "SURVEY_ENGINE_HTTP_ROOT": str(root),
    }
    made = subprocess.run(["bash", str(script), "start"], env=env, capture_output=True, text=True)
    assert made.returncode == 0, f"cannot start nginx on {DRIVER}:{HTTP_PORT}: {made.stderr}"
    yield f"http://{DRIVER}:{HTTP_PORT}", root, HTTP_STATE / "access.log"
    subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, text=True)


def _targets(sky_path, out, client):
    """300 sources nearest (200, 30) deg, moved by up to 0.3", imported as a local target catalog."""
    return near_targets(sky_path, out, client)


@pytest.mark.services
@pytest.mark.slow
def test_workers_in_other_namespaces_read_a_catalog_over_http(
    hosts, bridge_http, mock_catalog, client, tmp_path
):
    """A cross-match whose right catalog is an http:// URL on the bridge address: the workers in
    the namespaces fetch the partitions they match against (nginx logs their own addresses), and
    the pairs equal those of the local catalog on a local cluster."""
    from distributed import Client

    from survey_engine.crossmatch import crossmatch

    url, root, access_log = bridge_http
    shutil.copytree(mock_catalog, root / "sky")
    frame, targets = _targets(mock_catalog, tmp_path, client)
    local = crossmatch(targets, open_catalog(mock_catalog), 1.0).compute()  # the local cluster
    local_pairs = set(zip(local.target_id_1, local.source_id_2))
    assert local_pairs >= set(zip(frame.target_id, frame.source))
    access_log.write_text("")
    with Client(hosts, timeout=30) as remote_client:
        remote_client.wait_for_workers(2, timeout=60)
        remote = open_catalog(f"{url}/sky")
        got = crossmatch(targets, remote, 1.0).compute()
    assert set(zip(got.target_id_1, got.source_id_2)) == local_pairs
    assert np.array_equal(
        got.sort_values("target_id_1").sep_arcsec.to_numpy(),
        local.sort_values("target_id_1").sep_arcsec.to_numpy(),
    )
    requests = [line.split(" ") for line in access_log.read_text().splitlines()]
    data_reads = [r for r in requests if r[0] == "GET" and "/dataset/Norder=" in r[1]]
    assert data_reads and all(r[2] == "206" for r in data_reads)  # byte ranges of the partitions
    readers = {r[5] for r in data_reads}
    assert readers <= {"10.77.0.2", "10.77.0.3"} and readers, readers  # the workers, not the driver
