"""Event intake (DESIGN §5): an event names what happened; every enabled job
subscribed to that name gets exactly one run, with the payload merged into its
params.

The event row and its runs are inserted in one transaction. The event's
``dedupe_key`` is unique, and so is (event, job) for runs: posting the same event
twice returns the first one and its runs, and creates nothing. Runs then go out
through the ordinary dispatch path (the reconciler covers a crash in between).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from rota.bus.connection import Bus
from rota.domain.ids import new_event_id
from rota.errors import InvalidInput
from rota.models import Event, JobDefinition, JobRun
from rota.runs.dlq import dead_letter
from rota.runs.service import RunRequest, RunService, prepare
from rota.runs.sqlwriter import sql_writer


@dataclass
class EventOutcome:
    event: Event
    runs: list[JobRun]
    created: bool
    #: Jobs whose schema refused the payload: [{"job", "detail", "field"}].
    refused: list[dict[str, str]] = field(default_factory=list)


def _subscribers(name: str) -> list[JobDefinition]:
    # JSON "contains" is not portable to SQLite; the job table is small.
    return [
        j for j in JobDefinition.objects.filter(enabled=True) if name in (j.subscribed_events or [])
    ]


def _existing(dedupe_key: str) -> tuple[Event, list[JobRun]]:
    event = Event.objects.get(dedupe_key=dedupe_key)
    return event, list(event.runs.order_by("id"))


def _insert(event: Event, rows: list[JobRun]) -> bool:
    """Insert the event and its runs together; False if the dedupe key exists."""
    try:
        with transaction.atomic():
            event.save(force_insert=True)
            JobRun.objects.bulk_create(rows)
        return True
    except IntegrityError:
        if Event.objects.filter(dedupe_key=event.dedupe_key).exists():
            return False
        raise


async def post_event(bus: Bus, name: str, payload: dict[str, Any], dedupe_key: str) -> EventOutcome:
    writer = sql_writer()
    jobs = await writer.call(_subscribers, name)
    event = Event(id=new_event_id(), name=name, payload=payload, dedupe_key=dedupe_key)
    prepared, refused = [], []
    for job in jobs:
        try:
            prepared.append(prepare(RunRequest(job=job, params=payload, event_id=event.id)))
        except InvalidInput as exc:
            refused.append({"job": job.name, "detail": exc.message, "field": exc.field})
    rows = [row for row, _ in prepared]
    if not await writer.call(_insert, event, rows):
        first, runs = await writer.call(_existing, dedupe_key)
        return EventOutcome(first, runs, created=False)
    await RunService(bus).dispatch([snap for _, snap in prepared])
    for r in refused:
        await dead_letter(
            bus.js, "invalid_payload", error=r["detail"], extra={"event": event.id, "job": r["job"]}
        )
    return EventOutcome(event, rows, created=True, refused=refused)
