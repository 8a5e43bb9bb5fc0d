"""HTTP API endpoints. Thin: validation and shapes here, operations in
``rota.runs.service``; every error is ``{"detail": ...}`` with the right status."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError, connection
from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Schema, Status

import rota
from rota.api import flows as flows_api
from rota.api.auth import ADMIN_AUTH, OpsAuth, require_view
from rota.api.schemas import (
    ErrorOut,
    HealthOut,
    JobIn,
    JobOut,
    JobPatch,
    RunIn,
    RunOut,
    RunPage,
    StrictSchema,
)
from rota.api.strict import RotaAPI
from rota.bus.connection import Bus, connect
from rota.conf import get_settings
from rota.domain.clock import utc_from_ts as _dt
from rota.domain.params import check_schema
from rota.domain.snapshot import RunSnapshot
from rota.domain.states import RunState, seed003_status
from rota.errors import Conflict, InvalidInput, NotFound, RotaError
from rota.flows import yaml_info
from rota.models import JobDefinition, JobRun, RunLog
from rota.runs.service import RunRequest, RunService
from rota.runs.sqlwriter import sql_writer
from rota.runs.transitions import RunStore

log = logging.getLogger(__name__)

api = RotaAPI(
    title="rota",
    version=rota.__version__,
    description="Jobs, runs, schedules and events of a rota cluster.",
    auth=OpsAuth(),
    urls_namespace="rota-api",
    docs_url="/docs",
    openapi_url="/openapi.json",
    docs_decorator=require_view,
)


def _routers() -> None:
    from rota.api.events import router as events_router
    from rota.api.flows import router as flows_router
    from rota.api.schedules import router as schedules_router
    from rota.api.settings import router as settings_router
    from rota.api.streams import router as streams_router
    from rota.api.wheels import router as wheels_router
    from rota.api.workers import router as workers_router

    api.add_router("", workers_router)
    api.add_router("", settings_router)
    api.add_router("", events_router)
    api.add_router("", schedules_router)
    api.add_router("", flows_router)
    api.add_router("", streams_router)
    api.add_router("", wheels_router)
    from rota.api.metrics import router as metrics_router

    api.add_router("", metrics_router)


_ERRORS = {403: ErrorOut, 404: ErrorOut, 401: ErrorOut, 409: ErrorOut, 422: ErrorOut, 503: ErrorOut}


@api.exception_handler(RotaError)
def _rota_error(request: HttpRequest, exc: RotaError) -> HttpResponse:
    """Every rota error as ``{"detail": ...}`` with its status (422 adds ``field``)."""
    return api.create_response(request, exc.http_body(), status=exc.http_status)


# -- the NATS connection of this process --------------------------------------------

_buses: dict[int, Bus] = {}
_bus_lock: dict[int, asyncio.Lock] = {}


async def get_bus() -> Bus:
    """One connection per event loop, made on first use."""
    loop_id = id(asyncio.get_running_loop())
    bus = _buses.get(loop_id)
    if bus is not None and not bus.nc.is_closed:
        return bus
    lock = _bus_lock.setdefault(loop_id, asyncio.Lock())
    async with lock:
        bus = _buses.get(loop_id)
        if bus is None or bus.nc.is_closed:
            bus = await connect(get_settings(), name="rota-server", ensure=True)
            _buses[loop_id] = bus
    return bus


# -- shapes ------------------------------------------------------------------------


def run_from_snapshot(s: RunSnapshot, row: JobRun | None = None) -> dict[str, Any]:
    return {
        "run_id": s.run_id,
        "job": s.job,
        "flow_name": s.flow_name or (row.flow_name if row else ""),
        "kind": s.kind,
        "state": s.state,
        "status": seed003_status(s.state),
        "attempt": s.attempt,
        "version": s.version,
        "leader_epoch": s.leader_epoch,
        "worker_id": s.worker_id,
        "params": s.params,
        "tag": s.tag,
        "tags": s.tags,
        "result": s.result,
        "exit_code": s.exit_code,
        "error": s.error_summary or None,
        "error_summary": s.error_summary,
        "stdout": s.stdout,
        "stderr": s.stderr,
        "continuation_state": s.continuation_state,
        "continuation_check_deadline_at": _dt(s.continuation_deadline_at),
        "retry_at": _dt(s.retry_at),
        "created_at": _dt(s.created_at),
        "scheduled_for": _dt(s.scheduled_for),
        "started_at": _dt(s.started_at),
        "finished_at": _dt(s.finished_at),
        "heartbeat_at": _dt(s.heartbeat_at),
        "updated_at": _dt(s.updated_at),
        "log_ref": row.log_ref if row else "",
        "events": s.events,
        "tasks": s.tasks,
        "task_records_truncated": s.task_records_truncated,
        **yaml_info(s.flow_yaml),
    }


def run_from_row(r: JobRun, logs: dict[str, str] | None = None) -> dict[str, Any]:
    logs = logs or {}
    return {
        "run_id": r.id,
        "job": r.job_name,
        "flow_name": r.flow_name,
        "kind": r.kind,
        "state": r.state,
        "status": seed003_status(r.state),
        "attempt": r.attempt,
        "version": r.version,
        "leader_epoch": r.leader_epoch,
        "worker_id": r.worker_id or None,
        "params": r.params,
        "tag": r.tag,
        "tags": r.tags,
        "result": r.result,
        "exit_code": r.exit_code,
        "error": r.error_summary or None,
        "error_summary": r.error_summary,
        "stdout": logs.get("stdout", ""),
        "stderr": logs.get("stderr", ""),
        "continuation_state": r.continuation_state,
        "continuation_check_deadline_at": r.continuation_check_deadline_at,
        "retry_at": r.retry_at,
        "created_at": r.created_at,
        "scheduled_for": r.scheduled_for,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "heartbeat_at": r.heartbeat_at,
        "updated_at": r.updated_at,
        "log_ref": r.log_ref,
        "events": r.events,
        "tasks": r.tasks,
        "task_records_truncated": r.task_records_truncated,
        **yaml_info(r.flow_yaml),
    }


def check_job_retry(retry: dict[str, Any]) -> None:
    """A job's ``retry`` fields: a RetryPolicy's, but for the two the job has
    columns for (max_attempts, retry_backoff_seconds). 422 otherwise."""
    from rota.domain.retry import RetryPolicy

    for own in ("max_attempts", "backoff_seconds"):
        if own in retry:
            raise InvalidInput(
                f"retry.{own} is the job's own field: set "
                f"{'max_attempts' if own == 'max_attempts' else 'retry_backoff_seconds'} instead",
                field="retry",
            )
    RetryPolicy().merged(retry)


def job_out(j: JobDefinition) -> dict[str, Any]:
    return {
        "id": j.id,
        "name": j.name,
        "kind": j.kind,
        "target": j.target,
        "args": j.args,
        "timeout": j.timeout_seconds,
        "tags": j.tags,
        "params_schema": j.params_schema,
        "default_params": j.default_params,
        "description": j.description,
        "category": j.category,
        "max_attempts": j.max_attempts,
        "retry_backoff_seconds": j.retry_backoff_seconds,
        "retry": j.retry or {},
        "execution_policy": j.execution_policy,
        "subscribed_events": j.subscribed_events,
        "enabled": j.enabled,
        "created_at": j.created_at,
        "updated_at": j.updated_at,
    }


# -- health --------------------------------------------------------------------------


@api.get("/health", auth=None, response={200: HealthOut, 503: HealthOut}, tags=["system"])
async def health(request: HttpRequest):  # type: ignore[no-untyped-def]
    """Liveness of this server and its backends. The only anonymous endpoint."""

    def db_ok() -> str:
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT 1")
            return "ok"
        except Exception as exc:
            return f"error: {type(exc).__name__}"

    from rota.api.streams import slots

    database = await sync_to_async(db_ok)()
    consumers = None
    try:
        bus = await asyncio.wait_for(get_bus(), 5)
        nats = "ok" if bus.nc.is_connected else "reconnecting"
        consumers = await asyncio.wait_for(consumer_pressure(bus), 5)
    except Exception as exc:
        nats = f"error: {type(exc).__name__}"
    ok = database == "ok" and nats == "ok" and (consumers or {}).get("state") != "full"
    body = {
        "status": "ok" if ok else "degraded",
        "database": database,
        "nats": nats,
        "version": rota.__version__,
        "consumers": consumers,
        "open_streams": slots.total(),
        "streams_per_token": get_settings().sse_streams_per_token,
    }
    return Status(200 if ok else 503, body)


async def consumer_pressure(bus: Bus) -> dict[str, Any]:
    """The NATS account's consumers against its limit (or ``nats_consumers_limit``)."""
    from rota.bus.followers import consumer_count

    count, limit = await consumer_count(bus.js)
    if limit <= 0:
        limit = get_settings().nats_consumers_limit
    state = "full" if count >= limit else "high" if count > 0.8 * limit else "ok"
    return {"count": count, "limit": limit, "state": state}


