"""The run path on real engines: SQL → KV snapshot → dispatch → worker claim →
execute → outcome → projection into SQL."""

from __future__ import annotations

import sys

import pytest
from asgiref.sync import sync_to_async

from rota.domain.states import RunState
from rota.models import JobDefinition, JobRun, RunLog
from rota.runs.service import RunRequest, RunService
from rota.worker.daemon import Worker
from rota.worker.executors.command import CommandExecutor
from tests.conftest import eventually, running_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def worker(rota_settings):
    executors = {"command": CommandExecutor(kill_grace=0.5)}
    async with running_worker(rota_settings, tags=["itest"], executors=executors) as w:
        yield w


async def _job(**kw) -> JobDefinition:
    kw.setdefault("kind", "command")
    kw.setdefault("tags", ["itest"])
    return await JobDefinition.objects.acreate(**kw)


async def _final_row(run_id: str) -> JobRun:
    async def done():
        row = await JobRun.objects.aget(id=run_id)
        return (
            row
            if row.state
            in {
                s.value
                for s in (
                    RunState.SUCCEEDED,
                    RunState.FAILED,
                    RunState.TIMED_OUT,
                    RunState.CANCELLED,
                )
            }
            else None
        )

    return await eventually(done, timeout=20)  # type: ignore[return-value]


async def test_command_success_is_projected_with_stdout(bus, worker):
    job = await _job(
        name="echo-ok",
        target=sys.executable,
        args=["-c", "import sys; print('hello', sys.argv[1:])"],
        params_schema={"type": "object", "properties": {"who": {"type": "string"}}},
    )
    run, created = await RunService(bus).submit(RunRequest(job=job, params={"who": "world"}))
    assert created
    row = await _final_row(run.id)
    assert row.state == RunState.SUCCEEDED
    assert row.exit_code == 0
    assert row.attempt == 1
    assert row.worker_id == worker.worker_id
    assert row.dispatched_at is not None
    log = await RunLog.objects.aget(run_id=run.id, stream="stdout")
    assert "hello ['--who=world']" in log.data


async def test_command_failure_records_error_summary(bus, worker):
    job = await _job(
        name="fails",
        target=sys.executable,
        args=["-c", "import sys; sys.stderr.write('disk full\\n'); sys.exit(3)"],
    )
    run, _ = await RunService(bus).submit(RunRequest(job=job))
    row = await _final_row(run.id)
    assert row.state == RunState.FAILED
    assert row.exit_code == 3
    assert "disk full" in row.error_summary


async def test_timeout_is_timed_out(bus, worker):
    job = await _job(
        name="slow",
        target=sys.executable,
        args=["-c", "import time; time.sleep(30)"],
        timeout_seconds=0.5,
    )
    run, _ = await RunService(bus).submit(RunRequest(job=job))
    row = await _final_row(run.id)
    assert row.state == RunState.TIMED_OUT


async def test_idempotency_key_creates_one_run(bus, worker):
    job = await _job(name="idem", target="true")
    service = RunService(bus)
    first, created1 = await service.submit(RunRequest(job=job, idempotency_key="k-1"))
    second, created2 = await service.submit(RunRequest(job=job, idempotency_key="k-1"))
    assert created1 and not created2
    assert first.id == second.id
    assert await JobRun.objects.filter(job_name="idem").acount() == 1


async def test_projection_is_idempotent_and_ordered(bus, worker):
    from rota.leader.projector import apply_snapshots
    from rota.runs.transitions import RunStore

    job = await _job(name="proj", target="true")
    run, _ = await RunService(bus).submit(RunRequest(job=job))
    await _final_row(run.id)
    final = await RunStore(bus.runs).get(run.id)
    assert final is not None
    # An older snapshot applied late must not roll the row back.
    older = final.snap.__class__(
        **{
            **{f: getattr(final.snap, f) for f in final.snap.__slots__},
            "version": 1,
            "state": "RUNNING",
        }
    )
    await sync_to_async(apply_snapshots)([older, final.snap, final.snap])
    row = await JobRun.objects.aget(id=run.id)
    assert row.state == RunState.SUCCEEDED
    assert row.version == final.snap.version


