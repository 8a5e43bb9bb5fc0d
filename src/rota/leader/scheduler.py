"""The scheduler tick, a leader duty (DESIGN §5).

A :class:`~rota.domain.schedules.FireCalendar` holds each enabled schedule's next
fire. Each step takes what is due up to ``now + assign_ahead_seconds`` and, in
one transaction per step:

- a tick older than the schedule's catch-up window is recorded as missed;
- any other tick writes its fire record, unique on (schedule, nominal time),
  before its run, so a tick fires once however many leaders try; then the
  execution policy, keyed on (job, params hash), decides: allow (a run), skip (a
  SKIPPED run with the reason), queue (a run held until the earlier one ends),
  replace (a run, and the earlier one is cancelled);
- the schedule's counters and its cursor (the nominal time handled up to) move.

Runs go out through the ordinary dispatch path with ``scheduled_for`` set: a
worker claims them early as ASSIGNED and starts them at their nominal time. A new
leader rebuilds the calendar from the cursors, so it continues where the last
one stopped and creates nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Max

from rota.bus.connection import Bus
from rota.coordination.lease import LeaderFence
from rota.domain.schedules import FireCalendar
from rota.domain.snapshot import RunSnapshot
from rota.domain.states import RunState
from rota.domain.workers import Thresholds
from rota.errors import InvalidInput
from rota.models import ExecutionPolicy, FireRecord, JobRun, Schedule
from rota.runs.service import RunRequest, RunService, prepare
from rota.runs.sqlwriter import sql_writer
from rota.runs.transitions import RunStore

log = logging.getLogger(__name__)

#: States of an earlier run that make the execution policy step in.
ACTIVE = [
    RunState.PENDING,
    RunState.ASSIGNED,
    RunState.RUNNING,
    RunState.CANCELLING,
    RunState.ORPHANED,
]


@dataclass
class Fired:
    """What one step's transaction produced, for the dispatch that follows it."""

    dispatch: list[RunSnapshot] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    handled: list[tuple[int, datetime]] = field(default_factory=list)


def _load_schedules() -> tuple[list[Schedule], tuple]:
    qs = Schedule.objects.select_related("job").filter(enabled=True, job__enabled=True)
    schedules = list(qs)
    return schedules, _version()


def _version() -> tuple:
    """Changes to schedules or jobs change this, so the calendar is rebuilt."""
    from rota.models import JobDefinition

    s = Schedule.objects.aggregate(m=Max("updated_at"))["m"]
    j = JobDefinition.objects.aggregate(m=Max("updated_at"))["m"]
    return (s, j, Schedule.objects.count(), JobDefinition.objects.count())


def _active_runs(job_name: str, key: str, *, exclude: str | None = None) -> list[str]:
    qs = JobRun.objects.filter(job_name=job_name, params_hash=key, state__in=ACTIVE, held=False)
    if exclude:
        qs = qs.exclude(id=exclude)
    return list(qs.order_by("id").values_list("id", flat=True))


def _fire_batch(due: list[tuple[Schedule, datetime]], now: datetime, epoch: int) -> Fired:
    """One transaction for everything due in this step."""
    out = Fired()
    with transaction.atomic():
        for schedule, nominal in due:
            out.handled.append((schedule.id, nominal))
            if nominal < now - timedelta(seconds=schedule.catch_up_seconds):
                _record(
                    schedule, nominal, FireRecord.Outcome.MISSED, "", epoch, counter="missed_count"
                )
                continue
            request = RunRequest(
                job=schedule.job,
                params=schedule.params,
                scheduled_for=nominal,
                schedule_id=schedule.id,
                leader_epoch=epoch,
                retry=schedule.retry,
            )
            snap: RunSnapshot | None
            try:
                row, snap = prepare(request)
            except InvalidInput as exc:
                # The job's schema changed under the schedule: record why, run nothing.
                row, snap = prepare(request, validate=False)[0], None
                row.state = RunState.FAILED
                row.finished_at = now
                row.error_summary = f"schedule params no longer valid: {exc.message}"
            earlier = _active_runs(row.job_name, row.params_hash) if snap is not None else []
            policy = schedule.execution_policy
            if earlier and policy == ExecutionPolicy.SKIP:
                row.state = RunState.SKIPPED
                row.error_summary = (
                    f"skipped: run {earlier[0]} of the same job and params is still active"
                )
                row.finished_at = now
                snap = None
            elif earlier and policy == ExecutionPolicy.QUEUE:
                row.held = True
                snap = None
            replaced = earlier if policy == ExecutionPolicy.REPLACE else []
            try:
                with transaction.atomic():
                    FireRecord.objects.create(
                        schedule=schedule,
                        nominal_time=nominal,
                        outcome=FireRecord.Outcome.SKIPPED
                        if row.state == RunState.SKIPPED
                        else FireRecord.Outcome.FIRED,
                        run_id=row.id,
                        leader_epoch=epoch,
                    )
                    row.save(force_insert=True)
            except IntegrityError:
                continue  # fired already (by an earlier leader): the ledger decides
            out.cancel.extend(replaced)  # only now: this tick is ours
            counter = "skipped_count" if row.state == RunState.SKIPPED else "fired_count"
            Schedule.objects.filter(id=schedule.id).update(
                **{counter: F(counter) + 1}, last_fired_at=nominal, cursor_at=nominal
            )
            if snap is not None:
                out.dispatch.append(snap)
        return out


