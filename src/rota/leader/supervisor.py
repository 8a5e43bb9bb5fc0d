"""Supervision (DESIGN §4): runs of workers that went silent.

Each step, from the live registry and heartbeats (server-side ages):

- a run owned by a worker whose heartbeat expired, or that an operator detached,
  goes to continuation CONFIRMING with a deadline;
- for a CONFIRMING run the leader asks the worker, ConfirmContinuation, with the
  settings' retries and interval: "yes" → CONFIRMED, the run goes on; "no" (the
  worker answers but does not run that attempt) or no answer by the deadline →
  taken away: ORPHANED and dispatched again (attempt + 1), or FAILED with a DLQ
  record once the job's attempts are spent. A CONFIRMING run is never
  re-dispatched;
- ORPHANED runs not dispatched again (a leader died between the two steps, a
  stopping worker's hand-back), and retries past their time (a worker died
  between recording the failed attempt and publishing), are published again
  (the message id de-duplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson

from rota.bus import subjects
from rota.bus.connection import Bus
from rota.control.client import ControlClient, ControlError, StaleEpoch, WorkerUnreachable
from rota.coordination.lease import LeaderFence, LeadershipLost
from rota.coordination.mirror import KvMirror
from rota.domain.states import ContinuationState, RunState
from rota.domain.workers import Thresholds, WorkerState, worker_state
from rota.runs.dispatch import publish_dispatch
from rota.runs.dlq import dead_letter
from rota.runs.sqlwriter import sql_writer
from rota.runs.transitions import RunStore, Versioned

log = logging.getLogger(__name__)

#: Workers whose runs are supervised.
SILENT = frozenset({WorkerState.DISCONNECTED, WorkerState.DETACHED, WorkerState.STOPPED_GRACEFUL})


class Supervisor:
    def __init__(
        self,
        bus: Bus,
        *,
        epoch: int,
        thresholds: Callable[[], Thresholds],
        control: ControlClient,
        registry: KvMirror,
        heartbeats: KvMirror,
        marks: KvMirror,
        fence: LeaderFence | None = None,
    ) -> None:
        self.bus = bus
        self.fence = fence
        self.epoch = epoch
        self.thresholds = thresholds
        self.control = control
        self.registry = registry
        self.heartbeats = heartbeats
        self.marks = marks
        self.store = RunStore(bus.runs)
        self._confirming: dict[str, asyncio.Task[None]] = {}
        #: Set when a worker refused our epoch: a newer leader exists.
        self.deposed = asyncio.Event()
        self._last_orphan_sweep = 0.0
        self._republished: dict[str, float] = {}

    async def _fence(self) -> None:
        """Before every write: still the leader of our epoch (LeadershipLost if not)."""
        if self.fence is not None:
            await self.fence.check()

    # -- what the registry says ---------------------------------------------------------

    def worker_states(self) -> dict[str, tuple[WorkerState, dict]]:
        t = self.thresholds()
        now = self.heartbeats.server_now()
        out = {}
        for worker_id, item in self.registry.items.items():
            entry = orjson.loads(item.value)
            state = worker_state(
                entry.get("state", ""),
                heartbeat_age=self.heartbeats.age(worker_id, now) if now else None,
                ttl=t.heartbeat_ttl_seconds,
                detached=subjects.detached_key(worker_id) in self.marks.items,
            )
            out[worker_id] = (state, entry)
        return out

    # -- the step -------------------------------------------------------------------------

    async def step(self) -> bool:
        self.control.timeout = self.thresholds().grpc_timeout_seconds  # settings apply live
        states = self.worker_states()
        silent = {wid: entry for wid, (state, entry) in states.items() if state in SILENT}
        did = False
        if silent:
            # SQL, and what each worker last listed in the registry: a claim made
            # just before a leader died may not be projected yet.
            owned = set(await sql_writer().call(_owned_runs, list(silent)))
            owned |= {(r, wid) for wid, entry in silent.items() for r in entry.get("runs", [])}
            rows = sorted((run_id, wid) for run_id, wid in owned if run_id not in self._confirming)
            # One round trip for all of them, not one after another.
            current = await asyncio.gather(*(self.store.get(run_id) for run_id, _ in rows))
            for (_, worker_id), v in zip(rows, current, strict=True):
                if v is None or v.snap.worker_id != worker_id:
                    continue
                did = await self._supervise(v, silent[worker_id].get("grpc_endpoint", "")) or did
        if time.monotonic() - self._last_orphan_sweep > 5.0:
            self._last_orphan_sweep = time.monotonic()
            did = await self._redispatch_orphans() or did
            did = await self._settle_confirming(states, silent) or did
        return did

    async def _settle_confirming(self, states: dict, silent: dict) -> bool:
        """Runs left CONFIRMING by an earlier leader (it died, or was deposed,
        mid-confirmation) whose worker is back: ask the worker, so that each
        ends CONFIRMED or taken away instead of CONFIRMING for good."""
        rows = await sql_writer().call(_confirming_runs)
        did = False
        for run_id, worker_id in rows:
            if run_id in self._confirming or worker_id in silent or worker_id not in states:
                continue
            v = await self.store.get(run_id)
            if v is None or v.snap.worker_id != worker_id:
                continue
            if v.snap.continuation_state != ContinuationState.CONFIRMING:
                continue
            endpoint = states[worker_id][1].get("grpc_endpoint", "")
            did = await self._supervise(v, endpoint) or did
        return did

    async def _supervise(self, v: Versioned, endpoint: str) -> bool:
        t = self.thresholds()
        c = v.snap.continuation_state
        if c in (ContinuationState.NONE, ContinuationState.CONFIRMED, ContinuationState.REJECTED):
            if c == ContinuationState.CONFIRMED and not self._confirmation_stale(v, t):
                return False
            deadline = time.time() + t.confirm_window_seconds
            await self._fence()
            marked = await self.store.begin_confirming(v, deadline=deadline, epoch=self.epoch)
            if marked is None:
                return False
            log.info(
                "run %s: worker %s is silent; CONFIRMING until %.1fs from now",
                v.snap.run_id,
                v.snap.worker_id,
                t.confirm_window_seconds,
            )
            v = marked
        run_id = v.snap.run_id
        task = asyncio.create_task(self._confirm(v, endpoint))
        self._confirming[run_id] = task
        task.add_done_callback(lambda _t: self._confirming.pop(run_id, None))
        return True

    @staticmethod
    def _confirmation_stale(v: Versioned, t: Thresholds) -> bool:
        """A CONFIRMED run of a worker still silent is asked again, now and then."""
        last = max((e["at"] for e in v.snap.events if e.get("event") == "CONFIRMED"), default=0.0)
        return time.time() - last > max(t.heartbeat_ttl_seconds, t.confirm_window_seconds)

    async def _confirm(self, v: Versioned, endpoint: str) -> None:
        try:
            await self._confirm_or_take_away(v, endpoint)
        except LeadershipLost as exc:
            log.warning("supervisor: %s", exc)
            self.deposed.set()

    async def _confirm_or_take_away(self, v: Versioned, endpoint: str) -> None:
        t = self.thresholds()
        run_id, attempt = v.snap.run_id, v.snap.attempt
        deadline = v.snap.continuation_deadline_at or time.time()
        for i in range(max(1, t.continuation_retries)):
            if i:
                await asyncio.sleep(t.continuation_interval_seconds)
            if not endpoint:
                break
            try:
                reply = await self.control.confirm_continuation(
                    endpoint, run_id, attempt, v.snap.worker_id or ""
                )
            except StaleEpoch:
                log.warning(
                    "worker at %s has seen a newer leader than epoch %d", endpoint, self.epoch
                )
                self.deposed.set()
                return
            except ControlError as exc:
                log.debug("ConfirmContinuation %s on %s: %s", run_id, endpoint, exc)
                if isinstance(exc, WorkerUnreachable) and exc.refused:
                    # Nothing listens there: the worker process is gone, and its
                    # runs' processes with it. Waiting out the deadline gains nothing.
                    await self._take_away(
                        v, f"worker {v.snap.worker_id} is gone: {endpoint} refuses connections"
                    )
                    return
                continue
            if reply.executing:
                await self._fence()
                await self.store.confirmed(v, epoch=self.epoch)
                log.info(
                    "run %s: worker %s confirmed it still runs attempt %d",
                    run_id,
                    v.snap.worker_id,
                    attempt,
                )
                return
            if reply.not_me:
                reason = f"worker {v.snap.worker_id} is gone: {endpoint} is now {reply.worker_id}"
            else:
                reason = f"worker {v.snap.worker_id} does not run attempt {attempt}"
            await self._take_away(v, reason)
            return
        if time.time() >= deadline:
            await self._take_away(
                v, f"worker {v.snap.worker_id} lost: no confirmation before the deadline"
            )
        # else: still within the deadline; the next step asks again

    async def _take_away(self, v: Versioned, reason: str) -> None:
        await self._fence()
        result = await self.store.take_away(v, epoch=self.epoch, reason=reason)
        if result is None:
            return  # it finished or moved on meanwhile
        log.warning("run %s: %s → %s", v.snap.run_id, reason, result.snap.state)
        if result.snap.state == RunState.ORPHANED:
            await publish_dispatch(self.bus.js, result)
        elif result.snap.state == RunState.FAILED:
            await dead_letter(
                self.bus.js,
                "retries_exhausted",
                snap=result.snap,
                error=result.snap.error_summary,
                worker_id=v.snap.worker_id,
                delivery_count=result.snap.attempt,
            )

    async def _redispatch_orphans(self) -> bool:
        run_ids = await sql_writer().call(_stale_orphans)
        now = time.monotonic()
        self._republished = {k: v for k, v in self._republished.items() if now - v < 300}
        did = False
        for run_id in run_ids:
            # Within JetStream's 120 s duplicate window a re-publish is dropped;
            # past it, once a minute is enough for a run no worker has taken.
            if now - self._republished.get(run_id, -1e9) < 60:
                continue
            v = await self.store.get(run_id)
            if v is not None and v.snap.state in (RunState.ORPHANED, RunState.PENDING):
                await self._fence()
                await publish_dispatch(self.bus.js, v)
                self._republished[run_id] = now
                did = True
        return did

    async def run(self, stop: asyncio.Event, interval: float = 0.5) -> None:
        errors = 0
        try:
            while not stop.is_set():
                if self.deposed.is_set():
                    raise LeadershipLost(f"epoch {self.epoch} is stale")
                try:
                    await self.step()
                    errors = 0
                except (asyncio.CancelledError, LeadershipLost):
                    raise
                except Exception:
                    errors += 1
                    log.exception("supervisor step failed (%d in a row)", errors)
                    if errors >= 10:
                        raise
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            for task in list(self._confirming.values()):
                task.cancel()


def _owned_runs(worker_ids: list[str]) -> list[tuple[str, str]]:
    from rota.models import JobRun

    return list(
        JobRun.objects.filter(
            worker_id__in=worker_ids,
            state__in=[RunState.ASSIGNED, RunState.RUNNING, RunState.CANCELLING],
        ).values_list("id", "worker_id")[:1000]
    )


def _confirming_runs() -> list[tuple[str, str]]:
    from rota.models import JobRun

    return list(
        JobRun.objects.filter(
            continuation_state=ContinuationState.CONFIRMING,
            state__in=[RunState.ASSIGNED, RunState.RUNNING, RunState.CANCELLING],
        ).values_list("id", "worker_id")[:500]
    )


def _stale_orphans() -> list[str]:
    from django.db.models import Q

    from rota.models import JobRun

    cutoff = datetime.now(UTC) - timedelta(seconds=5)
    # ORPHANED, or a retry past its time: the worker that wrote it may have died
    # before it published the message.
    stale = Q(state=RunState.ORPHANED, updated_at__lt=cutoff) | Q(
        state=RunState.PENDING, retry_at__lt=cutoff
    )
    return list(JobRun.objects.filter(stale).values_list("id", flat=True)[:500])
