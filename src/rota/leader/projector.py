"""Projection of live run snapshots into SQL (DESIGN §4, Projection).

The projector reads the run bucket's stream with a durable pull consumer, so a
projector that starts (or a new leader) continues from where the last one stopped.
Each fetched batch is reduced to the newest version of each run and applied in one
transaction with one ``UPDATE ... WHERE id = ? AND version < ?`` per run, sent as
one ``executemany``; applying a batch twice changes nothing. Captured output of
finished runs goes to RunLog rows, unique per (run, attempt, stream, chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from rota.bus import subjects
from rota.bus.connection import Bus
from rota.coordination.lease import LeaderFence
from rota.domain.clock import utc_from_ts as _ts
from rota.domain.histograms import RunTimings
from rota.domain.snapshot import RunSnapshot, decode
from rota.domain.states import is_terminal
from rota.leader.timings import TimingsStore, observe_firsts, untimed_rows
from rota.models import JobRun, RunLog
from rota.runs.sqlwriter import sql_writer
from rota.steps import run_steps

log = logging.getLogger(__name__)

BATCH = 1000
PROJECTOR_STREAM = f"KV_{subjects.RUNS_BUCKET}"
#: A batch neither acknowledged nor given back (nak) within this is delivered
#: again. A failed batch is given back at once; a new leader does not wait for
#: this either (:meth:`Projector._take_over`).
PROJECTOR_ACK_WAIT_SECONDS = 30.0

# Snapshot field → JobRun column, for the columns the projector owns.
_TIME_FIELDS = (
    "assigned_at",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "updated_at",
    "retry_at",
)
_COLUMNS = (
    "state",
    "attempt",
    "version",
    "leader_epoch",
    "worker_id",
    "result",
    "exit_code",
    "error_summary",
    "continuation_state",
    "continuation_check_deadline_at",
    "events",
    "tasks",
    "task_records",
    "task_records_truncated",
    *_TIME_FIELDS,
)


def _row_values(s: RunSnapshot) -> dict[str, Any]:
    return {
        "state": s.state,
        "attempt": s.attempt,
        "version": s.version,
        "leader_epoch": s.leader_epoch,
        "worker_id": s.worker_id or "",
        "result": s.result,
        "exit_code": s.exit_code,
        "error_summary": s.error_summary,
        "continuation_state": s.continuation_state,
        "continuation_check_deadline_at": _ts(s.continuation_deadline_at),
        "events": s.events,
        "tasks": s.tasks,
        "task_records": s.task_records,
        "task_records_truncated": s.task_records_truncated,
        **{f: _ts(getattr(s, f)) for f in _TIME_FIELDS},
    }


def apply_snapshots(snaps: list[RunSnapshot], timings: RunTimings | None = None) -> int:
    """Apply the newest snapshot of each run to SQL in one transaction. Idempotent.
    With ``timings``, observe each run's first claim and first start in it
    (``rota.leader.timings``) once the transaction has committed."""
    newest: dict[str, RunSnapshot] = {}
    for s in snaps:
        seen = newest.get(s.run_id)
        if seen is None or s.version > seen.version:
            newest[s.run_id] = s
    if not newest:
        return 0
    meta = JobRun._meta
    fields = [meta.get_field(c) for c in _COLUMNS]
    table = connection.ops.quote_name(meta.db_table)
    assignments = ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in fields)
    sql = f"UPDATE {table} SET {assignments} WHERE id = %s AND version < %s"
    params = []
    logs: list[RunLog] = []
    for s in newest.values():
        values = _row_values(s)
        params.append(
            [f.get_db_prep_value(values[f.name], connection, prepared=False) for f in fields]
            + [s.run_id, s.version]
        )
        if is_terminal(s.state):
            now = _ts(s.finished_at) or datetime.now(UTC)
            for stream in ("stdout", "stderr"):
                data = getattr(s, stream)
                if data:
                    logs.append(
                        RunLog(
                            run_id=s.run_id,
                            attempt=s.attempt,
                            stream=stream,
                            data=data,
                            created_at=now,
                        )
                    )
    with transaction.atomic():
        untimed = untimed_rows(list(newest)) if timings is not None else {}
        with connection.cursor() as cur:
            cur.executemany(sql, params)
        if logs:
            RunLog.objects.bulk_create(logs, ignore_conflicts=True)
    if timings is not None:
        observe_firsts(timings, newest.values(), untimed)
    return len(newest)


class Projector:
    """Leader duty: a step that projects one batch and says whether it did work."""

    def __init__(self, bus: Bus, *, batch: int = BATCH, fence: LeaderFence | None = None) -> None:
        self.bus = bus
        self.fence = fence
        self.batch = batch
        self._sub = None
        self.timings = TimingsStore(bus)

    async def _subscription(self):
        if self._sub is None:
            await self._take_over()
            self._sub = await self.bus.js.pull_subscribe_bind(
                subjects.PROJECTOR_CONSUMER, stream=PROJECTOR_STREAM
            )
        return self._sub

    async def _take_over(self) -> None:
        """Start projecting where the last projector's acknowledgements end.

        A leader that died (or was paused) holds its fetched batch unacknowledged
        until ack_wait; until then a new leader's fetches skip those changes, and
        SQL — lists, supervision, the skip/queue policies — lags KV. So a new
        projector re-creates the consumer from its ack floor: everything past it
        is delivered again at once (applying a change twice changes nothing)."""
        js = self.bus.js
        start: int | None = None
        try:
            info = await js.consumer_info(PROJECTOR_STREAM, subjects.PROJECTOR_CONSUMER)
        except NotFoundError:
            info = None
        if info is not None:
            start = info.ack_floor.stream_seq + 1 if info.ack_floor else 1
            if info.num_ack_pending:
                log.info(
                    "projector: %d change(s) fetched by a previous leader and never "
                    "acknowledged; projecting again from stream sequence %d",
                    info.num_ack_pending,
                    start,
                )
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(PROJECTOR_STREAM, subjects.PROJECTOR_CONSUMER)
        await js.add_consumer(
            PROJECTOR_STREAM,
            config=ConsumerConfig(
                durable_name=subjects.PROJECTOR_CONSUMER,
                filter_subject=f"$KV.{subjects.RUNS_BUCKET}.>",
                # Explicit, not ALL: with ALL, one projector's ack would also
                # acknowledge another's batch still being applied (or failed).
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=(
                    DeliverPolicy.ALL if start is None else DeliverPolicy.BY_START_SEQUENCE
                ),
                opt_start_seq=start,
                ack_wait=PROJECTOR_ACK_WAIT_SECONDS,
                max_ack_pending=-1,
            ),
        )

    async def step(self, timeout: float = 1.0) -> int:
        if self.fence is not None:
            # A deposed leader fetching from the consumer would hold changes back
            # from the new leader's projector until they were given back.
            await self.fence.check()
        sub = await self._subscription()
        try:
            msgs = await sub.fetch(self.batch, timeout=timeout)
        except (TimeoutError, NatsTimeout):
            await self.timings.save()
            return 0
        if not msgs:
            return 0
        snaps = []
        for m in msgs:
            op = m.headers.get("KV-Operation") if m.headers else None
            if op in ("DEL", "PURGE") or not m.data:
                continue
            try:
                snaps.append(decode(m.data))
            except Exception:  # a value rota did not write: skip it, never stall on it
                log.warning("projector: undecodable snapshot on %s", m.subject)
        try:
            applied = await sql_writer().call(apply_snapshots, snaps, await self.timings.current())
        except Exception:
            for m in msgs:  # back at once, not after ack_wait
                with contextlib.suppress(Exception):
                    await m.nak(delay=1.0)
            raise
        # Only after the batch is committed; a failed batch is redelivered after
        # ack_wait (applying it again changes nothing).
        for m in msgs:
            await m.ack()
        await self.timings.save()
        return applied

    async def run(self, stop: asyncio.Event) -> None:
        # step() itself waits up to a second for messages: no idle pause needed.
        try:
            await run_steps("projector", self.step, stop)
        finally:
            # Stepping down: keep what was observed since the last save.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.timings.save(force=True), 2)
