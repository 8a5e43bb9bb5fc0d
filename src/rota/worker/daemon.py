"""The worker daemon (``rota worker``).

It pulls dispatch messages from the work consumers of the tags it serves, only
while it has free slots (least-load placement without a central queue), claims
each run by compare-and-set on its snapshot, acks the message, executes, and
records the outcome. With the ``lead`` role it also runs the projector and the
reconciler (the coordination issue moves them under the elected leader).

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

import orjson
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig

from rota.bus import subjects
from rota.bus.connection import Bus, connect
from rota.conf import RotaSettings
from rota.domain.ids import msg_id, new_worker_id
from rota.domain.snapshot import decode
from rota.domain.states import RunState
from rota.runs.service import REV_HEADER
from rota.runs.transitions import RunStore, Versioned
from rota.worker.executors.base import Executor, Outcome

log = logging.getLogger(__name__)

#: How often a running run's snapshot gets a fresh heartbeat_at.
RUN_HEARTBEAT_SECONDS = 15.0
#: How often the worker's own heartbeat is written.
HEARTBEAT_SECONDS = 5.0


@dataclass
class Active:
    version: Versioned
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


def default_executors(settings: RotaSettings) -> dict[str, Executor]:
    from rota.worker.executors.command import CommandExecutor
    from rota.worker.executors.python import PythonExecutor

    return {
        "command": CommandExecutor(),
        "python": PythonExecutor(size=settings.python_pool_size or os.cpu_count() or 1),
    }


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
        self._slot_freed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._shutdown_started = False
        self.started_at = time.time()
        self.completed = 0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self.bus = await connect(self.settings, name=f"rota-worker {self.worker_id}", ensure=True)
        self.store = RunStore(self.bus.runs)
        self.executors = (
            self._executors if self._executors is not None else default_executors(self.settings)
        )
        self.workers_kv = await self.bus.js.key_value(subjects.WORKERS_BUCKET)
        self.heartbeats_kv = await self.bus.js.key_value(subjects.HEARTBEATS_BUCKET)
        await self._register("IDLE")
        subs = []
        if "execute" in self.roles:
            for tag in self.tags:
                subs.append(
                    await self._work_subscription(
                        subjects.work_subject(tag), subjects.work_consumer(tag)
                    )
                )
            subs.append(
                await self._work_subscription(
                    subjects.pinned_subject(self.worker_id),
                    f"pin_{subjects.safe_token(self.worker_id)}",
                )
            )
        for sub in subs:
            self._spawn(self._pull_loop(sub))
        self._spawn(self._heartbeat_loop())
        if "lead" in self.roles:
            from rota.leader.projector import Projector
            from rota.leader.reconciler import Reconciler
            from rota.runs.service import RunService

            self._spawn(Projector(self.bus).run(self.stopped))
            self._spawn(Reconciler(RunService(self.bus)).run(self.stopped))
        log.info(
            "worker %s started: tags=%s capacity=%d roles=%s",
            self.worker_id,
            self.tags,
            self.capacity,
            sorted(self.roles),
        )

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.append(task)

    async def _work_subscription(self, subject: str, durable: str):  # type: ignore[no-untyped-def]
        assert self.bus is not None
        return await self.bus.js.pull_subscribe(
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
                await self._redispatch(released)
        leftover = [a.task for a in self.active.values() if a.task]
        if leftover:
            await asyncio.wait(leftover, timeout=10)
        self.stopped.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ex in self.executors.values():
            with contextlib.suppress(Exception):
                await ex.close()
        with contextlib.suppress(Exception):
            await self._register("STOPPED_GRACEFUL")
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()
        log.info("worker %s stopped", self.worker_id)

    async def _redispatch(self, v: Versioned) -> None:
        assert self.bus is not None
        await self.bus.js.publish(
            subjects.work_subject(v.snap.tag),
            v.snap.encode(),
            headers={"Nats-Msg-Id": msg_id(v.snap.run_id, v.snap.attempt), REV_HEADER: str(v.rev)},
        )

    # -- registry --------------------------------------------------------------------

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
            "started_at": self.started_at,
            "stopped_at": time.time() if state == "STOPPED_GRACEFUL" else None,
            "completed": self.completed,
        }

    async def _register(self, state: str) -> None:
        await self.workers_kv.put(self.worker_id, orjson.dumps(self.registry_entry(state)))

    async def _heartbeat_loop(self) -> None:
        last_run_beat = time.monotonic()
        while not self.stopped.is_set():
            try:
                await self.heartbeats_kv.put(
                    self.worker_id, orjson.dumps({"load": len(self.active)})
                )
                if not self.stop_pulling.is_set():
                    await self._register("RUNNING" if self.active else "IDLE")
                if time.monotonic() - last_run_beat >= RUN_HEARTBEAT_SECONDS:
                    last_run_beat = time.monotonic()
                    await self._beat_runs()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), HEARTBEAT_SECONDS)

    async def _beat_runs(self) -> None:
        """Refresh heartbeat_at of long runs; notice a cancel or a lost run on the way."""
        assert self.store is not None
        now = time.time()
        for act in list(self.active.values()):
            if now - (act.version.snap.heartbeat_at or 0) < RUN_HEARTBEAT_SECONDS:
                continue
            current = await self.store.heartbeat(act.version)
            if current is None:
                act.cancel.set()  # owned by a newer attempt now: stop our copy
            elif current.snap.state == RunState.CANCELLING:
                act.version = current
                act.cancel.set()
            else:
                act.version = current

    # -- the run path ------------------------------------------------------------------

    async def _pull_loop(self, sub) -> None:  # type: ignore[no-untyped-def]
        while not self.stop_pulling.is_set():
            free = self.capacity - len(self.active)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                msgs = await sub.fetch(free, timeout=2.0)
            except NatsTimeout:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.stop_pulling.is_set():
                    return
                log.exception("fetch failed")
                await asyncio.sleep(0.5)
                continue
            for m in msgs:
                await self._accept(m)

    async def _accept(self, msg) -> None:  # type: ignore[no-untyped-def]
        assert self.store is not None
        if self.stop_pulling.is_set():
            await msg.nak()
            return
        try:
            snap = decode(msg.data)
            rev = int(msg.headers[REV_HEADER])
        except Exception:
            log.warning("dropping undecodable dispatch message on %s", msg.subject)
            await msg.term()
            return
        claimed = await self.store.claim(Versioned(snap, rev), self.worker_id)
        await msg.ack()
        if claimed is None:
            return  # claimed elsewhere, cancelled, or finished: nothing to do
        act = Active(claimed)
        self.active[snap.run_id] = act
        act.task = asyncio.create_task(self._execute(act))

    async def _execute(self, act: Active) -> None:
        assert self.store is not None
        snap = act.version.snap
        try:
            executor = self.executors.get(snap.kind)
            if executor is None:
                outcome = Outcome(
                    RunState.FAILED,
                    error_summary=f"this worker has no executor for kind {snap.kind!r}",
                )
            else:
                try:
                    outcome = await executor.run(snap, act.cancel)
                except Exception as exc:  # a bug in rota, not in the job
                    log.exception("executor %s crashed on run %s", snap.kind, snap.run_id)
                    outcome = Outcome(RunState.FAILED, error_summary=f"executor error: {exc}")
            # Writes nothing if the run was handed back or taken over meanwhile.
            await self.store.finish(act.version, outcome)
            self.completed += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recording the outcome of run %s failed", snap.run_id)
        finally:
            self.active.pop(snap.run_id, None)
            self._slot_freed.set()
