"""The wheel registry end to end (seed 003 UC-15): `rota up --no-worker` and two
`rota worker` processes tagged ``a`` and ``b``; wheels built here, uploaded with
`rota wheels` and with the published `pyoco-client` (pyoco-server 0.5.1)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import start_stack, stop_stack, wait_for
from tests.wheels_helpers import build_wheel

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

#: Long on purpose: a new version must arrive through the upload event, not the timer.
SYNC_SECONDS = 20.0


def rota(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rota", *argv], env=env, capture_output=True, text=True, timeout=60
    )


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.stack = start_stack(tmp, "--no-worker")
        self.env = {
            **self.stack.env(),
            "ROTA_WHEEL_SYNC_SECONDS": str(SYNC_SECONDS),
            "ROTA_PYTHON_POOL_SIZE": "1",
            "ROTA_PYOCO_POOL_SIZE": "0",
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def add_worker(self, tag: str) -> subprocess.Popen:
        with open(self.tmp / f"worker-{tag}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rota", "worker", "--node-id", f"n{tag}", "--tags", tag],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
                start_new_session=True,
            )
        self.procs[tag] = proc
        return proc

    def worker(self, tag: str) -> dict | None:
        pid = self.procs[tag].pid
        items = self.stack.client.get("/workers").json()["items"]
        return next((w for w in items if w["pid"] == pid), None)

    def installed(self, tag: str) -> list[tuple[str, str]]:
        w = self.worker(tag) or {}
        wheels = (w.get("wheel_sync") or {}).get("installed_wheels") or []
        return [(x["package_name"], x["package_version"]) for x in wheels]

    def run(self, job: str) -> dict:
        r = self.stack.client.post("/runs", json={"job": job})
        assert r.status_code == 201, r.text
        run_id = r.json()["run_id"]
        return wait_for(
            lambda: (
                body
                if (body := self.stack.client.get(f"/runs/{run_id}").json())["state"]
                in {"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"}
                else None
            ),
            timeout=60,
        )

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        stop_stack(self.stack)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("wheels"))
    try:
        c.add_worker("a")
        c.add_worker("b")
        wait_for(lambda: c.worker("a") and c.worker("b"), timeout=60)
        yield c
    finally:
        c.stop()


def test_tagged_wheels_reach_only_their_workers_and_new_versions_arrive_without_restart(
    cluster, tmp_path
):
    c, client = cluster, cluster.stack.client
    v1 = build_wheel(tmp_path, "e2epkg", "1.0", "v1")
    v2 = build_wheel(tmp_path, "e2epkg", "2.0", "v2")
    r = client.post(
        "/jobs",
        json={"name": "e2e-answer", "kind": "python", "target": "e2epkg:answer", "tags": ["a"]},
    )
    assert r.status_code == 201, r.text
    pid_a = c.procs["a"].pid

    out = rota("wheels", "upload", str(v1), "--tag", "a", "--json", env=c.env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tags"] == ["a"]
    wait_for(lambda: c.installed("a") == [("e2epkg", "1.0")], timeout=30)
    first = c.run("e2e-answer")
    assert first["state"] == "SUCCEEDED" and first["result"] == "v1", first
    assert first["worker_id"] == c.worker("a")["worker_id"]

    # The b worker never installs it; `rota workers` shows both.
    assert c.installed("b") == [] and c.worker("b")["wheel_sync"]["last_result"] == "ok"
    table = rota("workers", env=c.env)
    assert table.returncode == 0 and "e2epkg 1.0" in table.stdout, table

    # v2: the upload event brings it well within one sync interval, no restart.
    uploaded = time.monotonic()
    r = client.post("/wheels", files={"wheel": (v2.name, v2.read_bytes())}, data={"tags": "a"})
    assert r.status_code == 200, r.text
    wait_for(lambda: c.run("e2e-answer")["result"] == "v2", timeout=SYNC_SECONDS)
    assert time.monotonic() - uploaded < SYNC_SECONDS
    assert c.procs["a"].poll() is None and c.worker("a")["pid"] == pid_a
    assert c.installed("b") == []

    again = rota("wheels", "upload", str(v1), "--tag", "a", env=c.env)
    assert again.returncode == 2 and "409" in again.stderr
    assert "current version 2.0" in again.stderr

    gone = rota("wheels", "delete", v2.name, env=c.env)
    assert gone.returncode == 0 and f"deleted {v2.name}" in gone.stdout, gone
    wait_for(lambda: c.run("e2e-answer")["result"] == "v1", timeout=SYNC_SECONDS)
    assert c.installed("a") == [("e2epkg", "1.0")]

    history = rota("wheels", "history", "--json", env=c.env)
    assert history.returncode == 0, history.stderr
    events = [e for e in json.loads(history.stdout) if e["package_name"] == "e2epkg"]
    assert [(e["action"], e["package_version"]) for e in events] == [
        ("delete", "2.0"),
        ("upload", "2.0"),
        ("upload", "1.0"),
    ]
    for e in events:
        assert e["actor"]["username"] == "admin" and e["actor"]["api_key_id"]
        assert e["source"]["remote_addr"] == "127.0.0.1" and e["source"]["user_agent"]
    assert events[1]["source"]["user_agent"].startswith("python-httpx")
    listing = rota("wheels", "history", env=c.env)
    assert "upload" in listing.stdout and "admin" in listing.stdout

    assert client.delete(f"/wheels/{v1.name}").status_code == 200
    wait_for(lambda: c.installed("a") == [], timeout=SYNC_SECONDS)


PYOCO_CLIENT = Path(sys.executable).with_name("pyoco-client")


@pytest.mark.skipif(not PYOCO_CLIENT.exists(), reason="pyoco-server 0.5.1 is not installed")
def test_the_published_pyoco_client_wheel_commands_work_unchanged(cluster, tmp_path):
    c = cluster
    wheel = build_wheel(tmp_path, "pyocopkg", "1.0", "p1")
    base = [str(PYOCO_CLIENT), "--server", c.stack.url, "--api-key", c.stack.token]

    def pyoco(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *argv], capture_output=True, text=True, timeout=60)

    up = pyoco("wheel-upload", "--wheel-file", str(wheel), "--tags", "b")
    assert up.returncode == 0, up.stderr
    stored = json.loads(up.stdout)
    assert stored["name"] == wheel.name and stored["tags"] == ["b"]
    wait_for(lambda: c.installed("b") == [("pyocopkg", "1.0")], timeout=30)
    assert c.installed("a") == []

    listed = pyoco("wheels")
    assert listed.returncode == 0, listed.stderr
    assert wheel.name in {w["name"] for w in json.loads(listed.stdout)}

    again = pyoco("wheel-upload", "--wheel-file", str(wheel), "--tags", "b")
    assert again.returncode == 1 and "409" in again.stderr

    removed = pyoco("wheel-delete", "--name", wheel.name)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout) == {"name": wheel.name, "deleted": True}

    hist = pyoco("wheel-history", "--wheel-name", wheel.name)
    assert hist.returncode == 0, hist.stderr
    events = json.loads(hist.stdout)
    assert [e["action"] for e in events] == ["delete", "upload"]
    assert events[1]["actor"]["api_key_id"] and events[1]["source"]["remote_addr"]
    only = pyoco("wheel-history", "--action", "upload", "--limit", "5")
    assert only.returncode == 0 and {e["action"] for e in json.loads(only.stdout)} == {"upload"}
    wait_for(lambda: c.installed("b") == [], timeout=SYNC_SECONDS)
