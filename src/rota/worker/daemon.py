"""The worker daemon (``rota worker``).

It pulls dispatch messages from the work consumers of the tags it serves, only
while it has free slots (least-load placement without a central queue), claims
each run by compare-and-set on its snapshot, acks the message, executes, and
records the outcome. With the ``lead`` role it campaigns for leadership
(:mod:`rota.coordination.election`); while it leads it runs the leader duties
(:mod:`rota.leader.duties`: projector, reconciler, supervisor, scheduler).

It serves the control plane (gRPC over mutual TLS, :mod:`rota.control.server`):
Ping, GetStatus, StartJob, CancelJob, Drain, ConfirmContinuation. A cancel also
reaches it through the run's snapshot, which it re-reads for runs older than a
second, so a cancel works while gRPC is unreachable.

Shutdown (SIGTERM): stop pulling, let current runs finish for the grace period,
then hand the rest back (ORPHANED, re-dispatched) and say goodbye in the registry
as STOPPED_GRACEFUL. ``shutdown()`` is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig

from rota.bus import subjects
from rota.bus.connection import Bus, connect
from rota.bus.retry import TRANSIENT, through_outage
from rota.conf import RotaSettings
from rota.control.fence import EpochFence
from rota.domain.ids import new_worker_id
from rota.domain.snapshot import decode
from rota.domain.states import RunState
from rota.domain.workers import Thresholds, WorkerState
from rota.runs.dispatch import REV_HEADER, publish_dispatch
from rota.runs.dlq import dead_letter
from rota.runs.logs import LiveOutput, live_output
from rota.runs.transitions import RunStore, Versioned
from rota.worker.executors.base import Executor, Outcome

log = logging.getLogger(__name__)

#: How often a running run's snapshot gets a fresh heartbeat_at.
RUN_HEARTBEAT_SECONDS = 15.0
#: How often snapshots of runs older than this are re-read (cancel, lost ownership).
WATCH_SECONDS = 1.0
#: An unchanged registry entry is written again this often (it is written at
#: once whenever it changes).
REGISTRY_REFRESH_SECONDS = 30.0
#: How often the snapshots of followed runs (a Celery task: no slot held) are
#: re-read; a cancel also reaches them at once through CancelJob.
FOLLOWED_WATCH_SECONDS = 5.0
#: How long a fetched dispatch message may stay unacknowledged before JetStream
#: delivers it again. A worker acks right after its claim, so this only covers
#: fetch → claim (milliseconds); a worker that dies in between (taken but never
#: claimed) gives its run back this soon. Kept under the heartbeat TTL + confirm
#: window, the bound on every other re-dispatch. A redelivery to a live worker is
#: harmless: the claim is a compare-and-set and the loser drops the message.
WORK_ACK_WAIT_SECONDS = 3.0
#: A pinned consumer (``pin_<worker_id>``) without pull requests for this long is
#: removed by the server: what a SIGKILLed worker leaves behind is cleaned up.
#: A graceful stop deletes it at once; a busy worker re-creates it if it went.
PIN_INACTIVE_SECONDS = 30.0


def work_consumer_config(durable: str, *, pinned: bool = False) -> ConsumerConfig:
    """The pull consumer a worker fetches dispatch messages with."""
    return ConsumerConfig(
        durable_name=durable,
        name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=WORK_ACK_WAIT_SECONDS,
        max_deliver=-1,
        max_ack_pending=-1,
        inactive_threshold=PIN_INACTIVE_SECONDS if pinned else None,
    )


@dataclass
class Active:
    version: Versioned
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    #: False once the run is followed elsewhere (a sent Celery task): it then
    #: holds no slot of the worker's capacity.
    holds_slot: bool = True
    watched_at: float = 0.0


def default_executors(settings: RotaSettings) -> dict[str, Executor]:
    from rota.worker.executors.command import CommandExecutor
    from rota.worker.executors.pyoco import PyocoExecutor
    from rota.worker.executors.python import PythonExecutor

    executors: dict[str, Executor] = {
        "command": CommandExecutor(),
        "python": PythonExecutor(size=settings.python_pool_size or os.cpu_count() or 1),
        "pyoco": PyocoExecutor(
            settings.flow_modules,
            size=settings.pyoco_pool_size,
            cancel_grace=settings.pyoco_cancel_grace_seconds,
        ),
    }
    from rota.worker.executors.django import DjangoExecutor, find_manage_py

    manage_py = find_manage_py(settings.manage_py)
    if manage_py is not None:
        executors["django"] = DjangoExecutor(manage_py)
    if settings.celery_app or settings.celery_broker_url:
        from rota.celery.app import load_app
        from rota.worker.executors.celery import CeleryExecutor

        executors["celery"] = CeleryExecutor(
            load_app(settings),
            poll_seconds=settings.celery_poll_seconds,
            start_timeout=settings.celery_start_timeout_seconds,
            max_runtime=settings.celery_max_runtime_seconds,
        )
    return executors


class Worker:
    def __init__(
        self,
        settings: RotaSettings,
        *,
        tags: list[str] | None = None,
        capacity: int | None = None,
        roles: set[str] | None = None,
        executors: dict[str, Executor] | None = None,
        worker_id: str | None = None,
        control: bool = True,
        pods_config: Any = None,
    ) -> None:
        self.settings = settings
        self.tags = tags or ["default"]
        self.capacity = capacity or settings.worker_capacity
        self.roles = roles if roles is not None else {"execute", "lead"}
        self.worker_id = worker_id or new_worker_id(settings.node_id)
        self._executors = executors
        self.executors: dict[str, Executor] = {}
        self.bus: Bus | None = None
        self.store: RunStore | None = None
        self.active: dict[str, Active] = {}
        self.stop_pulling = asyncio.Event()
        self.stopped = asyncio.Event()
        self.draining = False
        self.detached = False
        self.fence = EpochFence()
        #: SchedulerSettings as published in KV; defaults until the first arrives.
        self.thresholds = Thresholds()
        self.campaign: Any = None
        self._pull_tasks: list[asyncio.Task] = []
        self.grpc_endpoint = ""
        self._control_enabled = control
        self.pods_config = pods_config
        self.pod_host: Any = None
        self._control_server: Any = None
        self._slot_freed = asyncio.Event()
        #: Slots promised to fetches in flight, so that several pull loops never
        #: fetch more runs together than the worker has free slots.
        self._reserved = 0
        self._tasks: list[asyncio.Task] = []
        self._shutdown_started = False
        self.started_at = time.time()
        self.completed = 0
        #: The registry entry last written, and when (monotonic).
        self._registered: dict[str, Any] | None = None
        self._registered_at = 0.0
        #: The sync of the wheel registry (workers with the execute role).
        self.wheels: Any = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self.bus = await connect(self.settings, name=f"rota-worker {self.worker_id}", ensure=True)
        self.store = RunStore(self.bus.runs)
        self.executors = (
            self._executors if self._executors is not None else default_executors(self.settings)
        )
        if self._executors is None:
            from rota.pods.executor import PodExecutor

            self.executors["pod"] = PodExecutor(self.bus)
        for executor in self.executors.values():
            # Executors that report progress (pyoco's task states) report to us.
            bind = getattr(executor, "bind_progress", None)
            if bind is not None:
                bind(self._progress)
            # Executors that follow work elsewhere (Celery) report its states to us.
            bind = getattr(executor, "bind_follow", None)
            if bind is not None:
                bind(self._followed)
        if self.pods_config is not None:
            from rota.pods.host import PodHost

            self.pod_host = PodHost(
                self.pods_config,
                node_id=self.settings.node_id,
                latest_replicas=self.settings.nats_replicas,
            )
            await self.pod_host.start(self.bus)
        bucket = self.bus.js.key_value
        self.workers_kv = await through_outage(bucket, subjects.WORKERS_BUCKET)
        self.heartbeats_kv = await through_outage(bucket, subjects.HEARTBEATS_BUCKET)
        self.leases_kv = await through_outage(bucket, subjects.LEASES_BUCKET)
        self.coord_kv = await through_outage(bucket, subjects.COORD_BUCKET)
        if self._control_enabled:
            await self._start_control()
        if "execute" in self.roles:
            await self._start_wheel_sync()
        await self._beat()
        await self._register(WorkerState.IDLE)
        await self._start_pulling()
        self._spawn(self._heartbeat_loop())
        self._spawn(self._watch_loop())
        self._spawn(self._settings_loop())
        self._spawn(self._marks_loop())
        if "lead" in self.roles:
            self._start_campaign()
        log.info(
            "worker %s started: tags=%s capacity=%d roles=%s control=%s",
            self.worker_id,
            self.tags,
            self.capacity,
            sorted(self.roles),
            self.grpc_endpoint or "off",
        )

    async def _start_pulling(self) -> None:
        if "execute" not in self.roles:
            return
        for tag in self.tags:
            subject, durable = subjects.work_subject(tag), subjects.work_consumer(tag)
            self._pull_tasks.append(
                asyncio.create_task(
                    self._pull_loop(
                        await self._work_subscription(subject, durable),
                        share=len(self.tags),
                        resubscribe=lambda s=subject, d=durable: self._work_subscription(s, d),
                    )
                )
            )
        subject, durable = subjects.pinned_subject(self.worker_id), self._pin_consumer
        self._pull_tasks.append(
            asyncio.create_task(
                self._pull_loop(
                    await self._work_subscription(subject, durable, pinned=True),
                    share=0,
                    # Gone after PIN_INACTIVE_SECONDS without a pull (all slots busy).
                    resubscribe=lambda: self._work_subscription(subject, durable, pinned=True),
                )
            )
        )

    @property
    def _pin_consumer(self) -> str:
        return f"pin_{subjects.safe_token(self.worker_id)}"

    async def _delete_pin_consumer(self, worker_id: str) -> None:
        """A stopping (or rejoining) worker's pinned consumer goes with it."""
        assert self.bus is not None
        with contextlib.suppress(Exception):
            await self.bus.js.delete_consumer(
                subjects.WORK_STREAM, f"pin_{subjects.safe_token(worker_id)}"
            )

    async def _start_wheel_sync(self) -> None:
        """Install the registry's wheels for our tags before taking runs, then
        keep following it (rota.worker.wheelsync)."""
        from rota.worker.wheelsync import WheelSync

        assert self.bus is not None
        self.wheels = WheelSync(
            self.bus.js,
            self.settings,
            worker_id=self.worker_id,
            tags=self.tags,
            on_change=self._use_wheels,
            on_error=self._show_wheel_state,
        )
        try:
            await self.wheels.step()
        except Exception:
            log.exception("first wheel sync failed; runs start without the registry's wheels")
        self._spawn(self.wheels.run(self.bus.nc, self.stopped))

    async def _use_wheels(self, env: Any) -> None:
        """A new wheel set is installed: runs from now on use it."""
        for executor in self.executors.values():
            use = getattr(executor, "use_environment", None)
            if use is not None:
                use(env)
        await self._show_wheel_state()

    async def _show_wheel_state(self) -> None:
        if self.workers_kv is not None and not self._shutdown_started:
            await self._register(self._state())

    def _start_campaign(self) -> None:
        from rota.coordination.election import Campaign
        from rota.leader.duties import start_leader_duties

        assert self.bus is not None
        bus = self.bus

        async def start_duties(epoch: int):  # type: ignore[no-untyped-def]
            self.fence.admit(epoch)  # our own control server follows our epoch too
            return await start_leader_duties(
                bus,
                self.settings,
                epoch=epoch,
                thresholds=lambda: self.thresholds,
                on_failure=lambda: self.campaign.duties_failed(),
            )

        self.campaign = Campaign(
            leases=self.leases_kv,
            coord=self.coord_kv,
            worker_id=lambda: self.worker_id,
            node_id=self.settings.node_id,
            thresholds=lambda: self.thresholds,
            start_duties=start_duties,
            eligible=lambda: not self.detached and not self._shutdown_started,
        )
        self._campaign_stop = asyncio.Event()
        self._spawn(self.campaign.run(self._campaign_stop))

    async def _start_control(self) -> None:
        from rota.control.server import start_control_server
        from rota.control.tls import TlsFiles

        s = self.settings
        self._control_server, port = await start_control_server(
            self, TlsFiles.from_settings(s), host=s.grpc_host, port=s.grpc_port, fence=self.fence
        )
        if s.grpc_advertise:
            self.grpc_endpoint = s.grpc_advertise
        elif s.grpc_host in ("127.0.0.1", "localhost", "::1"):
            self.grpc_endpoint = f"127.0.0.1:{port}"
        else:
            self.grpc_endpoint = f"{socket.gethostname()}:{port}"

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.append(task)

    async def _work_subscription(self, subject: str, durable: str, *, pinned: bool = False):  # type: ignore[no-untyped-def]
        """Bind to the durable consumer, creating it or bringing an existing
        one's config up to date first (``pull_subscribe`` alone keeps the
        config an older rota created, e.g. a 60 s ack_wait)."""
        assert self.bus is not None
        config = work_consumer_config(durable, pinned=pinned)
        config.filter_subject = subject
        # Many workers starting at once keep the JetStream API busy: ride it out.
        await through_outage(self.bus.js.add_consumer, subjects.WORK_STREAM, config=config)
        return await through_outage(
            self.bus.js.pull_subscribe_bind, durable, stream=subjects.WORK_STREAM
        )

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        await stop.wait()
        await self.shutdown()

    async def shutdown(self, grace: float | None = None) -> None:
        if self._shutdown_started:
            await self.stopped.wait()
            return
        self._shutdown_started = True
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        if self.campaign is not None:
            # Leadership goes first, so a standby takes over while we drain.
            self._campaign_stop.set()
            with contextlib.suppress(Exception):
                await self.campaign.step_down(cooldown=False)
        self.stop_pulling.set()
        self._slot_freed.set()
        await self._register("DRAINING")
        # Followed runs are not running here: hand them back at once; the next
        # attempt follows the same task.
        for act in [a for a in self.active.values() if not a.holds_slot]:
            assert self.store is not None and self.bus is not None
            released = await self.store.release(act.version)
            self._detach(act)
            act.cancel.set()
            if released is not None and released.snap.state == RunState.ORPHANED:
                await publish_dispatch(self.bus.js, released)
        pending = [a.task for a in self.active.values() if a.task and a.holds_slot]
        if pending:
            log.info(
                "worker %s: waiting up to %.0fs for %d run(s)", self.worker_id, grace, len(pending)
            )
            await asyncio.wait(pending, timeout=grace)
        # Past the grace: hand back what still runs, then stop its process.
        for act in list(self.active.values()):
            assert self.store is not None
            released = await self.store.release(act.version)
            self._detach(act)
            act.cancel.set()
            if released is not None and released.snap.state == RunState.ORPHANED:
                await publish_dispatch(self.bus.js, released)
        leftover = [a.task for a in self.active.values() if a.task]
        if leftover:
            await asyncio.wait(leftover, timeout=10)
        self.stopped.set()
        if self._control_server is not None:
            await self._control_server.stop(grace=1.0)
        for t in self._tasks + self._pull_tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._pull_tasks, return_exceptions=True)
        if "execute" in self.roles:
            await self._delete_pin_consumer(self.worker_id)
        if self.pod_host is not None:
            with contextlib.suppress(Exception):
                await self.pod_host.stop()
        for ex in self.executors.values():
            with contextlib.suppress(Exception):
                await ex.close()
        with contextlib.suppress(Exception):
            await self._register("STOPPED_GRACEFUL")
        if self.wheels is not None:
            self.wheels.remove()
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()
        log.info("worker %s stopped", self.worker_id)

    # -- what the control plane asks (rota.control.server.ControlledWorker) ----------

    def status(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "node_id": self.settings.node_id,
            "roles": sorted(self.roles),
            "tags": self.tags,
            "capacity": self.capacity,
            "load": self.load,
            "following": len(self.active) - self.load,
            "runs": [
                {
                    "run_id": run_id,
                    "attempt": a.version.snap.attempt,
                    "state": a.version.snap.state,
                    "job": a.version.snap.job,
                    "started_at": a.version.snap.started_at or 0.0,
                }
                for run_id, a in self.active.items()
            ],
            "draining": self.draining or self._shutdown_started or self.detached,
            "detached": self.detached,
            "started_at": self.started_at,
            "grpc_endpoint": self.grpc_endpoint,
            "pods": self.pod_host.status() if self.pod_host else None,
        }

    async def start_run(self, run_id: str) -> tuple[bool, str, int, str]:
        """StartJob: claim ``run_id`` and execute it here now.

        Returns (started, state, attempt, detail); state "" if the run is unknown."""
        assert self.store is not None
        current = await self.store.get(run_id)
        if current is None:
            return False, "", 0, f"no run {run_id}"
        if self.stop_pulling.is_set():
            return False, current.snap.state, current.snap.attempt, "draining: takes no new runs"
        if self.load >= self.capacity:
            return False, current.snap.state, current.snap.attempt, "busy: no free slot"
        claimed = await self.store.claim(current, self.worker_id, hold=self._hands_on(current.snap))
        if claimed is None:
            now = await self.store.get(run_id)
            state = now.snap.state if now else current.snap.state
            return False, state, now.snap.attempt if now else 0, f"not claimable in state {state}"
        self._launch(claimed)
        return True, claimed.snap.state, claimed.snap.attempt, "started"

    async def cancel_run(self, run_id: str, attempt: int = 0) -> tuple[bool, str]:
        """CancelJob: mark the run CANCELLING (if it is not yet) and stop its process."""
        assert self.store is not None
        act = self.active.get(run_id)
        if act is None or (attempt and act.version.snap.attempt != attempt):
            current = await self.store.get(run_id)
            return False, current.snap.state if current else ""
        marked = await self.store.request_cancel(run_id)
        if marked is not None and RunStore.still_owned(marked.snap, act.version.snap):
            act.version = marked
        act.cancel.set()
        return True, marked.snap.state if marked else RunState.CANCELLING.value

    @property
    def load(self) -> int:
        """Slots held: runs executing here (a followed run holds none)."""
        return sum(1 for a in self.active.values() if a.holds_slot)

    def _hands_on(self, snap: Any) -> bool:
        """True for a run whose work is handed on (its executor follows it)."""
        return bool(getattr(self.executors.get(snap.kind), "follows", False))

    def _detach(self, act: Active) -> None:
        detach = getattr(self.executors.get(act.version.snap.kind), "detach", None)
        if detach is not None:
            detach(act.version.snap.run_id)

    async def drain(self) -> int:
        """Drain: take no new work; the current runs finish."""
        if not self.draining:
            self.draining = True
            self.stop_pulling.set()
            self._slot_freed.set()
            await self._register("DRAINING")
        return len(self.active)

    def confirm(self, run_id: str, attempt: int, owner: str = "") -> tuple[bool, str, float]:
        """ConfirmContinuation: is this worker executing ``run_id`` at ``attempt``
        as the instance ``owner`` (its id when it claimed; empty: any)?"""
        act = self.active.get(run_id)
        if (
            act is None
            or act.version.snap.attempt != attempt
            or act.cancel.is_set()
            or (owner and act.version.snap.worker_id != owner)
        ):
            return False, act.version.snap.state if act else "", 0.0
        return True, act.version.snap.state, act.version.snap.heartbeat_at or 0.0

    # -- registry, heartbeats, operator marks, settings ------------------------------

    def registry_entry(self, state: str) -> dict:
        return {
            "worker_id": self.worker_id,
            "node_id": self.settings.node_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "roles": sorted(self.roles),
            "tags": self.tags,
            "capacity": self.capacity,
            "load": self.load,
            # Runs followed without a slot (Celery tasks).
            "following": len(self.active) - self.load,
            "runs": sorted(self.active),
            "state": state,
            "grpc_endpoint": self.grpc_endpoint,
            "draining": self.draining,
            "detached": self.detached,
            "leader": bool(self.campaign and self.campaign.is_leader),
            "subleader": bool(self.campaign and self.campaign.is_subleader),
            "started_at": self.started_at,
            "stopped_at": time.time() if state == WorkerState.STOPPED_GRACEFUL else None,
            "completed": self.completed,
            # What this worker follows now: shows a settings change has arrived.
            "thresholds": self.thresholds.as_dict(),
            "wheel_sync": dict(self.wheels.state)
            if self.wheels is not None
            else {"enabled": False},
        }

    async def _register(self, state: str, *, unless_unchanged: bool = False) -> None:
        """Write this worker's registry entry; with ``unless_unchanged`` only when
        it differs from the last one written (or that one is old): an idle
        worker's only steady NATS traffic is then its heartbeat."""
        entry = self.registry_entry(state)
        if (
            unless_unchanged
            and entry == self._registered
            and time.monotonic() - self._registered_at < REGISTRY_REFRESH_SECONDS
        ):
            return
        await self.workers_kv.put(self.worker_id, orjson.dumps(entry))
        self._registered, self._registered_at = entry, time.monotonic()

    async def _beat(self) -> None:
        await self.heartbeats_kv.put(self.worker_id, orjson.dumps({"load": self.load}))

    def _state(self) -> str:
        if self.draining or self.detached or self.stop_pulling.is_set():
            return WorkerState.DRAINING
        return WorkerState.RUNNING if self.active else WorkerState.IDLE

    async def _heartbeat_loop(self) -> None:
        last_run_beat = time.monotonic()
        while not self.stopped.is_set():
            try:
                await self._beat()
                if not self._shutdown_started:
                    await self._register(self._state(), unless_unchanged=True)
                if time.monotonic() - last_run_beat >= RUN_HEARTBEAT_SECONDS:
                    last_run_beat = time.monotonic()
                    await self._beat_runs()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.stopped.wait(), self.thresholds.heartbeat_interval_seconds
                )

    async def _marks_loop(self) -> None:
        """Detach and undock are marks an operator puts in KV: watch this worker's
        (a watch costs nothing while nothing changes; a poll costs a request per
        heartbeat). An undock gives the worker a new id, whose mark is watched next."""
        while not self.stopped.is_set():
            worker_id = self.worker_id
            watcher = await self.coord_kv.watch(subjects.detached_key(worker_id))
            try:
                async for entry in watcher:
                    if entry is None:
                        continue  # the initial values are all delivered
                    await self._follow_mark(bool(entry.value) and entry.operation is None)
                    if self.worker_id != worker_id:
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("watching operator marks failed; watching again", exc_info=True)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()

    async def _follow_mark(self, marked: bool) -> None:
        if marked and not self.detached:
            log.warning("worker %s detached by an operator: taking no new work", self.worker_id)
            self.detached = True
            self.stop_pulling.set()
            self._slot_freed.set()
            await self._register(self._state())
        elif self.detached and not marked and not self._shutdown_started:
            await self._rejoin()

    async def _rejoin(self) -> None:
        """Undocked: say goodbye under the old id and come back under a new one."""
        old = self.worker_id
        await self._register(WorkerState.STOPPED_GRACEFUL)
        for task in self._pull_tasks:
            task.cancel()
        await asyncio.gather(*self._pull_tasks, return_exceptions=True)
        self._pull_tasks.clear()
        await self._delete_pin_consumer(old)
        self.worker_id = new_worker_id(self.settings.node_id)
        self.detached = self.draining = False
        self.stop_pulling.clear()
        self.started_at = time.time()
        await self._beat()
        await self._register(self._state())
        await self._start_pulling()
        log.warning("worker %s undocked: rejoined as %s", old, self.worker_id)

    async def _settings_loop(self) -> None:
        """Follow the thresholds the leader publishes (SchedulerSettings, live)."""
        watcher = await self.coord_kv.watch(subjects.SETTINGS_KEY)
        try:
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                try:
                    self.thresholds = Thresholds.from_mapping(orjson.loads(entry.value))
                except (ValueError, TypeError):
                    log.warning("ignoring unreadable settings in KV")
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def _beat_runs(self) -> None:
        """Refresh heartbeat_at of long runs; notice a cancel or a lost run on the way."""
        assert self.store is not None
        now = time.time()
        for act in list(self.active.values()):
            if now - (act.version.snap.heartbeat_at or 0) < RUN_HEARTBEAT_SECONDS:
                continue
            self._follow(act, await self.store.heartbeat(act.version))

    async def _watch_loop(self) -> None:
        """Re-read the snapshots of runs older than WATCH_SECONDS: a cancel asked
        through the snapshot alone (gRPC unreachable), or a run that now belongs to
        a newer attempt, stops our copy. Short runs never pay for this."""
        assert self.store is not None
        while not self.stopped.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), WATCH_SECONDS)
            now = time.time()
            old = [
                a
                for a in self.active.values()
                if not a.cancel.is_set()
                and now - (a.version.snap.started_at or a.version.snap.assigned_at or now)
                >= WATCH_SECONDS
                and (a.holds_slot or now - a.watched_at >= FOLLOWED_WATCH_SECONDS)
            ]
            for a in old:
                a.watched_at = now
            if not old:
                continue
            try:
                found = await asyncio.gather(*(self.store.get(a.version.snap.run_id) for a in old))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("watching running runs failed", exc_info=True)
                continue
            for act, current in zip(old, found, strict=True):
                if current is None or not RunStore.still_owned(current.snap, act.version.snap):
                    self._follow(act, None)
                elif current.snap.state == RunState.CANCELLING:
                    self._follow(act, current)

    async def _progress(
        self, run_id: str, tasks: dict[str, str], records: dict[str, Any], truncated: bool
    ) -> None:
        """An executor's progress of a run we execute, onto its snapshot."""
        act = self.active.get(run_id)
        if act is None or self.store is None:
            return
        current = await self.store.progress(
            act.version, tasks=tasks, task_records=records, truncated=truncated
        )
        self._follow(act, current)

    def _follow(self, act: Active, current: Versioned | None) -> None:
        """Take in what the store says about a run we execute."""
        if current is None:
            # Owned by a newer attempt now: stop our copy, report nothing (a
            # followed task is left running for the attempt that follows it now).
            self._detach(act)
            act.cancel.set()
            return
        act.version = current
        if current.snap.state == RunState.CANCELLING:
            act.cancel.set()

    # -- the run path ------------------------------------------------------------------

    async def _pull_loop(self, sub, *, share: int, resubscribe=None) -> None:  # type: ignore[no-untyped-def]
        """Fetch runs while there are free slots.

        The tag loops split the free slots between them (``share`` loops); the
        pinned loop (``share=0``) fetches one run at a time. After a failed fetch
        the consumer is bound again (``resubscribe``): it may have been removed.
        """
        while not self.stop_pulling.is_set():
            free = self.capacity - self.load - self._reserved
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            want = 1 if share == 0 else max(1, free // share)
            self._reserved += want
            try:
                msgs = await sub.fetch(want, timeout=2.0)
                for m in msgs:
                    await self._accept(m)
            except (TimeoutError, NatsTimeout):
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.stop_pulling.is_set():
                    return
                log.exception("fetch failed")
                await asyncio.sleep(0.5)
                if resubscribe is not None:
                    with contextlib.suppress(Exception):
                        sub = await resubscribe()
            finally:
                self._reserved -= want
                self._slot_freed.set()

    async def _accept(self, msg) -> None:  # type: ignore[no-untyped-def]
        assert self.store is not None
        if self.stop_pulling.is_set():
            await msg.nak()
            return
        try:
            snap = decode(msg.data)
            rev = int(msg.headers[REV_HEADER])
        except Exception as exc:
            log.warning("dropping undecodable dispatch message on %s", msg.subject)
            assert self.bus is not None
            deliveries = msg.metadata.num_delivered if msg.metadata else None
            await dead_letter(
                self.bus.js,
                "invalid_payload",
                error=f"{type(exc).__name__}: {exc}",
                worker_id=self.worker_id,
                delivery_count=deliveries,
                extra={
                    "subject": msg.subject,
                    "payload": msg.data[:1000].decode("utf-8", "replace"),
                },
            )
            await msg.term()
            return
        wait = (snap.retry_at or 0.0) - time.time()
        if wait > 0.05:  # a retry not due yet: JetStream delivers it again then
            await msg.nak(delay=wait)
            return
        claimed = await self.store.claim(
            Versioned(snap, rev), self.worker_id, hold=self._hands_on(snap)
        )
        await msg.ack()
        if claimed is not None:
            self._launch(claimed)
        # else: claimed elsewhere, cancelled, or finished: nothing to do

    async def _wait_for_start(self, act: Active) -> bool:
        """A run claimed ahead of its time: wait for it, then ASSIGNED → RUNNING.
        False if it was cancelled or taken away meanwhile (the outcome, if any,
        is recorded here)."""
        assert self.store is not None
        delay = (act.version.snap.scheduled_for or 0.0) - time.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(act.cancel.wait(), delay)
        if act.cancel.is_set():
            await self.store.finish(
                act.version, Outcome(RunState.CANCELLED, error_summary="cancelled before its start")
            )
            return False
        started = await self.store.start(act.version)
        if started is None:
            return False
        act.version = started
        if started.snap.state != RunState.RUNNING:  # CANCELLING while it waited
            await self.store.finish(
                started, Outcome(RunState.CANCELLED, error_summary="cancelled before its start")
            )
            return False
        return True

    async def _record(self, act: Active, outcome: Outcome) -> Versioned | None:
        """Write the outcome; through any NATS outage, until this worker stops
        (a run whose outcome is lost would stay RUNNING under a live worker).
        Writes nothing (None) if the run was handed back or taken over meanwhile."""
        assert self.store is not None
        while True:
            try:
                return await self.store.finish(act.version, outcome)
            except TRANSIENT:
                if self.stopped.is_set():
                    raise
                log.warning(
                    "recording run %s: NATS unavailable; trying again", act.version.snap.run_id
                )
                await asyncio.sleep(1)

    async def _wait_until_due(self, act: Active) -> bool:
        """A run handed on (a Celery task) stays ASSIGNED until its task starts;
        it waits only for its ``scheduled_for``. False if cancelled meanwhile."""
        assert self.store is not None
        delay = (act.version.snap.scheduled_for or 0.0) - time.time()
        if delay > 0 and not act.version.snap.celery_task_id:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(act.cancel.wait(), delay)
        if act.cancel.is_set() and not act.version.snap.celery_task_id:
            await self.store.finish(
                act.version, Outcome(RunState.CANCELLED, error_summary="cancelled before its start")
            )
            return False
        return True

    async def _followed(
        self,
        run_id: str,
        *,
        celery_state: str,
        task_id: str = "",
        sent_at: float | None = None,
        detail: dict[str, Any] | None = None,
        started: bool = False,
    ) -> None:
        """What an executor that follows its work elsewhere says of a run: the
        first report frees the run's slot; each is recorded on the snapshot;
        ``started`` moves an ASSIGNED run to RUNNING."""
        act = self.active.get(run_id)
        if act is None or self.store is None:
            return
        if act.holds_slot:
            act.holds_slot = False
            self._slot_freed.set()
        current = await self.store.note_celery(
            act.version, celery_state=celery_state, task_id=task_id, sent_at=sent_at, detail=detail
        )
        self._follow(act, current)
        if started and current is not None and current.snap.state == RunState.ASSIGNED:
            running = await self.store.start(current)
            if running is not None:
                self._follow(act, running)

    def _launch(self, claimed: Versioned) -> None:
        act = Active(claimed)
        self.active[claimed.snap.run_id] = act
        act.task = asyncio.create_task(self._execute(act))

    async def _execute(self, act: Active) -> None:
        assert self.store is not None
        snap = act.version.snap
        try:
            if snap.state == RunState.ASSIGNED:
                ready = (
                    await self._wait_until_due(act)
                    if self._hands_on(snap)
                    else await self._wait_for_start(act)
                )
                if not ready:
                    return
            executor = self.executors.get(snap.kind)
            if executor is None:
                outcome = Outcome(
                    RunState.FAILED,
                    error_summary=f"this worker has no executor for kind {snap.kind!r}",
                )
                assert self.bus is not None
                await dead_letter(
                    self.bus.js,
                    "unknown_kind",
                    snap=snap,
                    error=outcome.error_summary,
                    worker_id=self.worker_id,
                )
            else:
                assert self.bus is not None
                output = LiveOutput(self.bus.nc, snap.run_id, act.version.snap.attempt)
                token = live_output.set(output)
                try:
                    outcome = await executor.run(snap, act.cancel)
                except Exception as exc:  # a bug in rota, not in the job
                    log.exception("executor %s crashed on run %s", snap.kind, snap.run_id)
                    outcome = Outcome(RunState.FAILED, error_summary=f"executor error: {exc}")
                finally:
                    live_output.reset(token)
                    await output.close()
            if act.version.snap.state == RunState.ASSIGNED and outcome.state in (
                RunState.SUCCEEDED,
                RunState.TIMED_OUT,
            ):
                # A followed run whose start was not seen (ASSIGNED cannot end so).
                started = await self.store.start(act.version)
                if started is not None:
                    act.version = started
            recorded = await self._record(act, outcome)
            self.completed += 1
            if recorded is not None and recorded.snap.state == RunState.PENDING:
                # A retry: the message waits out retry_at in whichever worker takes it.
                log.info(
                    "run %s: attempt %d %s; attempt %d at %.1fs from now",
                    snap.run_id,
                    snap.attempt,
                    outcome.state,
                    snap.attempt + 1,
                    (recorded.snap.retry_at or 0) - time.time(),
                )
                assert self.bus is not None
                await publish_dispatch(self.bus.js, recorded)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recording the outcome of run %s failed", snap.run_id)
        finally:
            self.active.pop(snap.run_id, None)
            self._slot_freed.set()