# -- jobs ----------------------------------------------------------------------------


@api.post("/jobs", response={201: JobOut, **_ERRORS}, tags=["jobs"], auth=ADMIN_AUTH)
async def create_job(request: HttpRequest, body: JobIn):  # type: ignore[no-untyped-def]
    """Define a job: what to run (kind and target), its arguments, timeout,
    routing tags and parameter JSON Schema."""
    from rota.domain.params import validate_params

    check_schema(body.params_schema)
    if body.default_params:
        validate_params(body.params_schema, body.default_params, kind=body.kind)
    _check_kind_args(body.kind, body.args)
    check_job_retry(body.retry)
    try:
        job = await JobDefinition.objects.acreate(
            name=body.name,
            kind=body.kind,
            target=body.target,
            args=body.args,
            timeout_seconds=body.timeout,
            tags=body.tags,
            params_schema=body.params_schema,
            default_params=body.default_params,
            description=body.description,
            category=body.category,
            max_attempts=body.max_attempts,
            retry_backoff_seconds=body.retry_backoff_seconds,
            retry=body.retry,
            execution_policy=body.execution_policy,
            subscribed_events=body.subscribed_events,
            enabled=body.enabled,
        )
    except IntegrityError:
        raise Conflict(f"a job named {body.name!r} exists already") from None
    from rota.audit import actor_of, record

    await record(actor_of(request), "job.create", job.name, kind=job.kind, target=job.target)
    return Status(201, job_out(job))


