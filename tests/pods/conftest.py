"""Fixtures of the pods tests: test pod scripts (run with sys.executable), a
config written from TOML text, and a PodHost that is always stopped."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rota.pods.config import PodsConfig, loads_config
from rota.pods.host import PodHost
from rota.pods.replicaset import Backoff

PODS = Path(__file__).parent / "pods"
FIXTURES = Path(__file__).parent / "fixtures"

#: Fast restarts, so crash tests take seconds.
TEST_BACKOFF = Backoff(initial=0.1, factor=2.0, maximum=2.0, stable_after=5.0)


def script(name: str) -> str:
    return str(PODS / name)


def task_toml(
    name: str,
    pod: str,
    *,
    topics: list[str] = (),  # type: ignore[assignment]
    instances: int = 1,
    mode: str = "round_robin",
    env: dict[str, str] | None = None,
    extra: str = "",
) -> str:
    """One [[tasks]] entry running ``tests/pods/pods/<pod>`` with this Python."""
    env_items = ", ".join(f'{k} = "{v}"' for k, v in (env or {}).items())
    return f"""
[[tasks]]
protocol = "MiclowStdIO"
task_name = "{name}"
command = "{sys.executable}"
args = ["{script(pod)}"]
subscribe_topics = [{", ".join(f'"{t}"' for t in topics)}]
environment_vars = {{ {env_items} }}
{extra}
  [[tasks.lifecycle]]
  desired_instances = {instances}
  mode = "{mode}"
"""


@pytest.fixture
def uniq() -> str:
    """A prefix that keeps this test's topics apart from every other test's
    (they share one nats-server)."""
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
async def start_host(bus) -> AsyncIterator[Callable[..., object]]:  # type: ignore[no-untyped-def]
    """``await start_host(toml_text, **PodHost options)`` → a started PodHost,
    stopped at the end of the test."""
    hosts: list[PodHost] = []

    async def start(text: str | PodsConfig, **options: object) -> PodHost:
        config = text if isinstance(text, PodsConfig) else loads_config(text, path="test.toml")
        options.setdefault("backoff", TEST_BACKOFF)
        options.setdefault("stop_grace", 1.0)
        options.setdefault("echo", lambda line: None)
        host = PodHost(config, **options)  # type: ignore[arg-type]
        hosts.append(host)
        await host.start(bus)
        return host

    yield start
    for host in hosts:
        with contextlib.suppress(Exception):
            await host.stop()


def read_logs(log_dir: Path) -> dict[str, list[str]]:
    """pod id → the lines of its log."""
    return {p.stem: p.read_text().splitlines() for p in log_dir.glob("*.log")}


def all_idle(host: PodHost, task: str, n: int) -> Callable[[], object]:
    async def check() -> bool:
        t = next(t for t in host.status()["tasks"] if t["task"] == task)
        return t["idle"] == n

    return check


def env_with(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}
