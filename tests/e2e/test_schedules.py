"""Schedules and events end to end: real processes, the leader SIGKILLed mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_failover import cluster  # noqa: F401  (3 workers over 2 nodes)

pytestmark = pytest.mark.e2e


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_every_minute_for_three_minutes_with_the_leader_killed(cluster, tmp_path):  # noqa: F811
    c = cluster.stack.client
    assert (
        c.post("/jobs", json={"name": "tick", "kind": "command", "target": "true"}).status_code
        == 201
    )
    env = cluster.stack.env()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rota",
            "schedules",
            "add",
            "tick",
            "--every",
            "minutes:1",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    schedule = json.loads(out.stdout)
    first_nominal = datetime.fromisoformat(
        schedule["next_fire_at"].replace("Z", "+00:00")
    ).timestamp()
    nominals = [first_nominal + 60 * i for i in range(3)]

    def runs():
        return [r for r in c.get("/runs", params={"job": "tick", "limit": 50}).json()["items"]]

    # After the first tick's run finished, kill the leader (killing it while it
    # holds the next run would make that run late by the supervision delay).
    wait_for(lambda: (rs := runs()) and rs[-1]["state"] == "SUCCEEDED", timeout=90, interval=0.5)
    leader = cluster.leader()["leader"]
    pid = next(w["pid"] for w in cluster.workers() if w["worker_id"] == leader["worker_id"])
    os.kill(pid, signal.SIGKILL)
    time.sleep(max(0.0, nominals[-1] - time.time()) + 3)
    done = wait_for(
        lambda: (
            (rs := runs()) and len(rs) >= 3 and all(r["state"] == "SUCCEEDED" for r in rs) and rs
        ),
        timeout=30,
        interval=0.5,
    )
    time.sleep(2)
    assert len(runs()) == 3  # exactly one run per tick, none twice across the takeover
    started = sorted(r["started_at"] for r in done)
    lateness = [
        datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() - n
        for s, n in zip(started, nominals, strict=True)
    ]
    print(f"\nstart lateness per tick: {[f'{x * 1000:.0f} ms' for x in lateness]}")
    assert all(-0.05 <= x < 1.0 for x in lateness), lateness
    sched = c.get(f"/schedules/{schedule['id']}").json()
    assert sched["fired_count"] == 3 and sched["missed_count"] == 0


def test_the_same_event_twice_runs_each_subscriber_once(cluster):  # noqa: F811
    c = cluster.stack.client
    for name in ("invoice", "notify"):
        r = c.post(
            "/jobs",
            json={
                "name": name,
                "kind": "command",
                "target": "true",
                "subscribed_events": ["paid"],
                # A command job takes only the params its schema declares.
                "params_schema": {"type": "object", "properties": {"order": {"type": "integer"}}},
            },
        )
        assert r.status_code == 201
    env = cluster.stack.env()
    send = [
        sys.executable,
        "-m",
        "rota",
        "events",
        "send",
        "paid",
        "--payload",
        '{"order": 9}',
        "--dedupe-key",
        "pay-9",
        "--json",
    ]
    first = json.loads(
        subprocess.run(send, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    )
    second = json.loads(
        subprocess.run(send, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    )
    assert first["id"] == second["id"] and len(first["runs"]) == 2
    for run in first["runs"]:
        done = wait_for(
            lambda rid=run["run_id"]: (
                (x := c.get(f"/runs/{rid}").json())["state"] == "SUCCEEDED" and x
            )
        )
        assert done["params"] == {"order": 9}
    assert sum(len(e["runs"]) for e in c.get("/events").json()["items"]) == 2
