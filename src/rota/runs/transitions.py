"""Every run transition rota makes, applied to the live snapshot in KV.

Each function computes the next snapshot with :func:`rota.domain.snapshot.advance`
(which checks the transition table) and writes it with a compare-and-set on the
KV revision. A lost compare-and-set re-reads the run and decides again; it never
writes blindly. SQL follows through the projector.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from rota.bus.retry import through_outage
from rota.bus.subjects import run_key
from rota.coordination.lease import LeadershipLost
from rota.domain.retry import RetryPolicy
from rota.domain.snapshot import RunSnapshot, advance, decode, tail, with_event
from rota.domain.states import CLAIMABLE, OWNED, ContinuationState, RunState, is_terminal
from rota.worker.executors.base import Outcome

#: How often a transition re-reads and retries after losing a compare-and-set.
MAX_CAS_RETRIES = 10


def _is_write(found: RunSnapshot, written: RunSnapshot) -> bool:
    """Whether ``found`` is the very snapshot this process wrote as ``written``."""
    return (
        found.worker_id == written.worker_id
        and found.attempt == written.attempt
        and found.assigned_at == written.assigned_at
        and found.state == written.state
    )


@dataclass(slots=True)
class Versioned:
    """A snapshot and the KV revision it was read at (the CAS token)."""

    snap: RunSnapshot
    rev: int


class RunStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, run_id: str) -> Versioned | None:
        try:
            entry = await through_outage(self.kv.get, run_key(run_id))
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.operation in ("DEL", "PURGE"):
            return None
        assert entry.revision is not None  # a stored entry always has one
        return Versioned(decode(entry.value), entry.revision)

    async def create(self, snap: RunSnapshot) -> Versioned:
        """Write a new run's first snapshot; if it exists already, return that one."""
        try:
            rev = await through_outage(self.kv.create, run_key(snap.run_id), snap.encode())
            return Versioned(snap, rev)
        except KeyWrongLastSequenceError:
            current = await self.get(snap.run_id)
            if current is None:  # deleted between the two calls: create again
                rev = await self.kv.create(run_key(snap.run_id), snap.encode())
                return Versioned(snap, rev)
            return current

    async def _write(self, new: RunSnapshot, rev: int) -> int | None:
        """The compare-and-set. Through a NATS outage it tries again; a try whose
        reply was lost after it landed then loses the compare-and-set to itself,
        and the caller's re-read finds the write done."""
        try:
            return await through_outage(self.kv.update, run_key(new.run_id), new.encode(), last=rev)
        except KeyWrongLastSequenceError:
            return None

    # -- worker side -------------------------------------------------------------

    async def claim(
        self, seen: Versioned, worker_id: str, *, hold: bool = False
    ) -> Versioned | None:
        """PENDING/ORPHANED → RUNNING, owned by ``worker_id`` with attempt + 1;
        → ASSIGNED instead for a run dispatched ahead of its ``scheduled_for``
        (assign-ahead), which :meth:`start` moves to RUNNING at that time, and
        for a run handed on (``hold``: a Celery task, RUNNING when Celery says
        it started).

        Returns None when the run is not claimable (already claimed, cancelled,
        terminal): the caller drops the message.
        """
        current: Versioned | None = seen
        new: RunSnapshot | None = None
        for _ in range(MAX_CAS_RETRIES):
            if current is not None and new is not None and _is_write(current.snap, new):
                return current  # our claim landed; only its reply was lost (a node died)
            if current is None or current.snap.state not in CLAIMABLE:
                return None
            if current.snap.attempt != seen.snap.attempt:
                return None  # a newer attempt was dispatched; that message will claim it
            now = time.time()
            attempt = current.snap.attempt + 1
            ahead = hold or (current.snap.scheduled_for or 0.0) > now
            new = advance(
                current.snap,
                RunState.ASSIGNED if ahead else RunState.RUNNING,
                now=now,
                attempt=attempt,
                worker_id=worker_id,
                assigned_at=now,
                started_at=None if ahead else now,
                heartbeat_at=now,
                finished_at=None,
                continuation_state=ContinuationState.NONE,
                continuation_deadline_at=None,
                retry_at=None,
            )
            if attempt > 1:  # a retry: keep the trail of attempts in the run
                new.events = with_event(new, "CLAIMED", at=now, worker_id=worker_id)
            rev = await self._write(new, current.rev)
            if rev is not None:
                return Versioned(new, rev)
            current = await self.get(seen.snap.run_id)
        return None

    async def start(self, mine: Versioned) -> Versioned | None:
        """ASSIGNED → RUNNING when a run claimed ahead reaches its time. Returns
        the current version (CANCELLING if it was cancelled while waiting), or None
        if the run is no longer ours."""

        def build(s: RunSnapshot) -> RunSnapshot | None:
            if s.state != RunState.ASSIGNED:
                return None
            now = time.time()
            return advance(s, RunState.RUNNING, now=now, started_at=now, heartbeat_at=now)

        return await self._update_owned(mine, build)

    async def finish(
        self, mine: Versioned, outcome: Outcome, *, rng: random.Random | None = None
    ) -> Versioned | None:
        """Record the outcome of the attempt this worker owns.

        If the run was asked to cancel meanwhile, a cancelled outcome ends it
        CANCELLED and any other outcome is recorded as it happened. A failed or
        timed-out attempt that the run's retry policy retries, with attempts
        left, goes back to PENDING with ``retry_at`` (the caller dispatches it
        again) and the attempt's outcome in an ATTEMPT_FAILED event. Returns None
        (and writes nothing) when the run now belongs to another attempt.
        """

        def build(s: RunSnapshot) -> RunSnapshot:
            now = time.time()
            error = outcome.error_summary[:2000]
            policy = RetryPolicy.from_mapping({**s.retry, "max_attempts": s.max_attempts})
            if (
                s.state == RunState.RUNNING
                and s.attempt < policy.max_attempts
                and policy.retries(outcome.state, exit_code=outcome.exit_code, error_summary=error)
            ):
                retry_at = now + policy.delay(s.attempt, rng)
                event = with_event(
                    s,
                    "ATTEMPT_FAILED",
                    at=now,
                    worker_id=s.worker_id,
                    state=str(outcome.state),
                    exit_code=outcome.exit_code,
                    error=error[:500],
                    retry_at=retry_at,
                )
                return advance(
                    s,
                    RunState.PENDING,
                    now=now,
                    worker_id=None,
                    heartbeat_at=now,
                    exit_code=outcome.exit_code,
                    error_summary=error,
                    stdout=tail(outcome.stdout),
                    stderr=tail(outcome.stderr),
                    retry_at=retry_at,
                    events=event,
                )
            return advance(
                s,
                outcome.state,
                now=now,
                finished_at=now,
                heartbeat_at=now,
                exit_code=outcome.exit_code,
                result=outcome.result,
                error_summary=error,
                stdout=tail(outcome.stdout),
                stderr=tail(outcome.stderr),
            )

        return await self._update_owned(mine, build)

    async def heartbeat(self, mine: Versioned) -> Versioned | None:
        """Refresh heartbeat_at of a run this worker owns. Returns the current
        version (its state may now be CANCELLING), or None if no longer ours."""

        def build(s: RunSnapshot) -> RunSnapshot:
            return advance(s, s.state, heartbeat_at=time.time())

        return await self._update_owned(mine, build, contended_is_ours=True)

    async def progress(
        self,
        mine: Versioned,
        *,
        tasks: dict[str, str],
        task_records: dict[str, Any],
        truncated: bool,
    ) -> Versioned | None:
        """Record a flow's task states and records on a run this worker owns.

        Only these progress fields change, never the run's state (a CANCELLING
        run stays CANCELLING). Returns the current version, or None if the run
        is no longer ours."""

        def build(s: RunSnapshot) -> RunSnapshot | None:
            if (s.tasks, s.task_records, s.task_records_truncated) == (
                tasks,
                task_records,
                truncated,
            ):
                return None
            return advance(
                s,
                s.state,
                tasks=tasks,
                task_records=task_records,
                task_records_truncated=truncated,
            )

        return await self._update_owned(mine, build, contended_is_ours=True)

    async def note_celery(
        self,
        mine: Versioned,
        *,
        celery_state: str,
        task_id: str = "",
        sent_at: float | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Versioned | None:
        """Record what Celery said of a run this worker follows: the task id
        and send time once, and each new task state, with an event (``CELERY_``
        and the state) that SQL keeps. The run's own state does not change
        here (:meth:`start` and :meth:`finish` do that). Returns the current
        version, or None if the run is no longer ours."""

        def build(s: RunSnapshot) -> RunSnapshot | None:
            if (
                not detail
                and s.celery_state == celery_state
                and (not task_id or s.celery_task_id == task_id)
            ):
                return None
            now = time.time()
            return advance(
                s,
                s.state,
                now=now,
                celery_task_id=task_id or s.celery_task_id,
                celery_sent_at=sent_at if sent_at is not None else s.celery_sent_at,
                celery_state=celery_state,
                events=with_event(
                    s,
                    f"CELERY_{celery_state}",
                    at=now,
                    task_id=task_id or s.celery_task_id,
                    **(detail or {}),
                ),
            )

        return await self._update_owned(mine, build, contended_is_ours=True)

    async def unmark_sent(self, seen: Versioned) -> Versioned | None:
        """A run whose snapshot says its Celery task was sent (``celery beat``
        writes that before sending) when the send failed: PENDING, the mark
        cleared, so the worker that claims it sends the task itself. None if
        the run is no longer PENDING or was never marked."""
        current: Versioned | None = seen
        for _ in range(MAX_CAS_RETRIES):
            if current is None or current.snap.state != RunState.PENDING:
                return None
            if not current.snap.celery_task_id:
                return current
            new = advance(
                current.snap,
                RunState.PENDING,
                celery_task_id="",
                celery_sent_at=None,
                celery_state="",
            )
            rev = await self._write(new, current.rev)
            if rev is not None:
                return Versioned(new, rev)
            current = await self.get(seen.snap.run_id)
        return None

    async def release(self, mine: Versioned) -> Versioned | None:
        """Hand a run back (graceful shutdown past its grace): → ORPHANED, no owner."""

        def build(s: RunSnapshot) -> RunSnapshot:
            cancelled = s.state == RunState.CANCELLING
            now = time.time()
            new = advance(
                s,
                RunState.CANCELLED if cancelled else RunState.ORPHANED,
                now=now,
                worker_id=None,
                error_summary="handed back by a stopping worker",
                events=with_event(s, "HANDED_BACK", at=now, worker_id=s.worker_id),
            )
            if cancelled:
                new.finished_at = now
            return new

        return await self._update_owned(mine, build)

    @staticmethod
    def still_owned(current: RunSnapshot, mine: RunSnapshot) -> bool:
        """True if ``current`` is still the attempt ``mine`` describes, held by the same worker."""
        return (
            current.worker_id == mine.worker_id
            and current.attempt == mine.attempt
            and current.state in OWNED
            and not is_terminal(current.state)
        )

    # -- control side --------------------------------------------------------------

    async def request_cancel(self, run_id: str) -> Versioned | None:
        """Ask a run to stop. Idempotent; returns the run's version afterwards.

        A run no worker holds (PENDING, ORPHANED) is CANCELLED at once; a run a
        worker owns (ASSIGNED, RUNNING) becomes CANCELLING, and its worker ends it
        CANCELLED; CANCELLING and terminal runs are left as they are. None if
        the run has no snapshot.
        """
        for _ in range(MAX_CAS_RETRIES):
            current = await self.get(run_id)
            if current is None:
                return None
            state = current.snap.state
            if state == RunState.CANCELLING or is_terminal(state):
                return current
            now = time.time()
            events = with_event(current.snap, "CANCEL_REQUESTED", at=now)
            if state in CLAIMABLE:
                new = advance(
                    current.snap,
                    RunState.CANCELLED,
                    now=now,
                    finished_at=now,
                    worker_id=None,
                    events=events,
                )
            else:
                new = advance(current.snap, RunState.CANCELLING, now=now, events=events)
            rev = await self._write(new, current.rev)
            if rev is not None:
                return Versioned(new, rev)
        return await self.get(run_id)

    # -- leader side: supervision of runs whose worker went silent -----------------

    @staticmethod
    def _fenced(s: RunSnapshot, epoch: int) -> None:
        """A leader's write to a run a newer leader has written is refused: the
        compare-and-set on the revision makes this check and the write one step."""
        if s.leader_epoch > epoch:
            raise LeadershipLost(f"run {s.run_id} carries epoch {s.leader_epoch} > {epoch}")

    async def _update_owned(
        self,
        seen: Versioned,
        build: Callable[[RunSnapshot], RunSnapshot | None],
        *,
        contended_is_ours: bool = False,
    ) -> Versioned | None:
        """CAS loop over a run still owned by the attempt ``seen`` describes;
        ``build(current)`` returns the next snapshot, or None to leave it as is.

        None means the run is no longer that attempt's, or (unless
        ``contended_is_ours``) that every compare-and-set lost to other writers;
        with ``contended_is_ours`` the last version read is returned then: a
        heartbeat or progress write simply tries again next time."""
        current: Versioned | None = seen
        for _ in range(MAX_CAS_RETRIES):
            if current is None or not self.still_owned(current.snap, seen.snap):
                return None
            new = build(current.snap)
            if new is None:
                return current
            rev = await self._write(new, current.rev)
            if rev is not None:
                return Versioned(new, rev)
            current = await self.get(seen.snap.run_id)
        if contended_is_ours and current is not None and self.still_owned(current.snap, seen.snap):
            return current
        return None

    async def begin_confirming(
        self, seen: Versioned, *, deadline: float, epoch: int
    ) -> Versioned | None:
        """A silent worker's run: continuation NONE/CONFIRMED → CONFIRMING until
        ``deadline``. While CONFIRMING the run is never re-dispatched."""

        def build(s: RunSnapshot) -> RunSnapshot | None:
            self._fenced(s, epoch)
            if s.continuation_state == ContinuationState.CONFIRMING:
                return None
            now = time.time()
            return advance(
                s,
                s.state,
                now=now,
                continuation_state=ContinuationState.CONFIRMING,
                continuation_deadline_at=deadline,
                leader_epoch=epoch,
                events=with_event(s, "CONFIRMING", at=now, worker_id=s.worker_id, epoch=epoch),
            )

        return await self._update_owned(seen, build)

    async def confirmed(self, seen: Versioned, *, epoch: int) -> Versioned | None:
        """The worker answered that it still runs this attempt: CONFIRMED, it continues."""

        def build(s: RunSnapshot) -> RunSnapshot | None:
            self._fenced(s, epoch)
            if s.continuation_state != ContinuationState.CONFIRMING:
                return None
            now = time.time()
            return advance(
                s,
                s.state,
                now=now,
                continuation_state=ContinuationState.CONFIRMED,
                continuation_deadline_at=None,
                leader_epoch=epoch,
                events=with_event(s, "CONFIRMED", at=now, worker_id=s.worker_id, epoch=epoch),
            )

        return await self._update_owned(seen, build)

    async def take_away(self, seen: Versioned, *, epoch: int, reason: str) -> Versioned | None:
        """Unconfirmed past the deadline, or denied by its worker: take the run away.

        RUNNING/ASSIGNED → ORPHANED (dispatched again, attempt + 1) while the job
        has attempts left, else → FAILED; CANCELLING → CANCELLED (it was being
        stopped anyway). The caller re-dispatches an ORPHANED result and writes a
        DLQ record for a FAILED one."""

        def build(s: RunSnapshot) -> RunSnapshot | None:
            self._fenced(s, epoch)
            now = time.time()
            common: dict[str, Any] = {
                "now": now,
                "worker_id": None,
                "continuation_state": ContinuationState.REJECTED,
                "continuation_deadline_at": None,
                "leader_epoch": epoch,
            }
            if s.state == RunState.CANCELLING:
                event = with_event(s, "CANCELLED", at=now, reason=reason)
                return advance(s, RunState.CANCELLED, finished_at=now, events=event, **common)
            if s.attempt >= s.max_attempts:
                return advance(
                    s,
                    RunState.FAILED,
                    finished_at=now,
                    error_summary=f"{reason}; no attempts left ({s.attempt} of {s.max_attempts})",
                    events=with_event(s, "FAILED", at=now, worker_id=s.worker_id, reason=reason),
                    **common,
                )
            event = with_event(
                s, "ORPHANED", at=now, worker_id=s.worker_id, reason=reason, epoch=epoch
            )
            return advance(s, RunState.ORPHANED, events=event, **common)

        return await self._update_owned(seen, build)


def cancel_held(run_id: str) -> bool:
    """Cancel a run the queue policy holds back. It was never dispatched and has
    no snapshot, so this transition is a compare-and-set on its SQL row alone
    (held and PENDING → CANCELLED). Runs on the SQL thread."""
    from datetime import UTC, datetime

    from rota.models import JobRun

    now = datetime.now(UTC)
    changed = JobRun.objects.filter(id=run_id, held=True, state=RunState.PENDING).update(
        state=RunState.CANCELLED, held=False, finished_at=now, updated_at=now
    )
    return changed == 1
