"""Pods die with their host: a `rota worker --pods` process SIGKILLed takes its
pod processes with it (issue 15, case 7). Real nats-server, real worker process,
a pod that ignores stdin and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pods.conftest import task_toml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.timeout(120)
def test_a_sigkilled_host_takes_its_pods_with_it(nats_server, tmp_path, uniq):
    pid_file = tmp_path / "pids"
    config = tmp_path / "pods.toml"
    config.write_text(task_toml(f"{uniq}stubborn", "stubborn_pod.py", env={"PID_FILE": pid_file}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    host = subprocess.Popen(
        [sys.executable, "-m", "rota", "worker", "--roles", "execute", "--pods", str(config)]
        + ["--tags", f"{uniq}none", "--node-id", "pods-host"],
        env=env,
        stdout=open(tmp_path / "host.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert host.poll() is None, (tmp_path / "host.log").read_text()
            assert time.monotonic() < deadline, "the pod did not start"
            time.sleep(0.1)
        pod, child = (int(p) for p in pid_file.read_text().split())
        assert _alive(pod) and _alive(child)
        host.kill()
        host.wait()
        deadline = time.monotonic() + 10
        while (_alive(pod) or _alive(child)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pod), "the pod outlived its SIGKILLed host"
        assert not _alive(child), "the pod's child outlived its SIGKILLed host"
    finally:
        if host.poll() is None:
            host.kill()
        for line in pid_file.read_text().split() if pid_file.exists() else []:
            try:
                os.kill(int(line), signal.SIGKILL)
            except ProcessLookupError:
                pass
