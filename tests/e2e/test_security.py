"""Issue 13 against a real `rota up` (nats-server, SQLite, web server and worker
as separate processes): watch consumers, the per-token stream cap, consumer
pressure in /health and /metrics."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e

_MAKE_USER = """
import sys, django
django.setup()
from django.contrib.auth.models import Group, User
from rota.models import ApiToken
user, _ = User.objects.get_or_create(username=sys.argv[1])
if len(sys.argv) > 3:
    user.set_password(sys.argv[3]); user.save()
user.groups.add(Group.objects.get(name=sys.argv[2]))
print(ApiToken.issue(user)[1])
"""


def make_user(stack: Stack, username: str, group: str, password: str | None = None) -> str:
    """A user in ``group`` in the stack's database; returns a new API token of it."""
    env = stack.env()
    env.update(DJANGO_SETTINGS_MODULE="rota.standalone.settings", ROTA_DATA_DIR=str(stack.data_dir))
    argv = [sys.executable, "-c", _MAKE_USER, username, group] + ([password] if password else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


async def consumer_count(stack: Stack) -> int:
    """Consumers the NATS account has, read from the server itself."""
    import nats

    env = stack.env()
    nc = await nats.connect(env["ROTA_NATS_URL"], token=env.get("ROTA_NATS_TOKEN") or None)
    try:
        return (await nc.jetstream().account_info()).consumers
    finally:
        await nc.close()


def _job_and_runs(stack: Stack) -> tuple[str, str]:
    """A finished run and a running one (a sleep of ten minutes)."""
    c = stack.client
    for name, args in (
        ("sec-done", ["-c", "pass"]),
        ("sec-long", ["-c", "import time; time.sleep(600)"]),
    ):
        r = c.post(
            "/jobs", json={"name": name, "kind": "command", "target": sys.executable, "args": args}
        )
        assert r.status_code in (201, 409), r.text
    done = c.post("/runs", json={"job": "sec-done"}).json()["run_id"]
    wait_for(lambda: c.get(f"/runs/{done}").json()["state"] == "SUCCEEDED", timeout=60)
    running = c.post("/runs", json={"job": "sec-long"}).json()["run_id"]
    wait_for(lambda: c.get(f"/runs/{running}").json()["state"] == "RUNNING", timeout=60)
    return done, running


async def _open_and_drop(client: httpx.AsyncClient, run_id: str) -> int:
    """Open a watch, read its first frame, drop the connection; -1 when the
    server broke the stream off or sent no snapshot."""
    try:
        async with client.stream("GET", f"/runs/{run_id}/watch", params={"heartbeat": 30}) as r:
            if r.status_code != 200:
                return r.status_code
            async for chunk in r.aiter_bytes():
                if b"event: snapshot" in chunk:
                    return 200
    except httpx.RemoteProtocolError:
        pass
    return -1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_thousand_dropped_watches_leave_no_consumers_behind(stack):
    viewer = make_user(stack, "sec-viewer", "ops_view")
    done, running = _job_and_runs(stack)
    before = asyncio.run(consumer_count(stack))

    async def storm() -> list[int]:
        headers = {"Authorization": f"Bearer {viewer}"}
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(
            base_url=stack.url, headers=headers, timeout=30, limits=limits
        ) as client:
            sem = asyncio.Semaphore(8)  # under the per-token cap

            async def one(i: int) -> int:
                async with sem:
                    return await _open_and_drop(client, done if i % 2 else running)

            return await asyncio.gather(*(one(i) for i in range(2000)))

    t0 = time.monotonic()
    statuses = asyncio.run(storm())
    took = time.monotonic() - t0
    assert statuses.count(200) == 2000, {s: statuses.count(s) for s in set(statuses)}

    # Within 10 s the server's consumer count is back where it was.
    deadline = time.monotonic() + 10
    while (now := asyncio.run(consumer_count(stack))) > before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert now <= before, f"{now} consumers, {before} before 2,000 watches ({took:.1f} s)"
    print(f"2,000 watches in {took:.1f} s; consumers {before} before, {now} after")

    # And a watch opened afterwards still delivers frames.
    c = stack.client
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {viewer}"}) as v:
        with v.stream("GET", f"/runs/{running}/watch", params={"heartbeat": 0.5}) as r:
            assert r.status_code == 200
            seen = b""
            for chunk in r.iter_bytes():
                seen += chunk
                if b"event: heartbeat" in seen:
                    break
    assert b"event: snapshot" in seen and b'"RUNNING"' in seen
    assert c.post(f"/runs/{running}/cancel").status_code == 200


def test_streams_per_token_are_capped_with_429(stack):
    token = make_user(stack, "sec-capped", "ops_view")
    done, running = _job_and_runs(stack)
    health = httpx.get(stack.url + "/health").json()
    cap = health["streams_per_token"]

    async def hold() -> tuple[list[int], int, int]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30) as client:
            opened = []
            statuses = []
            for _ in range(cap + 1):
                cm = client.stream("GET", f"/runs/{running}/watch", params={"heartbeat": 30})
                r = await cm.__aenter__()
                statuses.append(r.status_code)
                if r.status_code == 429:
                    body = (await r.aread()).decode()
                    assert "streams" in body, body
                    await cm.__aexit__(None, None, None)
                else:
                    opened.append(cm)
            # A log tail counts against the same cap.
            async with client.stream("GET", f"/runs/{running}/logs/tail") as tail:
                tail_status = tail.status_code
            # Another token is not affected.
            other = await client.get(
                f"/runs/{done}/watch", headers={"Authorization": f"Bearer {stack.token}"}
            )
            for cm in opened:
                await cm.__aexit__(None, None, None)
            return statuses, tail_status, other.status_code

    statuses, tail_status, other = asyncio.run(hold())
    assert statuses[:cap] == [200] * cap and statuses[cap] == 429, statuses
    assert tail_status == 429 and other == 200

    # Once they are closed, the token may watch again.
    def again():
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}) as v:
            return v.get(f"/runs/{done}/watch").status_code == 200

    wait_for(again, timeout=10)


