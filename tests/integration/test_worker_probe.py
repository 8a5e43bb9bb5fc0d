"""`rota workers ping --local`, the exec probe of a worker pod, run as a real
process against a real worker over mutual TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path

import pytest

from rota.bus.server import free_port
from rota.control.certs import init_certs
from tests.conftest import running_worker

pytestmark = pytest.mark.django_db(transaction=True)


async def _probe(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the probe as the kubelet would: a fresh process with the pod's variables."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rota",
        "workers",
        "ping",
        "--local",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def _pod_env(port: int, tls_dir: Path) -> dict[str, str]:
    # Nothing about NATS or the database: the probe must not need them.
    return {
        "ROTA_GRPC_PORT": str(port),
        "ROTA_TLS_DIR": str(tls_dir),
        "ROTA_NATS_URL": "nats://127.0.0.1:1",
        "ROTA_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
    }


async def test_probe_answers_while_the_worker_runs_and_fails_when_it_is_gone(
    rota_settings, tls_dir
):
    port = free_port()
    settings = dataclasses.replace(rota_settings, grpc_host="0.0.0.0", grpc_port=port)
    async with running_worker(settings, tags=["probe"], executors={}) as w:
        code, out, err = await _probe(_pod_env(port, tls_dir), "--count", "2")
        assert code == 0, err
        assert out.count(f"pong from {w.worker_id} at 127.0.0.1:{port}") == 2
    code, out, err = await _probe(_pod_env(port, tls_dir), "--timeout", "1")
    assert code == 2
    assert "no answer from the local worker" in err and "hint:" in err


async def test_probe_with_another_cas_certificate_fails(rota_settings, tls_dir, tmp_path):
    port = free_port()
    settings = dataclasses.replace(rota_settings, grpc_port=port)
    init_certs(tmp_path / "foreign", ["intruder"])
    async with running_worker(settings, tags=["probe"], executors={}):
        code, _, err = await _probe(_pod_env(port, tmp_path / "foreign"), "--timeout", "1")
    assert code == 2 and "no answer from the local worker" in err


async def test_probe_needs_a_fixed_port(tls_dir):
    code, _, err = await _probe(_pod_env(0, tls_dir))
    assert code == 2
    assert "ROTA_GRPC_PORT is 0" in err
