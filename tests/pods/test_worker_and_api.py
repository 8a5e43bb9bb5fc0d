"""Pods hosted by a worker (`rota worker --pods`), reached through the HTTP API
and through a `pod` job: real worker, real NATS, real pod processes."""

from __future__ import annotations

import pytest

from rota.domain.states import RunState
from rota.models import JobDefinition
from rota.pods.config import loads_config
from rota.runs.service import RunRequest, RunService
from rota.runs.transitions import RunStore
from rota.worker.daemon import Worker
from tests.conftest import eventually
from tests.integration.test_events import client  # noqa: F401  (the authorised API client)
from tests.pods.conftest import task_toml

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def pod_worker(rota_settings, bus, uniq):
    config = loads_config(
        task_toml(
            f"{uniq}echo",
            "echo_pod.py",
            topics=[f"{uniq}.ask"],
            env={"POD_REPLY": "echo"},
            instances=2,
        ),
        path="test.toml",
    )
    w = Worker(rota_settings, tags=[f"{uniq}pods"], roles={"execute"}, pods_config=config)
    await w.start()
    yield w
    await w.shutdown(grace=1)


async def test_http_message_to_a_pod_topic_gets_its_result(pod_worker, client, uniq):  # noqa: F811
    async def answered():
        r = await client.post(
            f"/topics/{uniq}.ask/messages",
            {"data": "ping", "wait_result": 2},
            content_type="application/json",
        )
        return r if r.status_code == 200 else None

    r = await eventually(answered, timeout=15, interval=0.2)
    assert r.json() == {"topic": f"{uniq}.ask", "result": "ping"}
    fire_and_forget = await client.post(
        f"/topics/{uniq}.ask/messages", {"data": "x"}, content_type="application/json"
    )
    assert fire_and_forget.status_code == 202
    bad = await client.post(
        f"/topics/{uniq}.ask/messages",
        {"data": "x", "wait_result": 0},
        content_type="application/json",
    )
    assert bad.status_code == 422
    assert pod_worker.status()["pods"]["tasks"]


async def test_a_pod_job_ends_with_the_pods_result(pod_worker, bus, uniq):
    job = await JobDefinition.objects.acreate(
        name=f"{uniq}podjob",
        kind="pod",
        target=f"{uniq}.ask",
        tags=[f"{uniq}pods"],
        timeout_seconds=10,
    )
    run, _ = await RunService(bus).submit(RunRequest(job=job, params={"n": 1}))
    store = RunStore(bus.runs)

    async def done():
        v = await store.get(run.id)
        return (
            v
            if v and v.snap.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT)
            else None
        )

    final = await eventually(done, timeout=20)
    assert final.snap.state == RunState.SUCCEEDED
    assert final.snap.result == '{"n":1}' or final.snap.result == '{"n": 1}'
