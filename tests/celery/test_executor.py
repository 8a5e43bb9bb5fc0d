"""The ``celery`` executor against a real Celery 5 worker (prefork) on a real
Redis broker and result backend, with a real nats-server and rota worker."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rota.domain.states import RunState
from rota.models import JobDefinition, JobRun, Schedule
from rota.runs.service import RunRequest, RunService
from rota.runs.transitions import RunStore
from rota.worker.executors.celery import CeleryExecutor
from tests.conftest import eventually, running_worker

pytestmark = pytest.mark.django_db(transaction=True)

FINAL = {RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED}


@pytest.fixture
async def worker(rota_settings, celery_app, celery_worker):
    executor = CeleryExecutor(celery_app, poll_seconds=0.1, start_timeout=60, revoke_grace=5)
    async with running_worker(
        rota_settings, tags=["celery-t"], executors={"celery": executor}, capacity=4
    ) as w:
        yield w


async def _job(name: str, target: str, **kw) -> JobDefinition:
    return await JobDefinition.objects.acreate(
        name=name, kind="celery", target=target, tags=["celery-t"], **kw
    )


async def _final(run_id: str, timeout: float = 30) -> JobRun:
    async def done():
        row = await JobRun.objects.aget(id=run_id)
        return row if row.state in FINAL else None

    return await eventually(done, timeout=timeout)  # type: ignore[return-value]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_success_records_the_return_value_and_the_task_id(bus, worker):
    job = await _job("c-add", "rt.add")
    run, _ = await RunService(bus).submit(RunRequest(job=job, params={"a": 2, "b": 3}))
    row = await _final(run.id)
    assert row.state == RunState.SUCCEEDED, row.error_summary
    assert row.result == 5
    assert row.started_at is not None
    sent = [e for e in row.events if e["event"] == "CELERY_PENDING"]
    assert sent and sent[0]["task_id"] == run.id  # the task id is the run id
    assert worker.load == 0


async def test_a_raising_task_fails_with_its_traceback(bus, worker):
    job = await _job("c-boom", "rt.boom")
    run, _ = await RunService(bus).submit(RunRequest(job=job, params={"message": "disk full"}))
    row = await _final(run.id)
    assert row.state == RunState.FAILED
    assert row.error_summary == "ValueError: disk full"
    snap = await worker.store.get(run.id)
    assert "Traceback" in snap.snap.stderr and "raise ValueError(message)" in snap.snap.stderr


async def test_retries_are_shown_and_the_run_ends_with_the_last_try(bus, worker, tmp_path):
    job = await _job("c-flaky", "rt.flaky")
    marker = str(tmp_path / "count")
    run, _ = await RunService(bus).submit(RunRequest(job=job, params={"marker": marker}))
    row = await _final(run.id)
    assert row.state == RunState.SUCCEEDED
    assert row.result == "ok after 3"
    retries = [e for e in row.events if e["event"] == "CELERY_RETRY"]
    assert retries and "failed" in retries[0]["exception"]


async def test_cancel_revokes_and_the_celery_worker_stops_the_task(bus, worker, tmp_path):
    job = await _job("c-long", "rt.sleep")
    marker = str(tmp_path / "pid")
    run, _ = await RunService(bus).submit(
        RunRequest(job=job, params={"seconds": 60, "marker": marker})
    )

    async def running():
        v = await worker.store.get(run.id)
        return v and v.snap.state == RunState.RUNNING and os.path.exists(marker)

    await eventually(running, timeout=30)
    pid = int(Path(marker).read_text().split()[0])
    assert _alive(pid)
    assert worker.load == 0  # the waiting run holds no slot
    ok, _ = await worker.cancel_run(run.id)
    assert ok
    row = await _final(run.id)
    assert row.state == RunState.CANCELLED
    assert "cancelled" in row.error_summary
    # The task was terminated in the Celery worker: its pool process is gone
    # (prefork replaces it), and it never reached its end.
    await eventually(lambda: asyncio.sleep(0, not _alive(pid)), timeout=10)
    assert not os.path.exists(marker + ".done")


async def test_timeout_revokes_and_ends_timed_out(bus, worker, tmp_path):
    job = await _job("c-slow", "rt.sleep", timeout_seconds=2)
    marker = str(tmp_path / "pid")
    run, _ = await RunService(bus).submit(
        RunRequest(job=job, params={"seconds": 60, "marker": marker})
    )
    row = await _final(run.id)
    assert row.state == RunState.TIMED_OUT
    assert "timed out after 2s" in row.error_summary
    await eventually(lambda: asyncio.sleep(0, os.path.exists(marker)), timeout=5)
    await eventually(
        lambda: asyncio.sleep(0, not _alive(int(Path(marker).read_text().split()[0]))), timeout=10
    )
    assert not os.path.exists(marker + ".done")


async def test_a_task_that_never_reports_fails_after_its_start_timeout(bus, worker):
    # No Celery worker consumes this queue: the task stays PENDING forever.
    job = await _job("c-lost", "rt.add", args=["queue=nobody-listens", "start_timeout=2"])
    started = time.monotonic()
    run, _ = await RunService(bus).submit(RunRequest(job=job, params={"a": 1, "b": 1}))
    row = await _final(run.id, timeout=40)
    assert row.state == RunState.FAILED
    assert "reported nothing for 2s" in row.error_summary
    assert "revoked" in row.error_summary
    assert row.started_at is None  # it never started
    assert time.monotonic() - started >= 2


async def test_bad_options_fail_the_run_with_a_message(bus, worker):
    job = await _job("c-badopt", "rt.add", args=["colour=blue"])
    run, _ = await RunService(bus).submit(RunRequest(job=job, params={"a": 1, "b": 1}))
    row = await _final(run.id)
    assert row.state == RunState.FAILED
    assert "colour=blue" in row.error_summary


class TwoTicks:
    """A schedule that fired two days ago and one day ago (and next in a year),
    and a scheduler whose clock stands just past each: two ticks in a few
    seconds, which the real leader's scheduler (on the real clock) never fires."""

    def __init__(self, bus, job, params, policy: str) -> None:
        self.bus, self.job, self.params, self.policy = bus, job, params, policy
        self.t1 = (datetime.now(UTC) - timedelta(days=2)).replace(second=0, microsecond=0)
        self.t2 = self.t1 + timedelta(days=1)
        self.clock = [self.t1 - timedelta(minutes=1)]

    async def first(self) -> JobRun:
        from rota.domain.workers import Thresholds
        from rota.leader.scheduler import Scheduler

        t1, t2 = self.t1, self.t2
        months = ",".join(sorted({str(t1.month), str(t2.month)}))
        # Disabled, so the real leader never loads it; this scheduler is given it.
        self.sched = await Schedule.objects.acreate(
            job=self.job,
            cron=f"{t1.minute} {t1.hour} {t1.day},{t2.day} {months} *",
            params=self.params,
            execution_policy=self.policy,
            enabled=False,
        )
        sched = await Schedule.objects.select_related("job").aget(id=self.sched.id)
        self.scheduler = Scheduler(
            self.bus, epoch=1, thresholds=Thresholds, clock=lambda: self.clock[0]
        )
        await self.scheduler.reload()
        self.scheduler._checked = float("inf")  # no reload: it would drop the schedule
        self.scheduler.schedules[sched.id] = sched
        self.scheduler.calendar.upsert(
            sched.id, sched.cron, sched.timezone, after=self.clock[0], dst_policy=sched.dst_policy
        )
        self.clock[0] = t1 + timedelta(seconds=1)
        assert await self.scheduler.step()
        return await JobRun.objects.aget(schedule_id=self.sched.id)

    async def second(self, first: JobRun) -> JobRun:
        self.clock[0] = self.t2 + timedelta(seconds=1)
        assert await self.scheduler.step()
        return await JobRun.objects.filter(schedule_id=self.sched.id).exclude(id=first.id).aget()


