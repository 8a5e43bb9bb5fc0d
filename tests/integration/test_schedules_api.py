"""Schedules through the HTTP API and the leader's tick, on real NATS and SQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from rota.domain.states import RunState
from rota.models import FireRecord, JobDefinition, JobRun, Schedule
from tests.integration.test_events import client  # noqa: F401  (the authorised API client)

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMA = {
    "type": "object",
    "properties": {"period_type": {"enum": ["daily", "weekly"]}, "limit": {"type": "integer"}},
    "required": ["period_type"],
}


async def test_two_schedules_of_one_job_with_names_and_validation(client):  # noqa: F811
    await JobDefinition.objects.acreate(
        name="fetch_listed_info", kind="command", target="true", params_schema=SCHEMA
    )
    a = await client.post(
        "/schedules",
        {
            "task_name": "fetch_listed_info",
            "cron_expression": "0 0 * * *",
            "task_params": {"period_type": "daily"},
        },
        content_type="application/json",
    )
    assert a.status_code == 201, a.content
    b = await client.post(
        "/schedules",
        {
            "task_name": "fetch_listed_info",
            "structured": {"every": "week", "days": ["mon"], "time": "09:30"},
            "timezone": "Asia/Tokyo",
            "task_params": {"period_type": "weekly"},
        },
        content_type="application/json",
    )
    assert b.status_code == 201, b.content
    assert b.json()["cron_expression"] == "30 9 * * 1" and b.json()["auto_generated_name"]
    assert "weekly" in b.json()["name"]
    bad = await client.post(
        "/schedules",
        {
            "task_name": "fetch_listed_info",
            "cron_expression": "0 0 * * *",
            "task_params": {"period_type": "hourly"},
        },
        content_type="application/json",
    )
    assert bad.status_code == 422 and bad.json()["field"] == "params.period_type"
    bad_cron = await client.post(
        "/schedules",
        {
            "task_name": "fetch_listed_info",
            "cron_expression": "0 25 * * *",
            "task_params": {"period_type": "daily"},
        },
        content_type="application/json",
    )
    assert bad_cron.status_code == 422 and "hour" in bad_cron.json()["detail"]
    assert (
        await client.post(
            "/schedules",
            {"task_name": "nope", "cron_expression": "* * * * *"},
            content_type="application/json",
        )
    ).status_code == 404
    preview = (await client.get(f"/schedules/{b.json()['id']}/preview", {"n": 3})).json()["items"]
    assert len(preview) == 3 and all(p["local"].endswith("+09:00") for p in preview)
    listed = (await client.get("/schedules", {"job": "fetch_listed_info"})).json()["items"]
    assert {s["task_params"]["period_type"] for s in listed} == {"daily", "weekly"}


def _frozen_clock() -> tuple[datetime, Callable[[], datetime]]:
    """The start of this minute, and a clock that stays at half past it: tests of
    tick arithmetic must not depend on when in the minute they run."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    return minute, lambda: minute + timedelta(seconds=30)


async def _every_second_schedule(policy: str, job_name: str, seconds: float) -> Schedule:
    job = await JobDefinition.objects.acreate(
        name=job_name, kind="command", target="sleep", args=[str(seconds)]
    )
    return await Schedule.objects.acreate(
        job=job, cron="* * * * *", params={}, execution_policy=policy
    )


async def test_scheduler_fires_once_per_tick_and_applies_policies(bus, rota_settings):
    """Drive the leader's scheduler directly against ticks in the past minute:
    one fire per tick, and skip / queue / replace with an earlier run still going."""
    from rota.domain.workers import Thresholds
    from rota.leader.scheduler import Scheduler

    minute, clock = _frozen_clock()
    scheduler = Scheduler(bus, epoch=1, thresholds=lambda: Thresholds(), clock=clock)
    base = minute - timedelta(minutes=2)
    sched = {}
    for policy in ("allow", "skip", "queue", "replace"):
        s = await _every_second_schedule(policy, f"job_{policy}", 60)
        await Schedule.objects.filter(id=s.id).aupdate(cursor_at=base, created_at=base)
        sched[policy] = s
    await scheduler.reload()
    assert await scheduler.step()
    # Two ticks (base+1m, base+2m) per schedule; a second step and a second
    # scheduler (a new leader) create nothing more.
    await scheduler.step()
    again = Scheduler(bus, epoch=2, thresholds=lambda: Thresholds(), clock=clock)
    await again.reload()
    await again.step()
    for policy, s in sched.items():
        fires = [f async for f in FireRecord.objects.filter(schedule=s).order_by("nominal_time")]
        assert [f.nominal_time for f in fires] == [
            base + timedelta(minutes=1),
            base + timedelta(minutes=2),
        ], policy
    runs = {
        p: [r async for r in JobRun.objects.filter(schedule=s).order_by("id")]
        for p, s in sched.items()
    }
    assert [r.state for r in runs["allow"]] == [RunState.PENDING, RunState.PENDING]
    assert [r.state for r in runs["skip"]] == [RunState.PENDING, RunState.SKIPPED]
    assert "still active" in runs["skip"][1].error_summary
    assert [r.held for r in runs["queue"]] == [False, True]
    assert runs["allow"][0].scheduled_for == base + timedelta(minutes=1)
    skipped = await Schedule.objects.aget(id=sched["skip"].id)
    assert skipped.skipped_count == 1 and skipped.fired_count == 1
    from rota.runs.transitions import RunStore

    store = RunStore(bus.runs)
    first_replaced = await store.get(runs["replace"][0].id)
    assert first_replaced.snap.state == RunState.CANCELLED  # nobody had claimed it yet
    # queue: once the earlier run ends, the held one is released, order kept.
    await store.request_cancel(runs["queue"][0].id)
    await JobRun.objects.filter(id=runs["queue"][0].id).aupdate(state=RunState.CANCELLED)
    scheduler._released = 0.0
    await scheduler.step()
    released = await JobRun.objects.aget(id=runs["queue"][1].id)
    assert not released.held and released.dispatched_at is not None


