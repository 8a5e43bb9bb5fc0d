"""Shared fixtures: a real nats-server per test session on a free port, the
database Django's test runner sets up (SQLite, or PostgreSQL when
ROTA_DATABASE_URL points at one), and helpers to wait for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Settings are read from the environment: give tests a private data dir before
# Django loads rota.standalone.settings.
_TMP = Path(tempfile.mkdtemp(prefix="rota-tests-"))
os.environ.setdefault("ROTA_DATA_DIR", str(_TMP / "data"))
os.environ.setdefault("ROTA_SECRET_KEY", "tests-only-secret")
if not os.environ.get("ROTA_DATABASE_URL", "").startswith("postgres"):
    # A file, not :memory:, so that worker threads and processes share it.
    os.environ.setdefault("ROTA_TEST_DATABASE_NAME", str(_TMP / "test.sqlite3"))
# Set here, not in pyproject.toml: pytest-django must load the settings only after
# the variables above exist (it does so in pytest_configure when it finds this).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rota.standalone.settings")
from django.conf import settings as _django_settings  # noqa: E402

_django_settings.DATABASES  # noqa: B018  (loads the settings now, with the variables above)


@pytest.fixture(scope="session")
def tls_dir():
    """A cluster CA and a node certificate, as `rota certs init` makes them."""
    from rota.control.certs import init_certs

    directory = _TMP / "tls"
    init_certs(directory, ["test-node"])
    os.environ["ROTA_TLS_DIR"] = str(directory)
    os.environ["ROTA_GRPC_HOST"] = "127.0.0.1"
    os.environ["ROTA_GRPC_PORT"] = "0"
    return directory


@pytest.fixture(scope="session")
def nats_server(tls_dir):
    """A real nats-server with JetStream on a free port, for the whole session."""
    from rota.bus.server import EmbeddedNats, NatsServerError

    try:
        server = EmbeddedNats(_TMP / "nats", token="test-token", log_file=_TMP / "nats.log")
        server.start()
    except NatsServerError as exc:
        if CI:
            raise
        pytest.skip(f"nats-server unavailable: {exc}")
    os.environ["ROTA_NATS_URL"] = server.url
    os.environ["ROTA_NATS_TOKEN"] = "test-token"
    from rota.conf import reload_settings

    reload_settings()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rota_settings(nats_server):
    from rota.conf import reload_settings

    return reload_settings()


@pytest.fixture(scope="session")
def _db_threads(django_db_setup, django_db_blocker):
    """Close the connections that rota's SQL threads opened, before the test
    database is dropped (PostgreSQL refuses to drop a database in use)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from rota.runs.sqlwriter import close_all_writers

    with django_db_blocker.unblock():
        close_all_writers()
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture
async def bus(rota_settings, _db_threads):
    from rota.bus.connection import connect

    b = await connect(rota_settings, name="rota-tests", ensure=True)
    yield b
    await b.close()


@contextlib.asynccontextmanager
async def running_worker(settings, *, tags: list[str], executors: dict, capacity: int = 4):
    """A real worker with both roles (it becomes the leader when none is), for
    integration tests; shut down (grace 2 s) at the end."""
    from rota.worker.daemon import Worker

    w = Worker(
        settings, tags=tags, capacity=capacity, roles={"execute", "lead"}, executors=executors
    )
    await w.start()
    try:
        yield w
    finally:
        await w.shutdown(grace=2)


async def eventually(
    check: Callable[[], Awaitable[object]], timeout: float = 15.0, interval: float = 0.05
) -> object:
    """Await ``check()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TMP, ignore_errors=True)
