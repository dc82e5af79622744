"""Shared fixtures: a real Dask LocalCluster (processes) and the real data in ../shared/data."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SERVICE_FIXTURES = {"dachs", "slurm", "http_server", "s3_server"}


# Modules that hold machine-wide state other than the services: their own network namespaces and nginx.
SERIAL_MODULES = {"test_netns.py"}
# Session fixtures that take minutes: the tests that read one run in one pytest-xdist worker.
SHARED_SESSION_FIXTURES = ("sdss_model", "gaia_allsky_collection")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """Tests that use a real service (DaCHS, SLURM, nginx, S3) are ``services`` and ``slow`` by their
    fixtures. Every test gets an ``xdist_group`` for ``--dist loadgroup`` (pyproject.toml): the
    service tests one group, run one after another in one worker (one DaCHS, restarted by a test;
    one SLURM; fixed ports), the readers of a costly session fixture one group each, and every
    other module its own group, so that module fixtures are built once."""
    uses = {item: set(getattr(item, "fixturenames", ())) for item in items}
    module_group: dict = {}  # a module with a reader of a costly session fixture: wholly in its group
    for item in items:
        for fixture in SHARED_SESSION_FIXTURES:
            if fixture in uses[item]:
                module_group.setdefault(item.path, fixture)
    for item in items:
        service = bool(SERVICE_FIXTURES & uses[item])
        if service:
            item.add_marker(pytest.mark.services)
            item.add_marker(pytest.mark.slow)
        if service or item.path.name in SERIAL_MODULES:
            group = "services"
        else:
            group = module_group.get(item.path, item.nodeid.split("::")[0])
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_configure(config) -> None:
    """pytest 9.2 derives node ids in a way pytest-xdist 3.8's ``--dist loadgroup`` cannot change:
    the groups above would be ignored and the service tests run in both workers at once (one DaCHS,
    restarted by a test). Stop with a clear error instead (pyproject.toml pins a pytest that works)."""
    from packaging.version import Version  # a dependency of pytest itself

    if config.getoption("dist", "no") == "loadgroup" and Version(pytest.__version__) >= Version("9.2"):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} with pytest-xdist's --dist loadgroup ignores the test groups "
            "of tests/conftest.py: install the [test] extra's pinned pytest (9.1.1), or run with -n 0"
        )


def shared_path(relative: str) -> Path:
    """A file from ../shared/data (read in place, never copied). A missing file fails the test:
    the tests need the real data beside the checkout, in CI and everywhere else."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.fail(f"real data file missing: {path} (the tests read ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def client():
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.WARNING,
    ) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def threads():
    """A cluster of threads in this process, so that a reader or writer patched by a test is the one
    the tasks call."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        yield c


class LateTask:
    """A task function's stand-in for a write that fails while one of its tasks still runs: the first
    call (or the first for which ``hold(args)`` is true) is held (``started`` set) until ``let_go()``,
    then runs ``real`` (what it raised kept in ``raised``); every other call waits until the held
    one has started and raises ``failure(args)``. Used on a ``threads`` cluster, where the patched
    function is the one the tasks call."""

    def __init__(self, real, failure, hold=None):
        import threading

        self.real, self.failure, self.hold = real, failure, hold
        self.started, self._go, self.ended = threading.Event(), threading.Event(), threading.Event()
        self.raised: list[BaseException] = []
        self._held = False
        self._lock = threading.Lock()

    def __call__(self, *args, **kw):
        with self._lock:
            first = not self._held and (self.hold is None or self.hold(args))
            self._held = self._held or first
        if not first:
            self.started.wait(120)
            raise self.failure(args)
        self.started.set()
        self._go.wait(120)
        try:
            return self.real(*args, **kw)
        except BaseException as exc:
            self.raised.append(exc)
            raise
        finally:
            self.ended.set()

    def let_go(self) -> None:
        """Let the held call run, and wait until it has ended."""
        self._go.set()
        assert self.ended.wait(120), "the held task did not end"


@pytest.fixture(scope="session")
def gaia_allsky() -> pd.DataFrame:
    """The 482k-row all-sky Gaia DR3 G<10 table."""
    return pd.read_parquet(shared_path("clusters_xmatch/gaia_dr3_allsky_G10.parquet"))


@pytest.fixture(scope="session")
def gaia_allsky_collection(tmp_path_factory, client, gaia_allsky):
    """The all-sky table imported once (max 20k rows per partition, 60 arcsec margin)."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out = tmp_path_factory.mktemp("allsky") / "gaia_g10"
    src = shared_path("clusters_xmatch/gaia_dr3_allsky_G10.parquet")
    run_import(
        ImportArguments(
            [str(src)],
            str(out),
            id_column="source_id",
            max_rows=20_000,
            margin_arcsec=60.0,
            chunk_rows=100_000,
        ),
        client=client,
        progress=False,
    )
    return out


