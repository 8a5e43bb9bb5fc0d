"""Schedules over HTTP: many per job, each with its own params, validated against
the job's schema on save; cron text or the safe structured form; preview of the
next fire times; enable, disable, run now. Field names follow seed 004's
ScheduleCreate / ScheduleResponse (``task_name``, ``cron_expression``,
``task_params``) plus rota's time zone, DST and catch-up fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from django.db import IntegrityError, transaction
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status

from rota.api.auth import ADMIN_AUTH
from rota.api.schemas import StrictSchema
from rota.audit import actor_of, record
from rota.domain import schedules as cal
from rota.domain.naming import schedule_name
from rota.domain.params import merge_params, validate_params
from rota.errors import InvalidInput, NotFound
from rota.models import JobDefinition, Schedule
from rota.runs.sqlwriter import sql_writer

router = Router(tags=["schedules"])

Policy = Literal["allow", "skip", "queue", "replace"]


class ScheduleIn(StrictSchema):
    task_name: str = Field(..., min_length=1, description="the job to run")
    name: str | None = Field(None, max_length=200, description="generated when omitted")
    cron_expression: str | None = Field(None, description="5-field cron, or give `structured`")
    structured: dict[str, Any] | None = Field(None, description="the safe form; compiled to cron")
    enabled: bool = True
    task_params: dict[str, Any] = {}
    description: str = Field("", max_length=10_000)
    category: str = Field("", max_length=100)
    tags: list[str] = []
    execution_policy: Policy = "allow"
    timezone: str = "UTC"
    dst_policy: str = cal.SHIFT_FORWARD_FIRST
    catch_up_seconds: int = Field(300, ge=0, le=7 * 24 * 3600)
    retry: dict[str, Any] | None = Field(
        None, description="retry policy fields its runs override (see the job's retry)"
    )


class SchedulePatch(StrictSchema):
    name: str | None = None
    cron_expression: str | None = None
    structured: dict[str, Any] | None = None
    enabled: bool | None = None
    task_params: dict[str, Any] | None = None
    description: str | None = Field(default=None, max_length=10_000)
    category: str | None = Field(default=None, max_length=100)
    tags: list[str] | None = None
    execution_policy: Policy | None = None
    timezone: str | None = None
    dst_policy: str | None = None
    catch_up_seconds: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    retry: dict[str, Any] | None = None


def schedule_out(s: Schedule) -> dict[str, Any]:
    upcoming = (
        cal.next_fires(s.cron, s.timezone, datetime.now(UTC), 1, s.dst_policy) if s.enabled else []
    )
    return {
        "id": s.id,
        "name": s.name,
        "auto_generated_name": s.auto_generated_name,
        "task_name": s.job.name,
        "cron_expression": s.cron,
        "structured": s.structured,
        "describe": cal.describe(s.cron),
        "enabled": s.enabled,
        "task_params": s.params,
        "description": s.description,
        "category": s.category,
        "tags": s.tags,
        "execution_policy": s.execution_policy,
        "timezone": s.timezone,
        "dst_policy": s.dst_policy,
        "catch_up_seconds": s.catch_up_seconds,
        "retry": s.retry,
        "fired_count": s.fired_count,
        "skipped_count": s.skipped_count,
        "missed_count": s.missed_count,
        "last_fired_at": s.last_fired_at,
        "next_fire_at": upcoming[0] if upcoming else None,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def _job(name: str) -> JobDefinition:
    job = JobDefinition.objects.filter(name=name).first()
    if job is None:
        raise NotFound(f"no job named {name!r}")
    return job


def _apply(s: Schedule, data: dict[str, Any], job: JobDefinition) -> None:
    """Validate and set fields; every error names its field (422)."""
    if "structured" in data and data["structured"] is not None:
        s.structured = cal.validate_structured(data["structured"])
        s.cron = cal.compile_structured(s.structured)
    elif data.get("cron_expression"):
        s.cron = cal.validate_cron(data["cron_expression"])
        s.structured = cal.structured_from_cron(s.cron)
    if not s.cron:
        raise InvalidInput("give cron_expression or structured", field="cron_expression")
    for key, attr in (
        ("task_params", "params"),
        ("description", "description"),
        ("category", "category"),
        ("tags", "tags"),
        ("execution_policy", "execution_policy"),
        ("enabled", "enabled"),
        ("catch_up_seconds", "catch_up_seconds"),
    ):
        if data.get(key) is not None:
            setattr(s, attr, data[key])
    if data.get("retry") is not None:
        from rota.runs.service import job_retry_policy

        job_retry_policy(job).merged(data["retry"])  # 422 naming the field if bad
        s.retry = data["retry"] or None
    if data.get("timezone") is not None:
        s.timezone = cal.validate_timezone(data["timezone"])
    if data.get("dst_policy") is not None:
        s.dst_policy = cal.validate_dst_policy(data["dst_policy"])
    validate_params(job.params_schema, merge_params(job.default_params, s.params), kind=job.kind)
    if data.get("name"):
        s.name, s.auto_generated_name = data["name"], False
    elif not s.name or s.auto_generated_name:
        others = [o.params for o in Schedule.objects.filter(job=job).exclude(id=s.id)]
        s.name, s.auto_generated_name = (
            schedule_name(job.name, s.params, s.structured or s.cron, others),
            True,
        )


def _create(data: dict[str, Any], key: str | None = None) -> tuple[Schedule, bool]:
    """(the schedule, created). With ``key``, a repeat returns the first one."""
    if key is not None:
        first = Schedule.objects.select_related("job").filter(idempotency_key=key).first()
        if first is not None:
            return first, False
    job = _job(data["task_name"])
    # Ticks are handled from creation on: a leader gap right after it catches up.
    s = Schedule(job=job, cursor_at=datetime.now(UTC), idempotency_key=key)
    _apply(s, data, job)
    try:
        with transaction.atomic():
            s.save()
    except IntegrityError:  # the same key, created meanwhile by a concurrent repeat
        return Schedule.objects.select_related("job").get(idempotency_key=key), False
    return Schedule.objects.select_related("job").get(id=s.id), True


def _update(schedule_id: int, data: dict[str, Any]) -> Schedule:
    s = _get(schedule_id)
    _apply(s, data, s.job)
    s.save()
    return _get(schedule_id)


def _get(schedule_id: int) -> Schedule:
    s = Schedule.objects.select_related("job").filter(id=schedule_id).first()
    if s is None:
        raise NotFound(f"no schedule {schedule_id}")
    return s


class ScheduleFilter(Schema):
    job: str | None = None
    category: str | None = None
    tag: str | None = None
    enabled: bool | None = None


def _list(f: ScheduleFilter) -> list[dict[str, Any]]:
    qs = Schedule.objects.select_related("job").order_by("id")
    if f.job:
        qs = qs.filter(job__name=f.job)
    if f.category:
        qs = qs.filter(category=f.category)
    if f.enabled is not None:
        qs = qs.filter(enabled=f.enabled)
    items = [schedule_out(s) for s in qs]
    if f.tag:
        items = [i for i in items if f.tag in i["tags"]]
    return items


@router.post("/schedules", response={201: dict, 200: dict}, auth=ADMIN_AUTH)
async def create_schedule(request: HttpRequest, body: ScheduleIn):
    """Create a schedule of a job. Params are validated against the job's schema
    (422 naming the field); a name is generated when omitted. With an
    ``Idempotency-Key`` header, a repeat returns the first schedule with 200."""
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 200:
        raise InvalidInput("Idempotency-Key is longer than 200 characters", field="Idempotency-Key")
    s, created = await sql_writer().call(_create, body.dict(), key)
    if created:
        await record(actor_of(request), "schedule.create", s.name, id=s.id)
    return Status(201 if created else 200, await sql_writer().call(schedule_out, s))


@router.get("/schedules")
async def list_schedules(request: HttpRequest, filters: Query[ScheduleFilter]):
    return {"items": await sql_writer().call(_list, filters)}


@router.get("/schedules/{schedule_id}")
async def get_schedule(request: HttpRequest, schedule_id: int):
    return await sql_writer().call(lambda: schedule_out(_get(schedule_id)))


@router.patch("/schedules/{schedule_id}", auth=ADMIN_AUTH)
async def update_schedule(request: HttpRequest, schedule_id: int, body: SchedulePatch):
    s = await sql_writer().call(_update, schedule_id, body.dict(exclude_none=True))
    await record(
        actor_of(request), "schedule.update", s.name, id=s.id, **body.dict(exclude_none=True)
    )
    return await sql_writer().call(schedule_out, s)


@router.delete("/schedules/{schedule_id}", response={204: None}, auth=ADMIN_AUTH)
async def delete_schedule(request: HttpRequest, schedule_id: int):
    s = await sql_writer().call(_get, schedule_id)
    await sql_writer().call(lambda: Schedule.objects.filter(id=schedule_id).delete())
    await record(actor_of(request), "schedule.delete", s.name, id=schedule_id)
    return Status(204, None)


@router.post("/schedules/{schedule_id}/enable", auth=ADMIN_AUTH)
async def enable_schedule(request: HttpRequest, schedule_id: int):
    return await update_schedule(request, schedule_id, SchedulePatch(enabled=True))


@router.post("/schedules/{schedule_id}/disable", auth=ADMIN_AUTH)
async def disable_schedule(request: HttpRequest, schedule_id: int):
    return await update_schedule(request, schedule_id, SchedulePatch(enabled=False))


@router.get("/schedules/{schedule_id}/preview")
async def preview_schedule(
    request: HttpRequest, schedule_id: int, n: int = Query(10, ge=1, le=500)
):
    """The next ``n`` fire times (UTC and local), DST transitions included."""
    from zoneinfo import ZoneInfo

    s = await sql_writer().call(_get, schedule_id)
    fires = cal.next_fires(s.cron, s.timezone, datetime.now(UTC), n, s.dst_policy)
    zone = ZoneInfo(s.timezone)
    return {"items": [{"at": f, "local": f.astimezone(zone).isoformat()} for f in fires]}


@router.post("/schedules/{schedule_id}/run", response={201: dict})
async def run_schedule_now(request: HttpRequest, schedule_id: int):
    """Run the schedule's job now with the schedule's params."""
    from rota.api.app import get_bus, run_from_row
    from rota.runs.service import RunRequest, RunService

    s = await sql_writer().call(_get, schedule_id)
    if not s.job.enabled:
        from rota.errors import Conflict

        raise Conflict(f"job {s.job.name!r} is disabled")
    run, _ = await RunService(await get_bus()).submit(
        RunRequest(job=s.job, params=s.params, schedule_id=s.id, retry=s.retry)
    )
    await record(actor_of(request), "schedule.run_now", s.name, id=s.id, run_id=run.id)
    return Status(201, run_from_row(run))