@api.get("/jobs", response=list[JobOut], tags=["jobs"])
async def list_jobs(request: HttpRequest):  # type: ignore[no-untyped-def]
    return [job_out(j) async for j in JobDefinition.objects.all()]


@api.get("/jobs/{name}", response={200: JobOut, **_ERRORS}, tags=["jobs"])
async def get_job(request: HttpRequest, name: str):  # type: ignore[no-untyped-def]
    job = await JobDefinition.objects.filter(name=name).afirst()
    if job is None:
        raise NotFound(f"no job named {name!r}")
    return job_out(job)


def _check_kind_args(kind: str, args: list[Any]) -> None:
    """A celery job's args are its send options (``queue=...``): refuse others."""
    if kind == "celery":
        from rota.domain.celery import parse_options

        parse_options([str(a) for a in args])


def _patch_job(name: str, changes: dict[str, Any]) -> JobDefinition:
    from rota.domain.params import validate_params

    job = JobDefinition.objects.filter(name=name).first()
    if job is None:
        raise NotFound(f"no job named {name!r}")
    if "timeout" in changes:
        changes["timeout_seconds"] = changes.pop("timeout")
    for key, value in changes.items():
        setattr(job, key, value)
    check_schema(job.params_schema)
    if job.default_params:
        validate_params(job.params_schema, job.default_params, kind=job.kind)
    _check_kind_args(job.kind, job.args)
    check_job_retry(job.retry)
    job.save()
    return job