def random_sky(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "mag": rng.normal(17, 1, n).astype(np.float32),
        }
    )


TAP_URL = "http://127.0.0.1:8080/tap"
TAP_TABLE = "segaia.main"


@pytest.fixture(scope="session")
def dachs() -> str:
    """The real GAVO DaCHS server on loopback, serving the all-sky Gaia table as ``segaia.main``.

    Started (and installed on first use) by the project's own script; a failure to bring it up
    fails the tests that need it."""
    import os
    import subprocess
    import sys

    shared_path("clusters_xmatch/gaia_dr3_allsky_G10.parquet")
    script = REPO / "tests" / "services" / "dachs" / "setup.sh"
    proc = subprocess.run(
        ["bash", str(script), "start"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"could not start the DaCHS test service ({script}):\n{proc.stdout}\n{proc.stderr}")
    return TAP_URL


@pytest.fixture(scope="session")
def mock_catalog(tmp_path_factory, client) -> Path:
    """A 60,000-row mock sky as a HATS collection (several partitions, 60 arcsec margin)."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import
    from survey_engine.mock.sky import write_mock_sky

    root = tmp_path_factory.mktemp("mocksky")
    write_mock_sky(60_000, root / "files", seed=7, client=client, progress=False)
    run_import(
        ImportArguments(
            [str(root / "files")],
            str(root / "sky"),
            id_column="source_id",
            max_rows=8_000,
            margin_arcsec=60.0,
        ),
        client=client,
        progress=False,
    )
    return root / "sky"


@pytest.fixture(scope="session")
def slurm() -> None:
    """A real single-node SLURM (cluster/dev/slurm.sh): installed and started if needed."""
    import subprocess

    script = REPO / "cluster" / "dev" / "slurm.sh"
    proc = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"could not start the SLURM test cluster ({script}):\n{proc.stdout}\n{proc.stderr}")


@dataclass(frozen=True)
class HttpService:
    """The nginx of tests/services/nginx/setup.sh: ``url`` serves the folder ``root``; every request
    is a line "METHOD URI STATUS BYTES "RANGE" CLIENT_ADDRESS" in ``access_log``."""

    url: str
    root: Path
    access_log: Path


@pytest.fixture(scope="session")
def http_server() -> HttpService:
    """A real nginx (Debian) on 127.0.0.1:8089 serving a folder over HTTP with range requests.

    Started (and installed on first use) by the project's own script, or found running; a failure
    to bring it up fails the tests that need it."""
    import subprocess

    script = REPO / "tests" / "services" / "nginx" / "setup.sh"
    proc = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"could not start the nginx test service ({script}):\n{proc.stdout}\n{proc.stderr}")
    return HttpService(
        "http://127.0.0.1:8089",
        Path("/var/lib/survey-engine-test/www"),
        Path("/var/lib/survey-engine-test/nginx/access.log"),
    )


@pytest.fixture(scope="session")
def s3_server() -> dict:
    """A real S3-compatible server (moto's standalone server, as s3fs's tests use) on
    127.0.0.1:9000 that refuses unknown keys; returns the storage options of its one user
    (``endpoint_url``, ``key``, ``secret``). Started by the project's own script, or found running."""
    import json
    import os
    import subprocess
    import sys

    script = REPO / "tests" / "services" / "s3" / "setup.sh"
    proc = subprocess.run(
        ["bash", str(script), "start"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"could not start the S3 (moto) test service ({script}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(Path("/var/lib/survey-engine-test/s3/credentials.json").read_text())
