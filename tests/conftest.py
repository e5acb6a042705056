"""Shared fixtures: a real Prefect server, a real S3 endpoint, a real registry.

Integration tests need a running Docker engine; `.ci/run` starts one. They
fail, never skip, when something they need is missing.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from infra.job_store import JobStore

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGES = {
    "dockyard-test/probe:1": ROOT / "tests" / "images" / "probe",
    "dockyard-test/sagemaker-toolkit:1": ROOT / "tests" / "images" / "sagemaker-toolkit",
    "dockyard-test/scorer:1": ROOT / "tests" / "images" / "scorer",
    "byo-linear:latest": ROOT / "examples" / "byo-container",
    "pipe-linear:latest": ROOT / "examples" / "pipe-mode",
}
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_image() -> str:
    return os.environ.get("DOCKYARD_BASE_IMAGE") or "dockyard/python-base:bookworm"


_SERVER_HOME = ""
_SERVER_DATABASE = ""


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001 - pytest's hook signature
    """Start one real local Prefect server before anything imports Prefect, so
    every thread and worker Prefect starts reports to it."""
    if os.environ.get("PREFECT_API_URL"):
        return  # an xdist worker, or a server of the user's own
    from infra import prefect_api

    global _SERVER_HOME, _SERVER_DATABASE
    _SERVER_HOME = tempfile.mkdtemp(prefix="dockyard-tests-prefect-")
    # On the PostgreSQL setup starts, as a team's server would be: every test's flow runs share this
    # server, and on SQLite its write lock, under that load, answers 503 for minutes at a time.
    # (A database URL of the user's own stands; without PostgreSQL up, as for a run of unit tests
    # before setup, the server keeps SQLite.)
    chosen = "PREFECT_SERVER_DATABASE_CONNECTION_URL" in os.environ
    if not chosen:
        try:
            _SERVER_DATABASE = _create_database("dockyard_test_prefect")
        except OperationalError as exc:
            print(f"the tests' Prefect server runs on SQLite: no PostgreSQL ({exc.orig}); scripts/setup starts it")
        else:
            url = make_url(_SERVER_DATABASE).set(drivername="postgresql+asyncpg")
            os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = url.render_as_string(hide_password=False)
    try:
        os.environ["PREFECT_API_URL"] = prefect_api.start_server(_SERVER_HOME, print, port=free_port())
    finally:
        if not chosen:  # the servers tests start of their own keep their own SQLite
            os.environ.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    # atexit runs last-in first-out: Prefect, imported later, flushes its logs before this stops the server.
    atexit.register(_stop_server)


def _stop_server() -> None:
    from infra import prefect_api

    prefect_api.stop_server(_SERVER_HOME)
    shutil.rmtree(_SERVER_HOME, ignore_errors=True)
    if _SERVER_DATABASE:
        _drop_database(_SERVER_DATABASE)


def _admin() -> Engine:
    """The PostgreSQL that setup starts, as a role that may create databases."""
    url = os.environ.get("DOCKYARD_TEST_POSTGRES_URL", "postgresql+psycopg://dockyard:dockyard@127.0.0.1:5432/postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT")


def _create_database(prefix: str) -> str:
    """A new database on it; its URL."""
    name = f"{prefix}_{os.urandom(4).hex()}"
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin.url.set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    admin = _admin()
    for attempt in range(20):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
            break
        except DBAPIError:  # an autovacuum worker on it, which this role may not terminate: it ends soon
            if attempt == 19:
                raise
            time.sleep(0.5)
    admin.dispose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Disruptive tests (they restart dockerd) run after all the others."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


@pytest.fixture(scope="session")
def prefect_server() -> str:
    return os.environ["PREFECT_API_URL"]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server over HTTP on loopback."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(S3_CREDENTIALS)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    """Debian's docker-registry on loopback (127.0.0.0/8 is an insecure registry by default)."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    assert os.path.exists(binary), "docker-registry is not installed; run .ci/run or apt-get install docker-registry"
    port = free_port()
    folder = tempfile.mkdtemp(prefix="dockyard-registry-")
    config = Path(folder) / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(10)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def test_images() -> dict[str, str]:
    """The probe, toolkit and bring-your-own images, built on the base image if missing."""
    from infra import docker_engine

    for tag, context in TEST_IMAGES.items():  # cached layers make this quick when nothing changed
        docker_engine.build(str(context), tag, {"BASE_IMAGE": base_image()}, print)
    return {
        "probe": "dockyard-test/probe:1",
        "toolkit": "dockyard-test/sagemaker-toolkit:1",
        "scorer": "dockyard-test/scorer:1",
        "byo": "byo-linear:latest",
        "pipe": "pipe-linear:latest",
    }


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: str) -> Iterator[str]:
    """A fresh DOCKYARD_HOME per test, reporting to the session's Prefect server;
    no test may leave a Prefect server of its own running for it."""
    from infra import prefect_api

    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("DOCKYARD_HOME", str(path))
    monkeypatch.setenv("DOCKYARD_STOP_GRACE_SECONDS", "5")
    monkeypatch.setenv("DOCKYARD_BASE_IMAGE", base_image())
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    yield str(path)
    leaked = prefect_api.stop_server(str(path))
    assert leaked is None, f"a process started a Prefect server of its own for {path} (pid {leaked.pid})"


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A database of its own on the PostgreSQL that setup starts, dropped afterwards."""
    url = _create_database("dockyard_test")
    yield url
    JobStore.close(url)  # the store's connections must go before the database does
    _drop_database(url)


@pytest.fixture(autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """After every integration test: none of its jobs left a dockyard-labelled container
    or network. Its jobs are those with a folder in a home under the test's tmp_path;
    other tests' jobs, running beside it, are theirs to check."""
    yield
    if request.node.get_closest_marker("integration") is None:
        return
    from infra import docker_engine, job_log

    mine = {folder.name: folder for folder in tmp_path.glob("**/jobs/*") if folder.is_dir()}
    left = [obj for obj in docker_engine.list_managed() if obj["job"] in mine]
    for obj in left:
        docker_engine.remove_job_objects(obj["job"])
    logs = {job: _tail(mine[job] / job_log.LOG_FILE) for job in sorted({obj["job"] for obj in left})}
    assert not left, f"dockyard left Docker objects behind: {left}; the end of their jobs' logs: {logs}"


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"