@api.patch("/jobs/{name}", response={200: JobOut, **_ERRORS}, tags=["jobs"], auth=ADMIN_AUTH)
async def update_job(request: HttpRequest, name: str, body: JobPatch):  # type: ignore[no-untyped-def]
    """Change a job (enable/disable with ``{"enabled": ...}``)."""
    from rota.audit import actor_of, record

    changes = body.dict(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key != "timeout":  # only the timeout may be unset
            raise InvalidInput(f"{key} may not be null", field=key)
    job = await sql_writer().call(_patch_job, name, changes)
    await record(actor_of(request), "job.update", name, **{k: str(v) for k, v in changes.items()})
    return job_out(job)


@api.delete("/jobs/{name}", response={204: None, **_ERRORS}, tags=["jobs"], auth=ADMIN_AUTH)
async def delete_job(request: HttpRequest, name: str):  # type: ignore[no-untyped-def]
    """Delete a job that has no runs (disable it instead to keep its history)."""
    from django.db.models import ProtectedError

    from rota.audit import actor_of, record

    def delete() -> None:
        job = JobDefinition.objects.filter(name=name).first()
        if job is None:
            raise NotFound(f"no job named {name!r}")
        try:
            job.delete()
        except ProtectedError:
            raise Conflict(f"job {name!r} has runs; disable it instead") from None

    await sql_writer().call(delete)
    await record(actor_of(request), "job.delete", name)
    return Status(204, None)


# -- runs ----------------------------------------------------------------------------


@api.post("/runs", response={201: RunOut, 200: RunOut, **_ERRORS}, tags=["runs"])
async def submit_run(request: HttpRequest, body: RunIn):  # type: ignore[no-untyped-def]
    """Submit a run of a job, or of a Pyoco flow (``flow_name``; unknown: 404).
    A job's params are merged over its defaults and validated against its
    schema. With an ``Idempotency-Key`` header, a repeat returns the first run
    with 200."""
    if (body.job is None) == (body.flow_name is None):
        raise InvalidInput("give exactly one of 'job' and 'flow_name'", field="job")
    if body.flow_name is not None:
        from rota.api.flows import submit_flow

        return await submit_flow(request, body)
    # Through the run path's SQL thread: one persistent connection, instead of a
    # new one in the request's thread for every submission.
    job = await runnable_job(body.job)
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 200:
        raise InvalidInput("Idempotency-Key is longer than 200 characters", field="Idempotency-Key")
    bus = await get_bus()
    run, created = await RunService(bus).submit(
        RunRequest(job=job, params=body.params, tag=body.tag, idempotency_key=key, retry=body.retry)
    )
    if created:
        return Status(201, run_from_row(run))
    current = await RunStore(bus.runs).get(run.id)
    return Status(200, run_from_snapshot(current.snap, run) if current else run_from_row(run))


# Before /runs/{run_id}, whose URL pattern would take this path.
api.post("/runs/yaml", response=flows_api.YAML_RESPONSES, tags=["runs"])(flows_api.submit_flow_yaml)


async def runnable_job(name: str) -> JobDefinition:
    """The job named ``name``, to run now: NotFound (404) when there is none,
    Conflict (409) when it is disabled."""
    job = await sql_writer().call(_job_named, name)
    if job is None:
        raise NotFound(f"no job named {name!r}")
    if not job.enabled:
        raise Conflict(f"job {name!r} is disabled")
    return job


def _job_named(name: str) -> JobDefinition | None:
    return JobDefinition.objects.filter(name=name).first()


@api.get("/runs/{run_id}", response={200: RunOut, **_ERRORS}, tags=["runs"])
async def get_run(request: HttpRequest, run_id: str, include: str | None = None):  # type: ignore[no-untyped-def]
    """A run's live state: its KV snapshot, or its SQL row once the snapshot
    expired. ``include=records`` adds a flow run's task records."""
    from rota.api.flows import wants_records

    row = await JobRun.objects.filter(id=run_id).afirst()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    current = await RunStore((await get_bus()).runs).get(run_id)
    if current is not None:
        out = run_from_snapshot(current.snap, row)
        records = current.snap.task_records
    else:
        out = run_from_row(row, (await _logs_of([row.id])).get(row.id))
        records = row.task_records
    if wants_records(include):
        out["task_records"] = records
    return out


async def _logs_of(run_ids: list[str]) -> dict[str, dict[str, str]]:
    """Captured output of the newest attempt of each run: {run_id: {stream: text}}."""
    chunks: dict[tuple[str, str], tuple[int, list[str]]] = {}
    async for rec in RunLog.objects.filter(run_id__in=run_ids).order_by("attempt", "seq"):
        key = (rec.run_id, rec.stream)
        attempt, parts = chunks.get(key, (rec.attempt, []))
        if rec.attempt != attempt:
            attempt, parts = rec.attempt, []
        parts.append(rec.data)
        chunks[key] = (attempt, parts)
    out: dict[str, dict[str, str]] = {}
    for (run_id, stream), (_, parts) in chunks.items():
        out.setdefault(run_id, {})[stream] = "".join(parts)
    return out


@api.post("/runs/{run_id}/cancel", response={200: RunOut, **_ERRORS}, tags=["runs"])
async def cancel_run(request: HttpRequest, run_id: str):  # type: ignore[no-untyped-def]
    """Cancel a run. Idempotent; returns the run as it is now.

    A run no worker holds yet is CANCELLED at once. A running one becomes
    CANCELLING: its worker is told over gRPC and also notices through the
    snapshot (so a cancel works while gRPC is unreachable), stops the process
    group and records CANCELLED. A finished run is left as it is."""
    row = await JobRun.objects.filter(id=run_id).afirst()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    bus = await get_bus()
    current = await RunStore(bus.runs).request_cancel(run_id)
    from rota.audit import actor_of, record

    await record(
        actor_of(request), "run.cancel", run_id, state=current.snap.state if current else row.state
    )
    if current is None:
        # No snapshot: held back by the queue policy (never dispatched), or a
        # finished run whose snapshot expired.
        from rota.runs.transitions import cancel_held

        if row.held and await sql_writer().call(cancel_held, run_id):
            row = await JobRun.objects.aget(id=run_id)
        return run_from_row(row, (await _logs_of([row.id])).get(row.id))
    if current.snap.state == RunState.CANCELLING and current.snap.worker_id:
        await _tell_worker_to_cancel(bus, current.snap.worker_id, run_id, current.snap.attempt)
    return run_from_snapshot(current.snap, row)


async def _tell_worker_to_cancel(bus: Bus, worker_id: str, run_id: str, attempt: int) -> None:
    """Best effort: the worker also notices the CANCELLING snapshot by itself."""
    from rota.control.client import ControlError

    try:
        await (await control_client()).cancel_on_worker(bus.js, worker_id, run_id, attempt)
    except (ControlError, RotaError) as exc:
        log.warning(
            "cancel of %s: worker %s not told over gRPC (%s); it will see the snapshot",
            run_id,
            worker_id,
            exc,
        )
    except Exception:
        log.warning("cancel of %s: telling worker %s failed", run_id, worker_id, exc_info=True)


_control_clients: dict[int, Any] = {}


async def control_client():  # type: ignore[no-untyped-def]
    """This server's control-plane client (one per event loop), timeouts and
    retries from SchedulerSettings."""
    from rota.control.client import ControlClient
    from rota.control.tls import TlsFiles
    from rota.models import SchedulerSettings

    loop_id = id(asyncio.get_running_loop())
    client = _control_clients.get(loop_id)
    if client is None:
        s = await sql_writer().call(SchedulerSettings.load)
        client = ControlClient(
            TlsFiles.from_settings(get_settings()),
            timeout=s.grpc_timeout_seconds,
            retries=s.grpc_retries,
        )
        _control_clients[loop_id] = client
    return client


# -- topics --------------------------------------------------------------------------


class TopicMessageIn(StrictSchema):
    data: str
    #: Seconds to wait for the ``<topic>.result`` reply; omit to only publish.
    wait_result: float | None = Field(None, allow_inf_nan=False)


class TopicMessageOut(Schema):
    topic: str
    result: str | None = None


@api.post(
    "/topics/{path:topic}/messages",
    response={200: TopicMessageOut, 202: TopicMessageOut, 504: ErrorOut, **_ERRORS},
    tags=["topics"],
)
async def post_topic_message(request: HttpRequest, topic: str, body: TopicMessageIn):  # type: ignore[no-untyped-def]
    """Publish a message on a pod topic (DESIGN §6); with ``wait_result``, wait
    for the reply on ``<topic>.result`` (504 when none comes in time)."""
    from rota.pods import publish as publish_topic
    from rota.pods.errors import ResultTimeout

    bus = await get_bus()
    if body.wait_result is None:
        await publish_topic(bus, topic, body.data)
        return Status(202, {"topic": topic, "result": None})
    if not 0 < body.wait_result <= 300:
        raise InvalidInput("wait_result must be in (0, 300] seconds", field="wait_result")
    try:
        result = await publish_topic(bus, topic, body.data, wait_result=body.wait_result)
    except ResultTimeout as exc:
        return Status(504, {"detail": str(exc)})
    return Status(200, {"topic": topic, "result": result})


def _encode_cursor(run_id: str) -> str:
    return base64.urlsafe_b64encode(run_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except Exception:
        raise InvalidInput("cursor is not one this API returned", field="cursor") from None
    if not raw.isalnum():
        raise InvalidInput("cursor is not one this API returned", field="cursor")
    return raw


_SEED003_FILTER = {
    "COMPLETED": [RunState.SUCCEEDED],
    "FAILED": [RunState.FAILED, RunState.TIMED_OUT],
    "PENDING": [RunState.PENDING, RunState.ASSIGNED, RunState.ORPHANED],
}


@api.get("/runs", response={200: RunPage, **_ERRORS}, tags=["runs"])
async def list_runs(  # type: ignore[no-untyped-def]
    request: HttpRequest,
    status: str | None = None,
    job: str | None = None,
    flow: str | None = None,
    tag: str | None = None,
    schedule: int | None = Query(None, ge=1, le=2**63 - 1),
    updated_after: datetime | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
):
    """Runs from SQL, newest first. ``status`` takes rota states or seed 003's
    (COMPLETED, ...), comma-separated; ``updated_after`` is an ISO 8601 instant
    (a naive one is UTC). ``next_cursor`` is opaque; pass it back as ``cursor``
    for the next page. An empty system answers an empty page."""
    qs = JobRun.objects.all()
    if status:
        states: list[str] = []
        for token in status.upper().split(","):
            token = token.strip()
            if token in _SEED003_FILTER:
                states += _SEED003_FILTER[token]
            elif token in RunState.__members__:
                states.append(token)
            else:
                raise InvalidInput(f"unknown status {token!r}", field="status")
        qs = qs.filter(state__in=states)
    if job:
        qs = qs.filter(job_name=job)
    if flow:
        qs = qs.filter(flow_name=flow)
    if tag:
        qs = qs.filter(tag=tag)
    if schedule is not None:
        qs = qs.filter(schedule_id=schedule)
    if updated_after is not None:
        if updated_after.tzinfo is None:
            updated_after = updated_after.replace(tzinfo=UTC)
        qs = qs.filter(updated_at__gt=updated_after)
    if cursor:
        qs = qs.filter(id__lt=_decode_cursor(cursor))
    rows = [r async for r in qs.order_by("-id")[: limit + 1]]
    more = len(rows) > limit
    rows = rows[:limit]
    logs = await _logs_of([r.id for r in rows]) if rows else {}
    return {
        "items": [run_from_row(r, logs.get(r.id)) for r in rows],
        "next_cursor": _encode_cursor(rows[-1].id) if more else None,
    }


_routers()
