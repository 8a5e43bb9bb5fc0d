"""Real Redis and real Celery workers for the Celery integration tests.

``redis_url``: a ``redis-server --port N --save ''`` on a free port for the test
session (scripts/test installs Debian's redis-server); missing, the tests skip
on a laptop and fail in CI. ``celery_worker``: a real Celery 5 worker process
(prefork) running :mod:`tests.celery.app`, killed with its children at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CI

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        if CI:
            raise RuntimeError("redis-server is missing (scripts/test installs it)")
        pytest.skip("redis-server unavailable (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _ping(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}"
    os.environ["ROTA_TEST_REDIS_URL"] = url
    yield url
    proc.kill()
    proc.wait(5)


@pytest.fixture(scope="session")
def celery_app(redis_url):
    from tests.celery import app as module

    # The module may have been imported before the URL existed: point it there.
    module.app.conf.broker_url = f"{redis_url}/0"
    module.app.conf.result_backend = f"{redis_url}/1"
    return module.app


class CeleryWorker:
    """A ``celery worker`` process group; :meth:`kill` SIGKILLs all of it."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc = proc
        self.log = log

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def start_celery_worker(
    redis_url: str, log_dir: Path, *, name: str, concurrency: int = 4, queues: str = "celery"
) -> CeleryWorker:
    log = log_dir / f"{name}.log"
    env = {**os.environ, "ROTA_TEST_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery.app",
            "worker",
            "--pool",
            "prefork",
            "-c",
            str(concurrency),
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return CeleryWorker(proc, log)


def wait_ready(app, worker: CeleryWorker, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"celery worker exited: {worker.log.read_text()[-2000:]}")
        replies = app.control.ping(timeout=0.5)
        if any(name in host for reply in replies for host in reply):
            return
    worker.kill()
    raise RuntimeError(f"celery worker not ready: {worker.log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def celery_worker(celery_app, redis_url, tmp_path_factory):
    w = start_celery_worker(redis_url, tmp_path_factory.mktemp("celery"), name="w1")
    try:
        wait_ready(celery_app, w, "w1@")
        yield w
    finally:
        w.kill()


def session_database_file() -> str:
    """The SQLite file of this session's test database, for a subprocess to open
    (pytest-django names it per xdist worker, so not ROTA_TEST_DATABASE_NAME)."""
    from django.db import connection

    return str(connection.settings_dict["NAME"])