async def test_reconciler_dispatches_a_run_a_crash_left_behind(bus, worker):
    from datetime import timedelta

    from django.utils import timezone

    from rota.leader.reconciler import Reconciler
    from rota.runs.service import prepare

    job = await _job(name="outbox", target="true")
    row, _snap = prepare(RunRequest(job=job))
    row.created_at = timezone.now() - timedelta(seconds=60)
    await row.asave(force_insert=True)  # SQL row only: "crashed" before KV and publish
    assert await Reconciler(RunService(bus)).step() >= 1
    final = await _final_row(row.id)
    assert final.state == RunState.SUCCEEDED


async def _running_on(bus, run_id: str, worker_id: str | None = None):
    from rota.runs.transitions import RunStore

    async def check():
        v = await RunStore(bus.runs).get(run_id)
        if (
            v
            and v.snap.state == RunState.RUNNING
            and (worker_id is None or v.snap.worker_id == worker_id)
        ):
            return v
        return None

    return await eventually(check, timeout=20)


async def test_shutdown_lets_short_runs_finish(bus, rota_settings):
    w = Worker(
        rota_settings,
        tags=["drain"],
        capacity=2,
        roles={"execute"},
        executors={"command": CommandExecutor(kill_grace=0.5)},
    )
    await w.start()
    job = await _job(name="short", target="sleep", args=["0.5"], tags=["drain"])
    run, _ = await RunService(bus).submit(RunRequest(job=job))
    await _running_on(bus, run.id, w.worker_id)
    await w.shutdown(grace=10)
    from rota.runs.transitions import RunStore

    final = await RunStore(bus.runs).get(run.id)
    assert final.snap.state == RunState.SUCCEEDED
    assert final.snap.attempt == 1
    import orjson

    entry = await (await bus.js.key_value("rota_workers")).get(w.worker_id)
    assert orjson.loads(entry.value)["state"] == "STOPPED_GRACEFUL"


async def test_shutdown_hands_back_runs_past_the_grace(bus, rota_settings, tmp_path):
    """A run still going when the grace ends is handed back and finished by
    another worker as attempt 2; the first copy is stopped and reports nothing."""
    marker = tmp_path / "attempts"
    first = Worker(
        rota_settings,
        tags=["handback"],
        capacity=2,
        roles={"execute"},
        executors={"command": CommandExecutor(kill_grace=0.5)},
    )
    await first.start()
    script = f"import os,time; open({str(marker)!r},'a').write(os.environ['ROTA_ATTEMPT']+'\\n'); time.sleep(float(os.environ.get('SLEEP','0')) or (30 if os.environ['ROTA_ATTEMPT']=='1' else 0))"
    job = await _job(name="long", target=sys.executable, args=["-c", script], tags=["handback"])
    run, _ = await RunService(bus).submit(RunRequest(job=job))
    await _running_on(bus, run.id, first.worker_id)
    await first.shutdown(grace=0.3)

    from rota.runs.transitions import RunStore

    handed = await RunStore(bus.runs).get(run.id)
    assert handed.snap.state == RunState.ORPHANED and handed.snap.worker_id is None

    second = Worker(
        rota_settings,
        tags=["handback"],
        capacity=2,
        roles={"execute", "lead"},
        executors={"command": CommandExecutor(kill_grace=0.5)},
    )
    await second.start()
    try:
        row = await _final_row(run.id)
        assert row.state == RunState.SUCCEEDED
        assert row.attempt == 2
        assert row.worker_id == second.worker_id
        assert marker.read_text().split() == ["1", "2"]
    finally:
        await second.shutdown(grace=2)


async def test_a_run_dispatched_ahead_waits_assigned_and_starts_on_time(bus, worker):
    """assign-ahead: claimed early as ASSIGNED, started at its nominal time."""
    import time as _time
    from datetime import UTC, datetime

    from rota.runs.transitions import RunStore

    job = await _job(name="ahead", target="true")
    nominal = _time.time() + 1.5
    run, _ = await RunService(bus).submit(
        RunRequest(job=job, scheduled_for=datetime.fromtimestamp(nominal, tz=UTC))
    )
    store = RunStore(bus.runs)

    async def assigned():
        v = await store.get(run.id)
        return v if v and v.snap.state == RunState.ASSIGNED else None

    waiting = await eventually(assigned, timeout=5)
    assert waiting.snap.worker_id == worker.worker_id and waiting.snap.started_at is None
    row = await _final_row(run.id)
    assert row.state == RunState.SUCCEEDED
    lateness = row.started_at.timestamp() - nominal
    assert 0 <= lateness < 0.5, lateness
