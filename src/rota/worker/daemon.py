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


@dataclass
class Active:
    version: Versioned
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


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
            sub = await self._work_subscription(
                subjects.work_subject(tag), subjects.work_consumer(tag)
            )
            self._pull_tasks.append(asyncio.create_task(self._pull_loop(sub, share=len(self.tags))))
        pinned = await self._work_subscription(
            subjects.pinned_subject(self.worker_id), f"pin_{subjects.safe_token(self.worker_id)}"
        )
        self._pull_tasks.append(asyncio.create_task(self._pull_loop(pinned, share=0)))

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

    async def _work_subscription(self, subject: str, durable: str):  # type: ignore[no-untyped-def]
        assert self.bus is not None
        # Many workers starting at once keep the JetStream API busy: ride it out.
        return await through_outage(
            self.bus.js.pull_subscribe,
            subject,
            durable=durable,
            stream=subjects.WORK_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                # The message is acked right after the claim, so ack_wait only
                # covers fetch → claim; a running run is guarded by heartbeats.
                ack_wait=60,
                max_deliver=-1,
                max_ack_pending=-1,
                inactive_threshold=3600.0 if durable.startswith("pin_") else None,
            ),
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
        pending = [a.task for a in self.active.values() if a.task]
        if pending:
            log.info(
                "worker %s: waiting up to %.0fs for %d run(s)", self.worker_id, grace, len(pending)
            )
            await asyncio.wait(pending, timeout=grace)
        # Past the grace: hand back what still runs, then stop its process.
        for act in list(self.active.values()):
            assert self.store is not None
            released = await self.store.release(act.version)
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
        if self.pod_host is not None:
            with contextlib.suppress(Exception):
                await self.pod_host.stop()
        for ex in self.executors.values():
            with contextlib.suppress(Exception):
                await ex.close()
        with contextlib.suppress(Exception):
            await self._register("STOPPED_GRACEFUL")
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
            "load": len(self.active),
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
        if len(self.active) >= self.capacity:
            return False, current.snap.state, current.snap.attempt, "busy: no free slot"
        claimed = await self.store.claim(current, self.worker_id)
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

    async def drain(self) -> int:
        """Drain: take no new work; the current runs finish."""
        if not self.draining:
            self.draining = True
            self.stop_pulling.set()
            self._slot_freed.set()
            await self._register("DRAINING")
        return len(self.active)

    def confirm(self, run_id: str, attempt: int) -> tuple[bool, str, float]:
        """ConfirmContinuation: is this worker executing ``run_id`` at ``attempt``?"""
        act = self.active.get(run_id)
        if act is None or act.version.snap.attempt != attempt or act.cancel.is_set():
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
            "load": len(self.active),
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
        await self.heartbeats_kv.put(self.worker_id, orjson.dumps({"load": len(self.active)}))

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
                and now - (a.version.snap.started_at or now) >= WATCH_SECONDS
            ]
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
            act.cancel.set()  # owned by a newer attempt now: stop our copy, report nothing
            return
        act.version = current
        if current.snap.state == RunState.CANCELLING:
            act.cancel.set()

    # -- the run path ------------------------------------------------------------------

    async def _pull_loop(self, sub, *, share: int) -> None:  # type: ignore[no-untyped-def]
        """Fetch runs while there are free slots.

        The tag loops split the free slots between them (``share`` loops); the
        pinned loop (``share=0``) fetches one run at a time.
        """
        while not self.stop_pulling.is_set():
            free = self.capacity - len(self.active) - self._reserved
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
        claimed = await self.store.claim(Versioned(snap, rev), self.worker_id)
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

    async def _record(self, act: Active, outcome: Outcome) -> None:
        """Write the outcome; through any NATS outage, until this worker stops
        (a run whose outcome is lost would stay RUNNING under a live worker).
        Writes nothing if the run was handed back or taken over meanwhile."""
        assert self.store is not None
        while True:
            try:
                await self.store.finish(act.version, outcome)
                return
            except TRANSIENT:
                if self.stopped.is_set():
                    raise
                log.warning(
                    "recording run %s: NATS unavailable; trying again", act.version.snap.run_id
                )
                await asyncio.sleep(1)

    def _launch(self, claimed: Versioned) -> None:
        act = Active(claimed)
        self.active[claimed.snap.run_id] = act
        act.task = asyncio.create_task(self._execute(act))

    async def _execute(self, act: Active) -> None:
        assert self.store is not None
        snap = act.version.snap
        try:
            if snap.state == RunState.ASSIGNED and not await self._wait_for_start(act):
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
            await self._record(act, outcome)
            self.completed += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recording the outcome of run %s failed", snap.run_id)
        finally:
            self.active.pop(snap.run_id, None)
            self._slot_freed.set()