def test_health_and_metrics_show_consumer_pressure(stack):
    body = httpx.get(stack.url + "/health").json()
    assert body["consumers"]["count"] >= 1 and body["consumers"]["limit"] >= 1
    assert body["open_streams"] >= 0
    metrics = stack.client.get("/metrics").text
    assert "rota_nats_consumers " in metrics
    assert "rota_nats_consumers_limit " in metrics
    assert "rota_sse_streams_open " in metrics


def _mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def _loose(root: Path) -> list[str]:
    """Everything under ``root`` (itself included) that another local user could read."""
    found = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = _mode(path)
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return found


def test_the_data_dir_is_private_at_every_start(tmp_path):
    from tests.e2e.conftest import start_stack, stop_stack

    stack = start_stack(tmp_path)
    try:
        # A watch and a login make sure the database, its WAL and a session exist.
        assert stack.client.get("/runs").status_code == 200
    finally:
        stop_stack(stack)
    # Another tool (or an older rota) left it readable by everyone.
    for path in [stack.data_dir, *stack.data_dir.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    stack = start_stack(tmp_path)
    try:
        assert stack.client.get("/runs").status_code == 200
        assert _loose(stack.data_dir) == []
        assert (stack.data_dir / "rota.sqlite3").exists()
    finally:
        stop_stack(stack)
    assert _loose(stack.data_dir) == []


def test_certs_init_makes_its_dir_private(tmp_path):
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o755)
    tls.chmod(0o755)
    (tls / "notes.txt").write_text("left here")
    (tls / "notes.txt").chmod(0o644)
    out = subprocess.run(
        [sys.executable, "-m", "rota", "certs", "init", "--dir", str(tls), "--node", "n1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert _loose(tls) == []
