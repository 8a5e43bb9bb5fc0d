"""Pyoco flows end to end: the HTTP API in process, real NATS, real SQL, a real
worker with the pyoco executor (rota.contrib.example_flows)."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from rota.domain.snapshot import RunSnapshot
from rota.domain.states import RunState
from rota.flows import FLOW_YAML_LIMIT
from rota.models import JobRun
from rota.worker.executors.pyoco import PyocoExecutor
from tests.conftest import eventually, running_worker
from tests.integration.test_events import Authorized, _issue, _join

pytestmark = pytest.mark.django_db(transaction=True)

MODULES = ["rota.contrib.example_flows"]

ETL_YAML = """\
version: 1
flow:
  graph: |
    extract >> transform >> load
  defaults:
    count: 4
"""

#: A few hundred bytes whose aliases expand tenfold per level (to 100 KB of JSON here;
#: a few levels more reach gigabytes).
ALIAS_BOMB = """\
flow:
  graph: extract
  defaults:
    a: &a "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
"""

TERMINAL = {RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED}


@pytest.fixture
def flow_settings(rota_settings):
    from rota.conf import reload_settings

    os.environ["ROTA_FLOW_MODULES"] = ",".join(MODULES)
    yield reload_settings()
    del os.environ["ROTA_FLOW_MODULES"]
    reload_settings()


@pytest.fixture
async def worker(flow_settings):
    executors = {"pyoco": PyocoExecutor(MODULES, size=1, cancel_grace=0.5)}
    async with running_worker(flow_settings, tags=["flows"], executors=executors) as w:
        yield w


@pytest.fixture
async def client(bus, flow_settings):
    from django.contrib.auth import get_user_model

    user = await get_user_model().objects.acreate(username="flows-tester")
    await _join(user, "ops_operator")
    _, raw = await _issue(user)
    return Authorized(raw)


async def _final(client, run_id: str) -> dict:
    async def done():
        r = await client.get(f"/runs/{run_id}", {"include": "records"})
        body = r.json()
        return body if body["state"] in TERMINAL else None

    return await eventually(done, timeout=20)  # type: ignore[return-value]


async def _projected(run_id: str) -> JobRun:
    async def done():
        row = await JobRun.objects.aget(id=run_id)
        return row if row.state in TERMINAL else None

    return await eventually(done, timeout=20)  # type: ignore[return-value]


async def test_flow_by_name_succeeds_with_task_states_and_records(client, worker):
    r = await client.post(
        "/runs",
        {"flow_name": "etl", "params": {"count": 3}, "tag": "flows"},
        content_type="application/json",
    )
    assert r.status_code == 201, r.content
    run_id = r.json()["run_id"]
    assert r.json()["flow_name"] == "etl"

    run = await _final(client, run_id)
    assert run["state"] == RunState.SUCCEEDED
    assert run["status"] == "COMPLETED"
    assert run["tasks"] == {"extract": "SUCCEEDED", "transform": "SUCCEEDED", "load": "SUCCEEDED"}
    assert run["task_records"]["load"]["output"] == {"rows": 3, "total": 60}
    assert run["task_records"]["transform"]["inputs"] == {"extract": [1, 2, 3]}
    assert run["task_records_truncated"] is False

    tasks = await client.get(f"/runs/{run_id}/tasks")
    assert tasks.status_code == 200
    assert tasks.json()["tasks"]["load"] == "SUCCEEDED"
    assert tasks.json()["task_records"] is None  # only when asked
    with_records = await client.get(f"/runs/{run_id}/tasks", {"include": "records"})
    assert with_records.json()["task_records"]["extract"]["output"] == [1, 2, 3]

    row = await _projected(run_id)  # the projector copies tasks and records to SQL
    assert row.tasks == run["tasks"]
    assert row.task_records["load"]["output"] == {"rows": 3, "total": 60}


async def test_flow_yaml_succeeds_and_is_kept_on_the_run(client, worker):
    upload = SimpleUploadedFile("flow.yaml", ETL_YAML.encode(), content_type="application/yaml")
    r = await client.post(
        "/runs/yaml", {"flow": upload, "params": '{"extra": true}', "tag": "flows"}
    )
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["workflow_yaml_bytes"] == len(ETL_YAML.encode())
    assert body["params"] == {"count": 4, "extra": True}  # flow.defaults under the given params

    run = await _final(client, body["run_id"])
    assert run["state"] == RunState.SUCCEEDED, run["error"]
    assert run["tasks"] == {"extract": "SUCCEEDED", "transform": "SUCCEEDED", "load": "SUCCEEDED"}
    assert run["task_records"]["load"]["output"] == {"rows": 4, "total": 100}
    row = await JobRun.objects.aget(id=body["run_id"])
    assert row.flow_yaml == ETL_YAML


async def test_failing_task_fails_the_run_with_its_error_in_the_record(client, worker):
    r = await client.post(
        "/runs", {"flow_name": "failing", "tag": "flows"}, content_type="application/json"
    )
    assert r.status_code == 201, r.content
    run = await _final(client, r.json()["run_id"])
    assert run["state"] == RunState.FAILED
    assert run["tasks"]["prepare"] == "SUCCEEDED"
    assert run["tasks"]["explode"] == "FAILED"
    assert run["task_records"]["explode"]["error"] == "boom after ready"
    assert "ValueError" in run["task_records"]["explode"]["traceback"]
    assert "explode" in run["error_summary"] and "boom after ready" in run["error_summary"]


async def test_cancel_of_a_running_flow_ends_cancelled(client, worker):
    r = await client.post(
        "/runs",
        {"flow_name": "sleepy", "params": {"seconds": 30}, "tag": "flows"},
        content_type="application/json",
    )
    run_id = r.json()["run_id"]

    async def napping():
        body = (await client.get(f"/runs/{run_id}")).json()
        return body if body["tasks"].get("nap") == "RUNNING" else None

    await eventually(napping, timeout=10)  # progress reached the snapshot while running
    loop = asyncio.get_running_loop()
    started = loop.time()
    c = await client.post(f"/runs/{run_id}/cancel")
    assert c.status_code == 200
    run = await _final(client, run_id)
    assert run["state"] == RunState.CANCELLED
    # The nap does not stop for Engine.cancel: killed after the 0.5 s grace, not after 30 s.
    assert loop.time() - started < 15
    assert run["tasks"] == {"nap": "CANCELLED", "wake": "CANCELLED"}


async def test_unknown_flow_is_404_and_both_or_neither_is_422(client):
    r = await client.post("/runs", {"flow_name": "nope"}, content_type="application/json")
    assert r.status_code == 404
    assert "nope" in r.json()["detail"]
    r = await client.post(
        "/runs", {"flow_name": "etl", "job": "x"}, content_type="application/json"
    )
    assert r.status_code == 422
    r = await client.post("/runs", {"params": {}}, content_type="application/json")
    assert r.status_code == 422
    r = await client.post(
        "/runs", {"flow_name": "etl", "params": [1]}, content_type="application/json"
    )
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("flow: [unclosed", "invalid flow.yaml"),
        ("version: 1\n", "needs 'flow:'"),
        ("flow:\n  graph: extract >> missing\n", "unknown task 'missing'"),
        ("flow:\n  graph: a\ntasks:\n  a:\n    callable: os:system\n", "not a registered task"),
        (
            "flow:\n  graph: extract\ntasks:\n  extract:\n    inputs:\n      count: $env.HOME\n",
            "$env",
        ),
        (
            'flow:\n  graph: extract\ntasks:\n  extract:\n    inputs: {count: "\\x24env.HOME"}\n',
            "$env",
        ),
        ("flow:\n  graph: a\ntasks:\n  a:\n    use: [1]\n", "task 'a': 'use'"),
        ("flow:\n  graph: a\ntasks:\n  a:\n    callable: {b: 1}\n", "task 'a': 'callable'"),
        (ALIAS_BOMB, "aliases"),
    ],
)
async def test_bad_flow_yaml_is_422(client, text, detail):
    upload = SimpleUploadedFile("flow.yaml", text.encode())
    r = await client.post("/runs/yaml", {"flow": upload})
    assert r.status_code == 422, r.content
    assert detail in r.json()["detail"]
    assert await JobRun.objects.acount() == 0


async def test_too_large_flow_yaml_is_413(client):
    text = ETL_YAML + "#" * FLOW_YAML_LIMIT
    r = await client.post("/runs/yaml", {"file": SimpleUploadedFile("flow.yaml", text.encode())})
    assert r.status_code == 413
    assert "larger than" in r.json()["detail"]


async def test_bad_params_of_an_upload_are_422(client):
    upload = SimpleUploadedFile("flow.yaml", ETL_YAML.encode())
    r = await client.post("/runs/yaml", {"flow": upload, "params": "{not json"})
    assert r.status_code == 422
    assert r.json()["field"] == "params"


async def test_params_merged_over_the_defaults_are_size_checked_too(client):
    text = f"flow:\n  graph: extract\n  defaults:\n    big: {'y' * 40_000}\n"
    params = orjson.dumps({"more": "z" * 40_000}).decode()
    r = await client.post(
        "/runs/yaml", {"flow": SimpleUploadedFile("flow.yaml", text.encode()), "params": params}
    )
    assert r.status_code == 422, r.content
    assert "merged over the flow's defaults" in r.json()["detail"]
    assert await JobRun.objects.acount() == 0


async def test_an_abandoned_run_writes_no_progress_after_it_ends(flow_settings):
    executor = PyocoExecutor(MODULES, size=0, progress_interval=0.05)
    in_flight = asyncio.Event()
    written: list[dict[str, str]] = []

    async def report(run_id, tasks, records, truncated):
        in_flight.set()
        await asyncio.sleep(0.3)  # a slow write to the run's snapshot
        written.append(tasks)

    executor.bind_progress(report)
    snap = RunSnapshot(
        run_id="abandoned",
        job="",
        kind="pyoco",
        target="sleepy",
        flow_name="sleepy",
        params={"seconds": 30},
    )
    run = asyncio.create_task(executor.run(snap, asyncio.Event()))
    try:
        await asyncio.wait_for(in_flight.wait(), timeout=10)
        run.cancel()  # e.g. the worker task torn down mid-run
        with pytest.raises(asyncio.CancelledError):
            await run
        await asyncio.sleep(0.5)
        assert written == []
    finally:
        await executor.close()


async def test_watch_shows_task_progress_before_the_end(client, worker):
    from tests.integration.test_runs_api import read_stream

    r = await client.post(
        "/runs",
        {"flow_name": "sleepy", "params": {"seconds": 1.0}, "tag": "flows"},
        content_type="application/json",
    )
    assert r.status_code == 201, r.content
    frames = await read_stream(client, f"/runs/{r.json()['run_id']}/watch?heartbeat=0.5")
    snapshots = [f["data"] for f in frames if f["event"] == "snapshot"]
    assert snapshots[-1]["tasks"] == {"nap": "SUCCEEDED", "wake": "SUCCEEDED"}
    # While nap slept, a snapshot already showed it going and wake not done.
    assert any(
        s["state"] == "RUNNING"
        and s["tasks"].get("nap") == "RUNNING"
        and s["tasks"]["wake"] != "SUCCEEDED"
        for s in snapshots[:-1]
    ), [s["tasks"] for s in snapshots]