async def test_ticks_outside_the_catch_up_window_are_missed(bus):
    from rota.domain.workers import Thresholds
    from rota.leader.scheduler import Scheduler

    job = await JobDefinition.objects.acreate(name="late", kind="command", target="true")
    minute, clock = _frozen_clock()
    s = await Schedule.objects.acreate(
        job=job, cron="* * * * *", catch_up_seconds=150, cursor_at=minute - timedelta(minutes=10)
    )
    scheduler = Scheduler(bus, epoch=1, thresholds=lambda: Thresholds(), clock=clock)
    await scheduler.reload()
    await scheduler.step()
    s = await Schedule.objects.aget(id=s.id)
    # 10 ticks since the cursor; at minute + 30 s those within 150 s (the last
    # three) fire, the seven before them are missed.
    assert (s.fired_count, s.missed_count) == (3, 7)
    assert await JobRun.objects.filter(schedule=s).acount() == s.fired_count
    await asyncio.sleep(0)


async def test_two_schedules_of_one_job_fire_runs_with_their_own_params(bus):
    from rota.domain.workers import Thresholds
    from rota.leader.scheduler import Scheduler

    job = await JobDefinition.objects.acreate(
        name="report", kind="command", target="true", params_schema=SCHEMA
    )
    minute, clock = _frozen_clock()
    for period in ("daily", "weekly"):
        await Schedule.objects.acreate(
            job=job,
            cron="* * * * *",
            params={"period_type": period},
            cursor_at=minute - timedelta(minutes=1),
        )
    scheduler = Scheduler(bus, epoch=1, thresholds=lambda: Thresholds(), clock=clock)
    await scheduler.reload()
    await scheduler.step()
    params = sorted(
        [r.params["period_type"] async for r in JobRun.objects.filter(job_name="report")]
    )
    assert params == ["daily", "weekly"]


async def test_a_queued_run_can_be_cancelled(bus, client):  # noqa: F811
    from rota.domain.workers import Thresholds
    from rota.leader.scheduler import Scheduler

    job = await JobDefinition.objects.acreate(
        name="queued_cancel", kind="command", target="sleep", args=["60"]
    )
    minute, clock = _frozen_clock()
    s = await Schedule.objects.acreate(
        job=job, cron="* * * * *", execution_policy="queue", cursor_at=minute - timedelta(minutes=2)
    )
    scheduler = Scheduler(bus, epoch=1, thresholds=lambda: Thresholds(), clock=clock)
    await scheduler.reload()
    await scheduler.step()
    held = await JobRun.objects.aget(schedule=s, held=True)
    r = await client.post(f"/runs/{held.id}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "CANCELLED"
    held = await JobRun.objects.aget(id=held.id)
    assert held.state == RunState.CANCELLED and not held.held


async def test_a_repeated_create_with_the_same_idempotency_key_returns_the_first(client):  # noqa: F811
    from rota.models import AdminActionLog

    await JobDefinition.objects.acreate(name="nightly", kind="command", target="true")
    body = {"task_name": "nightly", "cron_expression": "0 3 * * *"}

    async def create(key: str):
        return await client.post(
            "/schedules", body, content_type="application/json", headers={"Idempotency-Key": key}
        )

    first, again, other = await create("k-1"), await create("k-1"), await create("k-2")
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert await Schedule.objects.filter(job__name="nightly").acount() == 2
    assert await AdminActionLog.objects.filter(action="schedule.create").acount() == 2
    too_long = await create("x" * 201)
    assert too_long.status_code == 422
