"""End-to-end fixtures: a real `rota up` (nats-server, SQLite, web server, worker
as separate processes) in a temporary data dir on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rota.bus.server import free_port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTA_", "DJANGO_"))}
    env.update(extra)
    return env


@dataclass
class Stack:
    proc: subprocess.Popen
    data_dir: Path
    url: str
    token: str
    log: Path

    @property
    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )

    def env(self) -> dict[str, str]:
        """The environment a second worker or the CLI gets from rota.env."""
        values = {}
        for line in (self.data_dir / "rota.env").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                values[k] = v
        return clean_env(**values)


def start_stack(
    tmp: Path, *extra_args: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> Stack:
    data_dir = tmp / "data"
    port = free_port()
    log = tmp / "up.log"
    offset = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rota",
                "up",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                *extra_args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(ROTA_SHUTDOWN_GRACE_SECONDS="3", **(env or {})),
            cwd=tmp,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rota up exited with {proc.returncode}:\n{log.read_text()}")
        if b"rota is up" in log.read_bytes()[offset:]:
            token = (data_dir / "admin.token").read_text().strip()
            return Stack(proc, data_dir, url, token, log)
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"rota up did not start within {timeout}s:\n{log.read_text()}")


def stop_stack(stack: Stack, timeout: float = 30.0) -> int:
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGTERM)
    return stack.proc.wait(timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("rota-up"))
    yield s
    stop_stack(s)


def wait_for(fn, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = [int(p) for p in out]
    for child in list(found):
        found += descendants(child)
    return found
