"""What the leader does while it holds the lease: projector, reconciler,
supervisor, scheduler, log archival and settings publication, all started with
its epoch and stopped together the moment the lease is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import orjson

from rota.bus import subjects
from rota.bus.connection import Bus
from rota.bus.resources import set_lease_ttl
from rota.conf import RotaSettings
from rota.coordination.lease import LeaderFence, LeadershipLost
from rota.coordination.mirror import KvMirror
from rota.domain.workers import Thresholds
from rota.runs.sqlwriter import sql_writer

log = logging.getLogger(__name__)


async def publish_thresholds(bus: Bus, thresholds: Thresholds) -> None:
    """Copy the settings into KV, where every process (execute-only workers
    included) watches them."""
    coord = await bus.js.key_value(subjects.COORD_BUCKET)
    await coord.put(subjects.SETTINGS_KEY, orjson.dumps(thresholds.as_dict()))


def _load_thresholds() -> tuple[Thresholds, float]:
    from rota.models import SchedulerSettings

    row = SchedulerSettings.load()
    return row.thresholds(), row.updated_at.timestamp()


async def start_leader_duties(
    bus: Bus,
    settings: RotaSettings,
    *,
    epoch: int,
    thresholds: Callable[[], Thresholds],
    on_failure: Callable[[], None],
) -> Callable[[], Awaitable[None]]:
    """Start every leader duty for ``epoch``; returns the function that stops them."""
    from rota.control.client import ControlClient
    from rota.control.tls import TlsFiles
    from rota.leader.projector import Projector
    from rota.leader.reconciler import Reconciler
    from rota.leader.scheduler import Scheduler
    from rota.leader.supervisor import Supervisor
    from rota.runs.logs import LogArchiver
    from rota.runs.service import RunService

    stop = asyncio.Event()
    t = thresholds()
    fence = LeaderFence(await bus.js.key_value(subjects.LEASES_BUCKET), epoch)
    control = ControlClient(
        TlsFiles.from_settings(settings), epoch=epoch, timeout=t.grpc_timeout_seconds, retries=0
    )

    async def guarded(name: str, coro: Awaitable[None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("leader duty %s stopped", name)
            on_failure()

    # The projector first: the changes a dead leader left unapplied reach SQL
    # while the mirrors below load (SQL lag after a takeover, operations.md).
    projector = asyncio.create_task(guarded("projector", Projector(bus, fence=fence).run(stop)))
    try:
        registry = KvMirror(await bus.js.key_value(subjects.WORKERS_BUCKET))
        heartbeats = KvMirror(await bus.js.key_value(subjects.HEARTBEATS_BUCKET))
        marks = KvMirror(await bus.js.key_value(subjects.COORD_BUCKET), "detached.>")
        for m in (registry, heartbeats, marks):
            await m.start()
    except BaseException:
        stop.set()
        projector.cancel()
        raise
    # Supervise with the initial values in: a heartbeat not read yet would make
    # a healthy worker look DISCONNECTED, and its runs go CONFIRMING for nothing.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(m.ready.wait() for m in (registry, heartbeats, marks))), 5.0
        )
    supervisor = Supervisor(
        bus,
        epoch=epoch,
        thresholds=thresholds,
        control=control,
        registry=registry,
        heartbeats=heartbeats,
        marks=marks,
        fence=fence,
    )

    async def settings_publisher() -> None:
        # SQL is the record; changes saved there reach KV (and every worker) here.
        last = -1.0
        while not stop.is_set():
            try:
                current, updated = await sql_writer().call(_load_thresholds)
                if updated != last:
                    await fence.check()
                    await publish_thresholds(bus, current)
                    await set_lease_ttl(bus.js, current.leader_lease_seconds)
                    last = updated
            except LeadershipLost:
                raise
            except Exception:
                log.warning("publishing settings failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    tasks = [
        projector,
        asyncio.create_task(
            guarded("reconciler", Reconciler(RunService(bus), fence=fence).run(stop))
        ),
        asyncio.create_task(guarded("supervisor", supervisor.run(stop))),
        asyncio.create_task(
            guarded(
                "scheduler",
                Scheduler(
                    bus, epoch=epoch, thresholds=thresholds, control=control, fence=fence
                ).run(stop),
            )
        ),
        asyncio.create_task(guarded("settings", settings_publisher())),
        asyncio.create_task(
            guarded(
                "log archiver",
                LogArchiver(bus.js, lambda: thresholds().log_retention_days).run(stop),
            )
        ),
    ]

    async def stop_all() -> None:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for m in (registry, heartbeats, marks):
            await m.stop()
        await control.close()

    return stop_all