def _record(
    schedule: Schedule, nominal: datetime, outcome: str, run_id: str, epoch: int, *, counter: str
) -> None:
    try:
        with transaction.atomic():
            FireRecord.objects.create(
                schedule=schedule,
                nominal_time=nominal,
                outcome=outcome,
                run_id=run_id,
                leader_epoch=epoch,
            )
    except IntegrityError:
        return
    Schedule.objects.filter(id=schedule.id).update(**{counter: F(counter) + 1}, cursor_at=nominal)


def _release_queued() -> list[JobRun]:
    """Held runs whose earlier run has ended: release the oldest of each key."""
    released = []
    seen: set[tuple[str, str]] = set()
    for run in (
        JobRun.objects.select_related("job")
        .filter(held=True, state=RunState.PENDING)
        .order_by("id")
    ):
        key = (run.job_name, run.params_hash)
        if key in seen:
            continue  # order kept: only the oldest held run of a key may go
        seen.add(key)
        if _active_runs(run.job_name, run.params_hash, exclude=run.id):
            continue
        if JobRun.objects.filter(id=run.id, held=True).update(held=False) == 1:  # checked CAS
            run.held = False
            released.append(run)
    return released


class Scheduler:
    def __init__(
        self,
        bus: Bus,
        *,
        epoch: int,
        thresholds: Callable[[], Thresholds],
        control=None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fence: LeaderFence | None = None,
    ) -> None:
        self.bus = bus
        self.fence = fence
        self.clock = clock
        self.epoch = epoch
        self.thresholds = thresholds
        self.control = control
        self.service = RunService(bus)
        self.store = RunStore(bus.runs)
        self.calendar = FireCalendar()
        self.schedules: dict[int, Schedule] = {}
        self._version: tuple | None = None
        self._checked = 0.0
        self._released = 0.0

    async def reload(self) -> None:
        schedules, version = await sql_writer().call(_load_schedules)
        now = self.clock()
        fresh = {s.id: s for s in schedules}
        for sid in set(self.schedules) - set(fresh):
            self.calendar.remove(sid)
        for s in schedules:
            old = self.schedules.get(s.id)
            changed = old is None or (old.cron, old.timezone, old.dst_policy) != (
                s.cron,
                s.timezone,
                s.dst_policy,
            )
            if changed:
                # Continue from the ticks handled; a new schedule starts now.
                after = s.cursor_at or max(s.created_at, now - timedelta(seconds=1))
                self.calendar.upsert(s.id, s.cron, s.timezone, after=after, dst_policy=s.dst_policy)
        self.schedules = fresh
        self._version = version

    async def step(self) -> bool:
        if time.monotonic() - self._checked > 1.0:
            self._checked = time.monotonic()
            if await sql_writer().call(_version) != self._version:
                await self.reload()
        now = self.clock()
        horizon = now + timedelta(seconds=self.thresholds().assign_ahead_seconds)
        due = [
            (self.schedules[sid], nominal)
            for sid, nominal in self.calendar.due(horizon)
            if sid in self.schedules
        ]
        released: list[JobRun] = []
        if self.fence is not None and (due or time.monotonic() - self._released > 0.5):
            await self.fence.check()  # every write below is a leader's
        if time.monotonic() - self._released > 0.5:
            self._released = time.monotonic()
            released = await sql_writer().call(_release_queued)
        if released:
            from rota.runs.service import snapshot_for

            await self.service.dispatch([snapshot_for(r, r.job) for r in released if r.job])
        if not due:
            return bool(released)
        fired = await sql_writer().call(_fire_batch, due, now, self.epoch)
        if fired.dispatch:
            await self.service.dispatch(fired.dispatch)
        for run_id in fired.cancel:
            await self._cancel(run_id)
        for sid, nominal in fired.handled:
            if sid in self.calendar:
                self.calendar.advance(sid, nominal)
        return True

    async def _cancel(self, run_id: str) -> None:
        """replace: stop the earlier run (the worker also sees the snapshot)."""
        current = await self.store.request_cancel(run_id)
        if (
            current is None
            or current.snap.state != RunState.CANCELLING
            or not current.snap.worker_id
        ):
            return
        if self.control is not None:
            with contextlib.suppress(Exception):  # best effort: the snapshot says it too
                await self.control.cancel_on_worker(
                    self.bus.js, current.snap.worker_id, run_id, current.snap.attempt
                )

    async def run(self, stop: asyncio.Event, interval: float = 0.05) -> None:
        from rota.steps import run_steps

        await self.reload()
        await run_steps("scheduler", self.step, stop, idle_interval=interval)
