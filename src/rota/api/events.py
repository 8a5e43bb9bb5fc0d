"""Events over HTTP: POST an event, list events with the runs they produced."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status

from rota.api.schemas import StrictSchema
from rota.models import Event, JobRun

router = Router(tags=["events"])


class EventIn(StrictSchema):
    name: str = Field(..., min_length=1, max_length=200)
    payload: dict[str, Any] = {}
    dedupe_key: str = Field(..., min_length=1, max_length=200)


class EventRun(Schema):
    run_id: str
    job: str
    state: str


class EventOut(Schema):
    id: str
    name: str
    payload: dict[str, Any]
    dedupe_key: str
    created_at: datetime
    runs: list[EventRun]
    refused: list[dict[str, str]] = []
    #: True when this post repeated an earlier event's dedupe key: nothing was
    #: created, and this is the first event with its runs.
    duplicate: bool = False


def _out(
    event: Event,
    runs: list[JobRun],
    refused: list[dict[str, str]] | None = None,
    *,
    duplicate: bool = False,
) -> dict[str, Any]:
    return {
        "id": event.id,
        "name": event.name,
        "payload": event.payload,
        "dedupe_key": event.dedupe_key,
        "created_at": event.created_at,
        "runs": [{"run_id": r.id, "job": r.job_name, "state": r.state} for r in runs],
        "refused": refused or [],
        "duplicate": duplicate,
    }


@router.post("/events", response={201: EventOut, 200: EventOut})
async def post_event(request: HttpRequest, body: EventIn):
    """Post an event. Every enabled job subscribed to its name gets one run with
    the payload merged into its params. The same ``dedupe_key`` again returns the
    first event and its runs with 200 and creates nothing."""
    from rota.api.app import get_bus
    from rota.runs.events import post_event as intake

    outcome = await intake(await get_bus(), body.name, body.payload, body.dedupe_key)
    return Status(
        201 if outcome.created else 200,
        _out(outcome.event, outcome.runs, outcome.refused, duplicate=not outcome.created),
    )


class EventFilter(Schema):
    name: str | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None


@router.get("/events")
async def list_events(request: HttpRequest, filters: Query[EventFilter]):
    """Events, newest first, with the runs they produced."""
    qs = Event.objects.all()
    if filters.name:
        qs = qs.filter(name=filters.name)
    if filters.cursor:
        qs = qs.filter(id__lt=filters.cursor)
    events = [e async for e in qs.order_by("-id")[: filters.limit + 1]]
    more = len(events) > filters.limit
    events = events[: filters.limit]
    runs: dict[str, list[JobRun]] = {}
    async for r in JobRun.objects.filter(event_id__in=[e.id for e in events]).order_by("id"):
        runs.setdefault(r.event_id, []).append(r)
    return {
        "items": [_out(e, runs.get(e.id, [])) for e in events],
        "next_cursor": events[-1].id if more else None,
    }