async def _started(worker, run_id: str, marker: Path) -> int:
    async def running():
        row = await JobRun.objects.aget(id=run_id)
        return row.state in (RunState.ASSIGNED, RunState.RUNNING) and marker.exists()

    await eventually(running, timeout=30)
    return int(marker.read_text().split()[0])


async def test_skip_policy_skips_a_tick_while_the_celery_task_runs(bus, worker, tmp_path):
    """The scheduler's policy, keyed on (job, params), sees the celery run as
    active while Celery runs it: the next tick is SKIPPED."""
    job = await _job("c-skip", "rt.sleep")
    marker = tmp_path / "pid"
    ticks = TwoTicks(bus, job, {"seconds": 60, "marker": str(marker)}, "skip")
    first = await ticks.first()
    await _started(worker, first.id, marker)
    second = await ticks.second(first)
    assert second.state == RunState.SKIPPED
    assert first.id in second.error_summary
    await worker.cancel_run(first.id)
    assert (await _final(first.id)).state == RunState.CANCELLED


async def test_replace_policy_revokes_the_running_task_and_runs_the_new_tick(bus, worker, tmp_path):
    job = await _job("c-replace", "rt.sleep")
    marker = tmp_path / "pid"
    ticks = TwoTicks(bus, job, {"seconds": 3, "marker": str(marker)}, "replace")
    first = await ticks.first()
    pid = await _started(worker, first.id, marker)
    marker.unlink()
    second = await ticks.second(first)
    assert (await _final(first.id)).state == RunState.CANCELLED
    await eventually(lambda: asyncio.sleep(0, not _alive(pid)), timeout=10)
    row = await _final(second.id)
    assert row.state == RunState.SUCCEEDED and row.result == "slept"
    assert len(marker.read_text().split()) == 1  # the new tick's task, once


