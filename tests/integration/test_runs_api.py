"""The runs API of seed 003 on real NATS, SQL and a real worker: list filters
and cursor, the SSE watch, output (live, recorded, archived) and its live tail."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from rota.domain.ids import new_run_id
from rota.domain.states import RunState
from rota.models import JobDefinition, JobRun, RunLog, Schedule
from rota.worker.executors.command import CommandExecutor
from rota.worker.executors.python import PythonExecutor
from tests.conftest import eventually, running_worker
from tests.integration.test_events import client  # noqa: F401  (the authorised API client)

pytestmark = pytest.mark.django_db(transaction=True)

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "SKIPPED"}


@pytest.fixture
async def worker(rota_settings):
    executors = {"command": CommandExecutor(kill_grace=0.5), "python": PythonExecutor(size=1)}
    async with running_worker(rota_settings, tags=["streams"], executors=executors) as w:
        yield w


def parse_sse(raw: bytes) -> list[dict]:
    """Frames of an event stream: [{"id", "event", "data"}]."""
    frames = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        frame: dict = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            frame[name] = orjson.loads(value) if name == "data" else value
        frames.append(frame)
    return frames


async def read_stream(client, path: str, last_event_id: str | None = None) -> list[dict]:  # noqa: F811
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/event-stream"
    body = b""
    async for part in response.streaming_content:
        body += part
    return parse_sse(body)


async def _submit(client, name: str, script: str) -> str:  # noqa: F811
    await JobDefinition.objects.acreate(
        name=name, kind="command", target=sys.executable, args=["-c", script], tags=["streams"]
    )
    r = await client.post("/runs", {"job": name, "tag": "streams"}, content_type="application/json")
    assert r.status_code == 201, r.content
    return r.json()["run_id"]


async def test_list_filters_by_flow_schedule_and_updated_after_with_one_shape(client):  # noqa: F811
    job = await JobDefinition.objects.acreate(name="lister", kind="command", target="true")
    sched = await Schedule.objects.acreate(job=job, cron="0 * * * *")
    old = datetime.now(UTC) - timedelta(hours=2)
    ids = {}
    for label, extra in {
        "plain": {},
        "flowed": {"flow_name": "etl"},
        "scheduled": {"schedule": sched},
        "old": {"updated_at": old},
    }.items():
        ids[label] = new_run_id()
        await JobRun.objects.acreate(
            id=ids[label], job=job, job_name="lister", kind="command", **extra
        )

    async def listed(**params) -> list[str]:
        r = await client.get("/runs", {"job": "lister", **params})
        assert r.status_code == 200, r.content
        assert set(r.json()) == {"items", "next_cursor"}
        return [item["run_id"] for item in r.json()["items"]]

    assert await listed(flow="etl") == [ids["flowed"]]
    assert await listed(schedule=sched.id) == [ids["scheduled"]]
    recent = await listed(updated_after=(old + timedelta(minutes=1)).isoformat())
    assert ids["old"] not in recent and len(recent) == 3
    # Newest first, and a cursor walks the rest without repeats.
    first = await client.get("/runs", {"job": "lister", "limit": 2})
    page = first.json()
    assert [i["run_id"] for i in page["items"]] == sorted(ids.values(), reverse=True)[:2]
    rest = await listed(cursor=page["next_cursor"], limit=10)
    assert rest == sorted(ids.values(), reverse=True)[2:]
    # An unknown filter value is an empty page; malformed input is a 422 with detail.
    assert await listed(flow="nothing-like-this") == []
    bad = await client.get("/runs", {"updated_after": "yesterday"})
    assert bad.status_code == 422 and "detail" in bad.json()
    bad = await client.get("/runs", {"cursor": "!!"})
    assert bad.status_code == 422 and "cursor" in str(bad.json()["detail"])


async def test_watch_streams_snapshots_until_terminal_and_resumes_without_repeats(
    client,  # noqa: F811
    worker,
):
    run_id = await _submit(client, "watched", "import time; time.sleep(0.6); print('done')")
    frames = await read_stream(client, f"/runs/{run_id}/watch?heartbeat=0.2")
    snapshots = [f for f in frames if f["event"] == "snapshot"]
    states = [f["data"]["state"] for f in snapshots]
    assert states[-1] == "SUCCEEDED" and "RUNNING" in states
    assert all(s not in TERMINAL for s in states[:-1])  # the stream ends at the terminal one
    ids = [int(f["id"]) for f in snapshots]
    assert ids == sorted(set(ids))
    # While the run slept, heartbeats repeated the last id sent.
    beats = [f for f in frames if f["event"] == "heartbeat"]
    assert beats and all(int(b["id"]) in ids for b in beats)
    # Reconnecting after the first frame repeats nothing already delivered ...
    again = await read_stream(client, f"/runs/{run_id}/watch", last_event_id=str(ids[0]))
    resumed = [int(f["id"]) for f in again if f["event"] == "snapshot"]
    assert resumed == ids[1:]
    # ... and after the terminal one there is nothing left to send.
    assert await read_stream(client, f"/runs/{run_id}/watch", last_event_id=str(ids[-1])) == []


async def test_watch_of_a_run_whose_snapshot_expired_sends_the_row_once(client):  # noqa: F811
    job = await JobDefinition.objects.acreate(name="ancient", kind="command", target="true")
    run_id = new_run_id()
    await JobRun.objects.acreate(
        id=run_id, job=job, job_name="ancient", kind="command", state=RunState.SUCCEEDED, version=7
    )
    frames = await read_stream(client, f"/runs/{run_id}/watch")
    assert [(f["event"], f["id"], f["data"]["state"]) for f in frames] == [
        ("snapshot", "7", "SUCCEEDED")
    ]
    missing = await client.get("/runs/nope/watch")
    assert missing.status_code == 404 and "detail" in missing.json()
    bad = await client.get(f"/runs/{run_id}/watch", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422


@pytest.mark.parametrize("kind", ["command", "python"])
async def test_live_tail_then_recorded_logs(client, worker, kind):  # noqa: F811
    if kind == "command":
        script = (
            "import sys, time\n"
            "print('first', flush=True)\n"
            "print('oops', file=sys.stderr, flush=True)\n"
            "time.sleep(0.8)\n"
            "print('second', flush=True)\n"
        )
        run_id = await _submit(client, "chatty", script)
    else:
        await JobDefinition.objects.acreate(
            name="chatty-py", kind="python", target="tests.helpers_jobs:chatty", tags=["streams"]
        )
        r = await client.post(
            "/runs", {"job": "chatty-py", "tag": "streams"}, content_type="application/json"
        )
        run_id = r.json()["run_id"]

    async def running_with_output():
        r = await client.get(f"/runs/{run_id}/logs")
        body = r.json()
        return body if body["source"] == "live" and "first" in body["stdout"] else None

    live = await eventually(running_with_output, timeout=10)
    assert "second" not in live["stdout"] and live["attempt"] == 1

    frames = await read_stream(client, f"/runs/{run_id}/logs/tail?heartbeat=0.3")
    logs = [f for f in frames if f["event"] == "log"]
    assert frames[-1]["event"] == "end"
    stdout = "".join(f["data"]["data"] for f in logs if f["data"]["stream"] == "stdout")
    stderr = "".join(f["data"]["data"] for f in logs if f["data"]["stream"] == "stderr")
    assert stdout == "first\nsecond\n" and stderr == "oops\n"
    # Resuming after the first chunk repeats nothing.
    ids = [int(f["id"]) for f in logs]
    again = await read_stream(
        client, f"/runs/{run_id}/logs/tail?heartbeat=0.3", last_event_id=str(ids[0])
    )
    assert [int(f["id"]) for f in again if f["event"] == "log"] == ids[1:]

    async def recorded():
        body = (await client.get(f"/runs/{run_id}/logs")).json()
        return body if body["source"] == "database" else None

    done = await eventually(recorded, timeout=10)
    assert done["stdout"] == "first\nsecond\n" and done["stderr"] == "oops\n"


async def test_logs_past_retention_move_to_the_object_store(bus, client):  # noqa: F811
    from rota.runs.logs import LogArchiver

    job = await JobDefinition.objects.acreate(name="aged", kind="command", target="true")
    run_id = new_run_id()
    await JobRun.objects.acreate(
        id=run_id, job=job, job_name="aged", kind="command", state=RunState.SUCCEEDED, attempt=2
    )
    old = datetime.now(UTC) - timedelta(days=8)
    for attempt, text in ((1, "first try\n"), (2, "second try\n")):
        await RunLog.objects.acreate(
            run_id=run_id, attempt=attempt, stream="stdout", data=text, created_at=old
        )
    fresh_id = new_run_id()
    await JobRun.objects.acreate(id=fresh_id, job=job, job_name="aged", kind="command")
    await RunLog.objects.acreate(run_id=fresh_id, stream="stdout", data="recent\n")

    archiver = LogArchiver(bus.js, lambda: 7)
    assert await archiver.step()
    assert not await archiver.step()  # nothing left past the period
    row = await JobRun.objects.aget(id=run_id)
    assert row.log_ref == f"rota_logs/{run_id}"
    assert not await RunLog.objects.filter(run_id=run_id).aexists()
    assert await RunLog.objects.filter(run_id=fresh_id).aexists()  # within the period

    body = (await client.get(f"/runs/{run_id}/logs")).json()
    assert (body["source"], body["attempt"], body["stdout"]) == ("archive", 2, "second try\n")
    body = (await client.get(f"/runs/{run_id}/logs", {"attempt": 1})).json()
    assert body["stdout"] == "first try\n"
    await asyncio.sleep(0)


async def test_inputs_schemathesis_found_are_4xx_with_detail(client):  # noqa: F811
    """Each of these was a 500 (found by bench/schemathesis_api.py)."""
    r = await client.post(
        "/jobs",
        {"name": "huge", "kind": "command", "target": "true", "default_params": {"n": -(2**70)}},
        content_type="application/json",
    )
    assert r.status_code == 422 and "64-bit" in r.json()["detail"]
    await JobDefinition.objects.acreate(name="patched", kind="command", target="true")
    for field in ("target", "args", "enabled", "default_params"):
        r = await client.client.patch(
            "/jobs/patched",
            {field: None},
            content_type="application/json",
            headers=client.auth,
        )
        assert r.status_code == 422 and field in r.json()["detail"], (field, r.content)
    r = await client.get("/runs", {"schedule": str(-(2**70))})
    assert r.status_code == 422
    r = await client.client.patch(
        "/settings",
        {"grpc_timeout_seconds": 5e-324},
        content_type="application/json",
        headers=client.auth,
    )
    assert r.status_code == 422


async def test_watch_of_a_held_run_ends_when_it_is_cancelled(client):  # noqa: F811
    """A run held by the queue policy has no snapshot; its cancel happens in SQL."""
    job = await JobDefinition.objects.acreate(name="held", kind="command", target="true")
    # Held behind an earlier run of the same key that still goes, as the queue
    # policy holds it (a leader's scheduler would release it otherwise).
    await JobRun.objects.acreate(
        id=new_run_id(), job=job, job_name="held", kind="command", state=RunState.RUNNING
    )
    run_id = new_run_id()
    await JobRun.objects.acreate(id=run_id, job=job, job_name="held", kind="command", held=True)

    async def cancel_soon():
        await asyncio.sleep(0.5)
        r = await client.post(f"/runs/{run_id}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "CANCELLED"

    canceller = asyncio.ensure_future(cancel_soon())
    frames = await asyncio.wait_for(
        read_stream(client, f"/runs/{run_id}/watch?heartbeat=0.3"), timeout=10
    )
    await canceller
    assert frames[-1]["event"] == "snapshot" and frames[-1]["data"]["state"] == "CANCELLED"
    bad = await client.get(f"/runs/{run_id}/watch", headers={"Last-Event-ID": "²"})
    assert bad.status_code == 422


async def test_reconnecting_while_the_run_goes_repeats_nothing(client, worker):  # noqa: F811
    """Leave the stream at the RUNNING snapshot, reconnect with its id while the
    run still goes: only later snapshots come, the terminal one last."""
    run_id = await _submit(client, "resumed", "import time; time.sleep(1.0)")
    response = await client.get(f"/runs/{run_id}/watch?heartbeat=0.2")
    body, left_at = b"", None
    async for part in response.streaming_content:
        body += part
        running = [
            f
            for f in parse_sse(body)
            if f["event"] == "snapshot" and f["data"]["state"] == "RUNNING"
        ]
        if running:
            left_at = int(running[0]["id"])
            break
    await response.streaming_content.aclose()
    assert left_at is not None
    assert (await JobRun.objects.aget(id=run_id)).state != "SUCCEEDED"  # still going
    again = await read_stream(client, f"/runs/{run_id}/watch", last_event_id=str(left_at))
    snapshots = [f for f in again if f["event"] == "snapshot"]
    assert snapshots and all(int(f["id"]) > left_at for f in snapshots)
    assert snapshots[-1]["data"]["state"] == "SUCCEEDED"
