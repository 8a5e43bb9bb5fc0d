"""Run creation and dispatch: the one path every run is created by.

Order (DESIGN §4): the SQL row first, so the unique constraints decide whether a
run exists (Idempotency-Key, schedule tick, event); then the live snapshot in KV;
then the dispatch message with ``Nats-Msg-Id`` = run id + attempt; then the
outbox mark (``dispatched_at``). A crash between any two steps leaves a row
without the mark, which the reconciler dispatches again; every step is idempotent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction

from rota.bus.connection import Bus
from rota.domain.ids import new_run_id
from rota.domain.params import merge_params, params_hash, validate_params
from rota.domain.retry import RetryPolicy
from rota.domain.snapshot import RunSnapshot
from rota.models import JobDefinition, JobRun
from rota.runs.dispatch import publish_dispatch
from rota.runs.sqlwriter import sql_writer
from rota.runs.transitions import RunStore


@dataclass(slots=True)
class RunRequest:
    job: JobDefinition
    params: dict[str, Any] = field(default_factory=dict)
    tag: str | None = None
    idempotency_key: str | None = None
    scheduled_for: datetime | None = None
    schedule_id: int | None = None
    event_id: str | None = None
    leader_epoch: int = 0
    #: Retry policy fields overriding the job's (a schedule's, then the run's own).
    retry: dict[str, Any] | None = None


def routing_tag(job: JobDefinition, tag: str | None) -> str:
    if tag:
        return tag
    return job.tags[0] if job.tags else "default"


def prepare(request: RunRequest, *, validate: bool = True) -> tuple[JobRun, RunSnapshot]:
    """Validate and build the SQL row and the first snapshot. Pure but for the clock."""
    job = request.job
    params = merge_params(job.default_params, request.params)
    if validate:
        validate_params(job.params_schema, params, kind=job.kind)
    job_retry_policy(job).merged(request.retry)  # a bad override is a 422 here
    now = time.time()
    created = datetime.fromtimestamp(now, tz=UTC)
    run_id = new_run_id()
    tag = routing_tag(job, request.tag)
    row = JobRun(
        id=run_id,
        job=job,
        job_name=job.name,
        kind=job.kind,
        flow_name=job.target if job.kind == "pyoco" else "",
        params=params,
        params_hash=params_hash(params),
        tag=tag,
        tags=list(job.tags),
        idempotency_key=request.idempotency_key,
        scheduled_for=request.scheduled_for,
        schedule_id=request.schedule_id,
        event_id=request.event_id,
        leader_epoch=request.leader_epoch,
        retry=request.retry or None,
        created_at=created,
        updated_at=created,
    )
    snap = snapshot_for(row, job, now=now)
    return row, snap


def prepare_flow(
    flow_name: str,
    params: dict[str, Any],
    *,
    tag: str | None = None,
    tags: list[str] | None = None,
    flow_yaml: str = "",
    idempotency_key: str | None = None,
) -> tuple[JobRun, RunSnapshot]:
    """The SQL row and first snapshot of a run of a Pyoco flow that no job
    defines (by name, or an uploaded flow.yaml). The caller checked the flow."""
    now = time.time()
    created = datetime.fromtimestamp(now, tz=UTC)
    tags = list(tags or [])
    row = JobRun(
        id=new_run_id(),
        job=None,
        job_name="",
        flow_name=flow_name,
        flow_yaml=flow_yaml,
        kind="pyoco",
        params=params,
        params_hash=params_hash(params),
        tag=tag or (tags[0] if tags else "default"),
        tags=tags,
        idempotency_key=idempotency_key,
        created_at=created,
        updated_at=created,
    )
    return row, snapshot_for(row, None, now=now)


def job_retry_policy(job: JobDefinition | None) -> RetryPolicy:
    """A job's retry policy: its max_attempts and retry_backoff_seconds, and the
    rest from its ``retry`` fields. A flow run no job defines takes the defaults."""
    if job is None:
        return RetryPolicy()
    return RetryPolicy(
        max_attempts=job.max_attempts, backoff_seconds=job.retry_backoff_seconds
    ).merged(job.retry or None)


def snapshot_for(
    row: JobRun, job: JobDefinition | None, *, now: float | None = None
) -> RunSnapshot:
    """The first snapshot of a run (also rebuilt from SQL by the reconciler).
    ``job`` is None for a flow run no job defines."""
    now = time.time() if now is None else now
    policy = job_retry_policy(job).merged(row.retry or None)
    return RunSnapshot(
        run_id=row.id,
        job=job.name if job else row.job_name,
        kind=job.kind if job else row.kind,
        target=job.target if job else row.flow_name,
        args=[str(a) for a in job.args] if job else [],
        params=row.params,
        tag=row.tag,
        tags=list(row.tags),
        timeout=job.timeout_seconds if job else None,
        max_attempts=policy.max_attempts,
        retry=policy.as_dict(),
        flow_name=row.flow_name,
        flow_yaml=row.flow_yaml,
        attempt=row.attempt,
        leader_epoch=row.leader_epoch,
        created_at=row.created_at.timestamp(),
        scheduled_for=row.scheduled_for.timestamp() if row.scheduled_for else None,
        updated_at=now,
    )


class RunService:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.store = RunStore(bus.runs)

    async def submit(self, request: RunRequest) -> tuple[JobRun, bool]:
        """Create and dispatch one run. Returns (run, created); with an
        Idempotency-Key that was used before, the earlier run and False."""
        return await self.submit_prepared(*prepare(request))

    async def submit_prepared(self, row: JobRun, snap: RunSnapshot) -> tuple[JobRun, bool]:
        """Create and dispatch the run ``row``/``snap`` describe (from
        :func:`prepare` or :func:`prepare_flow`); see :meth:`submit`."""
        try:
            await sql_writer().insert(row)
        except IntegrityError:
            if row.idempotency_key is None:
                raise
            existing = await JobRun.objects.aget(idempotency_key=row.idempotency_key)
            return existing, False
        await self.dispatch([snap])
        return row, True

    async def submit_many(self, requests: Sequence[RunRequest]) -> list[JobRun]:
        """Create many runs in one transaction and dispatch them pipelined."""
        prepared = [prepare(r) for r in requests]
        rows = [row for row, _ in prepared]
        await sql_writer().call(_insert_many, rows)
        await self.dispatch([snap for _, snap in prepared])
        return rows

    async def dispatch(self, snaps: Iterable[RunSnapshot], *, pinned_to: str | None = None) -> None:
        """Snapshot in KV, then the dispatch message, then the outbox mark.

        Calls are pipelined: all KV creates in flight together, then all
        publishes, so a batch costs about two round trips, not two per run.
        """
        snaps = list(snaps)
        if not snaps:
            return
        versions = await asyncio.gather(*(self.store.create(s) for s in snaps))
        await asyncio.gather(
            *(publish_dispatch(self.bus.js, v, pinned_to=pinned_to) for v in versions)
        )
        await sql_writer().mark_dispatched([s.run_id for s in snaps])


def _insert_many(rows: list[JobRun]) -> None:
    with transaction.atomic():
        JobRun.objects.bulk_create(rows, batch_size=500)