async def test_a_run_handed_back_is_followed_by_the_next_attempt_without_a_resend(
    bus, rota_settings, celery_app, celery_worker, tmp_path
):
    """A stopping worker hands its followed run back at once; the next worker's
    attempt follows the same task (its id is in the snapshot): one execution."""
    job = await _job("c-handback", "rt.sleep")
    marker = tmp_path / "pid"

    def executor():
        return CeleryExecutor(celery_app, poll_seconds=0.1, start_timeout=60, revoke_grace=5)

    async with running_worker(
        rota_settings, tags=["celery-t"], executors={"celery": executor()}
    ) as first:
        run, _ = await RunService(bus).submit(
            RunRequest(job=job, params={"seconds": 4, "marker": str(marker)})
        )

        async def running():
            v = await first.store.get(run.id)
            return v and v.snap.state == RunState.RUNNING and marker.exists()

        await eventually(running, timeout=30)
    handed = await RunStore(bus.runs).get(run.id)
    assert handed.snap.state == RunState.ORPHANED
    async with running_worker(
        rota_settings, tags=["celery-t"], executors={"celery": executor()}
    ) as second:
        row = await _final(run.id)
        assert row.state == RunState.SUCCEEDED, row.error_summary
        assert row.result == "slept"
        assert row.attempt == 2 and row.worker_id == second.worker_id
    assert any(e.get("reattached") for e in row.events)
    assert len(marker.read_text().split()) == 1  # the task ran once: never sent again


@pytest.mark.slow
async def test_a_thousand_celery_runs_complete_without_a_slot_each(bus, worker):
    job = await _job("c-many", "rt.noop")
    n = 1000
    started = time.monotonic()
    rows = await RunService(bus).submit_many(
        [RunRequest(job=job, params={"i": i}) for i in range(n)]
    )
    ids = [r.id for r in rows]
    peak_load = peak_following = 0
    while True:
        peak_load = max(peak_load, worker.load)
        peak_following = max(peak_following, worker.status()["following"])
        done = await JobRun.objects.filter(id__in=ids, state=RunState.SUCCEEDED).acount()
        if done == n:
            break
        assert time.monotonic() - started < 240, f"only {done} of {n} done"
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    print(
        f"{n} celery runs in {elapsed:.1f}s; slots held at most {peak_load} "
        f"of {worker.capacity}; runs followed at once at most {peak_following}"
    )
    assert peak_load <= worker.capacity
    # Far more runs waited on Celery at once than the worker has slots.
    assert peak_following > 10 * worker.capacity
    assert len(worker.executors["celery"].follower) == 0
