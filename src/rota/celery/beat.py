"""``celery beat -S rota.celery.beat:RotaScheduler``: beat fires rota's schedules.

For teams that keep ``celery beat`` as the process that fires. The schedule is
rota's: every enabled schedule of an enabled job of kind ``celery``, re-read
when schedules or jobs change (checked every ``rota_beat_sync_seconds`` of the
app's config, default 5 s). Each due tick goes through the same step as rota's
leader (:func:`rota.leader.scheduler._fire_batch`): its fire record, unique on
(schedule, nominal time), is written before anything is sent, so two beats, or
a beat and rota's leader, never fire one tick twice; the execution policy
(allow, skip, queue, replace) decides as for any rota job.

A fired tick becomes a rota run whose snapshot says the task was sent (task id
= run id), written before the task is sent; a rota worker with the ``celery``
executor claims the run and follows the task without sending it again. So the
run is followed, cancelled and timed out like any celery run. A beat that dies
between that write and the send leaves a run whose task never reports: the
never-reports rule ends it FAILED (a tick is never sent twice). A send that
fails clears the mark, and the worker sends the task itself.

Needs rota's settings (database and NATS: ``ROTA_DATABASE_URL``,
``ROTA_NATS_URL``, ...) in beat's environment, or a Django project with
``rota`` installed whose settings the app's module selects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from celery.beat import Scheduler

log = logging.getLogger(__name__)


def _setup_django() -> None:
    from django.apps import apps

    if apps.ready:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rota.standalone.settings")
    import django

    django.setup()


class _Loop:
    """An event loop on a thread of its own: beat is synchronous, NATS is not."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rota-beat", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class RotaScheduler(Scheduler):
    """A ``celery.beat.Scheduler`` whose schedule is rota's schedules of
    celery jobs and whose every fire goes through rota's fire ledger."""

    #: Beat persists nothing of its own: rota's tables are the schedule's state.
    sync_every = 0

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        _setup_django()
        from rota.domain.schedules import FireCalendar

        self.calendar = FireCalendar()
        self.rota_schedules: dict[int, Any] = {}
        self._version: tuple | None = None
        self._checked = 0.0
        self.sync_seconds = float(app.conf.get("rota_beat_sync_seconds") or 5.0)
        self._loop: _Loop | None = None
        self._bus: Any = None
        self.fired = 0
        super().__init__(app, *args, **kwargs)

    # -- the schedule -------------------------------------------------------------

    def setup_schedule(self) -> None:
        self._reload()

    def _load(self) -> tuple[list[Any], tuple]:
        from rota.leader.scheduler import _version
        from rota.models import Schedule

        qs = Schedule.objects.select_related("job").filter(
            enabled=True, job__enabled=True, job__kind="celery"
        )
        return list(qs), _version()

    def _reload(self) -> None:
        from datetime import timedelta

        schedules, version = self._load()
        now = datetime.now(UTC)
        fresh = {s.id: s for s in schedules}
        for sid in set(self.rota_schedules) - set(fresh):
            self.calendar.remove(sid)
        for s in schedules:
            old = self.rota_schedules.get(s.id)
            if old is None or (old.cron, old.timezone, old.dst_policy) != (
                s.cron,
                s.timezone,
                s.dst_policy,
            ):
                after = s.cursor_at or max(s.created_at, now - timedelta(seconds=1))
                self.calendar.upsert(s.id, s.cron, s.timezone, after=after, dst_policy=s.dst_policy)
        self.rota_schedules = fresh
        self._version = version
        self._checked = time.monotonic()
        log.info("rota beat: %d schedule(s) of celery jobs", len(fresh))

    def _maybe_reload(self) -> None:
        from rota.leader.scheduler import _version

        if time.monotonic() - self._checked < self.sync_seconds:
            return
        self._checked = time.monotonic()
        if _version() != self._version:
            self._reload()

    @property
    def schedule(self) -> dict[str, Any]:
        return {s.name or f"schedule {s.id}": s for s in self.rota_schedules.values()}

    @property
    def info(self) -> str:
        return (
            f"    . rota: {len(self.rota_schedules)} schedule(s), sync every {self.sync_seconds:g}s"
        )

    # -- firing ---------------------------------------------------------------------

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Fire what is due through the ledger; return how long to sleep."""
        from rota.leader.scheduler import _fire_batch

        self._maybe_reload()
        now = datetime.now(UTC)
        due = [
            (self.rota_schedules[sid], nominal)
            for sid, nominal in self.calendar.due(now)
            if sid in self.rota_schedules
        ]
        if due:
            fired = _fire_batch(due, now, 0)
            for snap in fired.dispatch:
                self._send(snap)
            for run_id in fired.cancel:
                self._cancel(run_id)
            for sid, nominal in fired.handled:
                if sid in self.calendar:
                    self.calendar.advance(sid, nominal)
        wake = self.calendar.wake_at()
        wait = (wake - datetime.now(UTC)).total_seconds() if wake else self.max_interval
        until_sync = self.sync_seconds - (time.monotonic() - self._checked)
        return max(0.0, min(wait, self.max_interval, max(until_sync, 0.05)))

    def _bus_loop(self) -> tuple[_Loop, Any]:
        if self._loop is None:
            from rota.bus.connection import connect
            from rota.conf import get_settings

            self._loop = _Loop()
            self._bus = self._loop.run(connect(get_settings(), name="rota-beat", ensure=True))
        return self._loop, self._bus

    def _send(self, snap: Any) -> None:
        """Mark the run sent, send the task, dispatch the run to be followed."""
        from rota.domain.celery import parse_options
        from rota.domain.snapshot import with_event
        from rota.errors import InvalidInput
        from rota.models import JobRun
        from rota.runs.dispatch import publish_dispatch
        from rota.runs.transitions import RunStore

        loop, bus = self._bus_loop()
        store = RunStore(bus.runs)
        try:
            options = parse_options(snap.args).send_kwargs()
        except InvalidInput:
            options = None  # the worker fails the run with the message
        if options is not None:
            now = time.time()
            snap.celery_task_id = snap.run_id
            snap.celery_sent_at = now
            snap.celery_state = "PENDING"
            snap.events = with_event(snap, "CELERY_PENDING", at=now, task_id=snap.run_id, by="beat")
        version = loop.run(store.create(snap))
        if options is not None and version.snap.celery_task_id == snap.run_id:
            try:
                self.app.send_task(snap.target, kwargs=snap.params, task_id=snap.run_id, **options)
                self.fired += 1
            except Exception as exc:
                log.warning(
                    "rota beat: sending %s failed (%s): a worker sends it", snap.run_id, exc
                )
                version = loop.run(store.unmark_sent(version)) or version
        loop.run(publish_dispatch(bus.js, version))
        JobRun.objects.filter(id=snap.run_id, dispatched_at__isnull=True).update(
            dispatched_at=datetime.now(UTC)
        )

    def _cancel(self, run_id: str) -> None:
        """replace: the earlier run is asked to stop (its worker revokes the task)."""
        from rota.runs.transitions import RunStore

        loop, bus = self._bus_loop()
        loop.run(RunStore(bus.runs).request_cancel(run_id))

    def close(self) -> None:
        if self._loop is not None:
            if self._bus is not None:
                try:
                    self._loop.run(self._bus.close(), timeout=5)
                except Exception:
                    pass
            self._loop.close()
            self._loop = None
        super().close()
