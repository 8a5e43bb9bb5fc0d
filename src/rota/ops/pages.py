"""The ops pages that read SQL: dashboard, jobs, schedules, settings, audit log,
events, and the DLQ (read from its stream)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, JsonResponse

from rota.coordination import registry
from rota.domain.states import RunState
from rota.errors import InvalidInput, RotaError
from rota.models import AdminActionLog, Event, JobDefinition, JobRun, Schedule, SchedulerSettings
from rota.ops.access import ops_required
from rota.ops.errors import error_response, json_object
from rota.ops.render import page
from rota.ops.table import capped_count, parse_date

log = logging.getLogger(__name__)

#: A run not started this long after it was due counts as late on the dashboard.
LATE_AFTER = timedelta(seconds=60)
FAILED_STATES = (RunState.FAILED, RunState.TIMED_OUT)
WAITING_STATES = (RunState.PENDING, RunState.ASSIGNED, RunState.ORPHANED)


def _run_summary() -> dict[str, Any]:
    now = datetime.now(UTC)
    day_ago = now - timedelta(days=1)
    recent = list(
        JobRun.objects.order_by("-id").values(
            "id", "job_name", "state", "worker_id", "started_at", "finished_at", "error_summary"
        )[:10]
    )
    failures, failures_exact = capped_count(
        JobRun.objects.filter(state__in=FAILED_STATES, updated_at__gte=day_ago)
    )
    late_qs = (
        JobRun.objects.filter(state__in=WAITING_STATES, held=False)
        .annotate(due=Coalesce("scheduled_for", "created_at"))
        .filter(due__lt=now - LATE_AFTER)
    )
    late, late_exact = capped_count(late_qs)
    recent_failures = list(
        JobRun.objects.filter(state__in=FAILED_STATES)
        .order_by("-id")
        .values("id", "job_name", "state", "finished_at", "error_summary")[:5]
    )
    late_runs = list(
        late_qs.order_by("due").values("id", "job_name", "state", "due", "worker_id")[:5]
    )
    return {
        "recent": recent,
        "failures": failures,
        "failures_exact": failures_exact,
        "recent_failures": recent_failures,
        "late": late,
        "late_exact": late_exact,
        "late_runs": late_runs,
        "late_after": int(LATE_AFTER.total_seconds()),
    }


@ops_required()
async def dashboard(request: HttpRequest) -> HttpResponse:
    from rota.ops.workers import cluster_view

    cluster = await cluster_view()
    workers = cluster["workers"]
    states = Counter(w["state"] for w in workers)
    summary = {
        "total": sum(1 for w in workers if registry.listed(w)),
        **{
            s.lower(): states[s]
            for s in ("RUNNING", "IDLE", "DRAINING", "DETACHED", "DISCONNECTED")
        },
        "runs": sum(len(w["run_ids"]) for w in workers if w["active"]),
    }
    runs = await sync_to_async(_run_summary)()
    return page(
        request,
        "rota_ops/dashboard.html",
        {**cluster, "worker_summary": summary, **runs},
        section="dashboard",
        fragment="rota_ops/_dashboard.html",
    )


# -- jobs ------------------------------------------------------------------------------


#: Fields of the API's job shape that the edit modal does not send back.
_NOT_EDITED = {"id", "created_at", "updated_at"}


def _job_rows() -> list[dict[str, Any]]:
    from rota.api.app import job_out

    jobs = JobDefinition.objects.annotate(
        n_schedules=Count("schedules", distinct=True),
        n_enabled_schedules=Count("schedules", filter=Q(schedules__enabled=True), distinct=True),
    ).order_by("name")
    out = []
    for j in jobs:
        out.append(
            {
                "job": j,
                "n_schedules": j.n_schedules,
                "n_enabled_schedules": j.n_enabled_schedules,
                "type": "event" if j.subscribed_events else ("time" if j.n_schedules else "manual"),
                # What the edit modal fills in: the API's own shape of a job.
                "edit_json": json.dumps(
                    {k: v for k, v in job_out(j).items() if k not in _NOT_EDITED}
                ),
                "run_values": json.dumps(
                    {
                        "params": json.dumps(j.default_params, indent=2, ensure_ascii=False),
                        "schema": json.dumps(j.params_schema, indent=2, ensure_ascii=False)
                        if j.params_schema
                        else "",
                    }
                ),
            }
        )
    return out


@ops_required()
def jobs_page(request: HttpRequest) -> HttpResponse:
    from rota.models import ExecutionPolicy, ExecutorKind

    return page(
        request,
        "rota_ops/jobs.html",
        {
            "jobs": _job_rows(),
            "kinds": [k.value for k in ExecutorKind],
            "policies": [p.value for p in ExecutionPolicy],
        },
        section="jobs",
        fragment="rota_ops/_jobs_table.html",
    )


@ops_required()
async def job_run_now(request: HttpRequest, name: str) -> HttpResponse:
    """POST ``{"params": {...}}``: a run of the job now, its params merged over
    the job's defaults and validated against its schema. Audited as job.run_now."""
    from rota.api.app import get_bus, runnable_job
    from rota.audit import record
    from rota.runs.service import RunRequest, RunService

    if request.method != "POST":
        return JsonResponse({"detail": "POST only"}, status=405)
    try:
        params = json_object(request).get("params", {})
        if not isinstance(params, dict):
            raise InvalidInput("params must be a JSON object", field="params")
        job = await runnable_job(name)
        run, _ = await RunService(await get_bus()).submit(RunRequest(job=job, params=params))
    except RotaError as exc:
        return error_response(exc)
    await record(request.ops.username, "job.run_now", name, run_id=run.id)
    return JsonResponse({"run_id": run.id, "state": run.state}, status=201)


# -- schedules ---------------------------------------------------------------------------


def _schedule_rows() -> list[dict[str, Any]]:
    from rota.api.schedules import schedule_out

    out = []
    for s in Schedule.objects.select_related("job").order_by("job__name", "name"):
        row = schedule_out(s)
        row["edit_json"] = json.dumps(
            {
                "id": s.id,
                "task_name": s.job.name,
                "name": "" if s.auto_generated_name else s.name,
                "cron_expression": s.cron,
                "structured": s.structured,
                "task_params": s.params,
                "timezone": s.timezone,
                "execution_policy": s.execution_policy,
                "catch_up_seconds": s.catch_up_seconds,
                "enabled": s.enabled,
                "description": s.description,
            }
        )
        row["params_json"] = json.dumps(s.params, ensure_ascii=False)
        out.append(row)
    return out


@ops_required()
def schedules_page(request: HttpRequest) -> HttpResponse:
    from rota.models import ExecutionPolicy

    return page(
        request,
        "rota_ops/schedules.html",
        {
            "schedules": _schedule_rows(),
            "jobs": list(JobDefinition.objects.order_by("name").values_list("name", flat=True)),
            "policies": [p.value for p in ExecutionPolicy],
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        },
        section="schedules",
        fragment="rota_ops/_schedules_table.html",
    )


# -- settings ------------------------------------------------------------------------------

#: The SchedulerSettings fields the page edits, with their input's step; their
#: limits are the API's (rota.api.settings.bounds).
SETTINGS_FIELDS = (
    ("continuation_retries", "1"),
    ("continuation_interval_seconds", "0.05"),
    ("log_retention_days", "1"),
    ("heartbeat_interval_seconds", "0.1"),
    ("heartbeat_ttl_seconds", "0.1"),
    ("leader_lease_seconds", "0.5"),
    ("assign_ahead_seconds", "1"),
    ("grpc_timeout_seconds", "0.05"),
    ("grpc_retries", "1"),
    ("degrade_cooldown_seconds", "1"),
)


def _settings_labels() -> dict[str, tuple[str, str]]:
    from django.utils.translation import gettext as _

    return {
        "continuation_retries": (
            _("Continuation retries"),
            _("How often the leader asks a silent worker whether it still runs a run."),
        ),
        "continuation_interval_seconds": (
            _("Continuation interval (s)"),
            _("Seconds between those questions."),
        ),
        "log_retention_days": (
            _("Log retention (days)"),
            _("How long captured output stays in the database."),
        ),
        "heartbeat_interval_seconds": (
            _("Heartbeat interval (s)"),
            _("How often every worker reports that it is alive."),
        ),
        "heartbeat_ttl_seconds": (
            _("Heartbeat TTL (s)"),
            _("A worker silent this long is DISCONNECTED. Longer than the interval."),
        ),
        "leader_lease_seconds": (
            _("Leader lease (s)"),
            _("A leader that does not renew within this is replaced."),
        ),
        "assign_ahead_seconds": (
            _("Assign ahead (s)"),
            _("How early a scheduled run is handed to a worker."),
        ),
        "grpc_timeout_seconds": (
            _("gRPC timeout (s)"),
            _("Deadline of each control-plane call."),
        ),
        "grpc_retries": (_("gRPC retries"), _("Retries of a control-plane call that failed.")),
        "degrade_cooldown_seconds": (
            _("Degrade cool-down (s)"),
            _("How long a degraded leader stays out of elections."),
        ),
    }


@ops_required()
def settings_page(request: HttpRequest) -> HttpResponse:
    from rota.api.settings import bounds

    row = SchedulerSettings.load()
    labels = _settings_labels()
    fields = [
        {
            "name": name,
            "label": labels[name][0],
            "help": labels[name][1],
            "value": getattr(row, name),
            "step": step,
            "min": bounds(name)[0],
            "max": bounds(name)[1],
            "integer": isinstance(getattr(row, name), int),
        }
        for name, step in SETTINGS_FIELDS
    ]
    return page(
        request,
        "rota_ops/settings.html",
        {"fields": fields, "updated_at": row.updated_at},
        section="settings",
        fragment="rota_ops/_settings_values.html",
    )


# -- audit log and events -------------------------------------------------------------------


@ops_required()
def audit_page(request: HttpRequest) -> HttpResponse:
    q = request.GET
    qs = AdminActionLog.objects.order_by("-created_at", "-id")
    filters = {
        k: q.get(k, "").strip() for k in ("actor", "action", "target", "date_from", "date_to")
    }
    if filters["actor"]:
        qs = qs.filter(actor=filters["actor"])
    if filters["action"]:
        qs = qs.filter(action__startswith=filters["action"])
    if filters["target"]:
        qs = qs.filter(target__startswith=filters["target"])
    try:
        start = parse_date(filters["date_from"], "date_from")
        end = parse_date(filters["date_to"], "date_to", end=True)
    except InvalidInput as exc:
        return error_response(exc)
    if start:
        qs = qs.filter(created_at__gte=start)
    if end:
        qs = qs.filter(created_at__lt=end)
    paginator = Paginator(qs, 50)
    entries = paginator.get_page(q.get("page"))
    for e in entries:
        e.detail_text = json.dumps(e.detail_json, ensure_ascii=False, sort_keys=True)
    actions = sorted(set(AdminActionLog.objects.values_list("action", flat=True).distinct()[:200]))
    actors = sorted(set(AdminActionLog.objects.values_list("actor", flat=True).distinct()[:200]))
    query = q.copy()
    query.pop("page", None)
    query.pop("fragment", None)
    return page(
        request,
        "rota_ops/audit.html",
        {
            "entries": entries,
            "filters": filters,
            "actions": actions,
            "actors": actors,
            "query": query.urlencode(),
        },
        section="audit",
        fragment="rota_ops/_audit_table.html",
    )


@ops_required()
def events_page(request: HttpRequest) -> HttpResponse:
    name = request.GET.get("name", "").strip()
    qs = Event.objects.order_by("-id")
    if name:
        qs = qs.filter(name=name)
    events = list(qs[:100])
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in (
        JobRun.objects.filter(event_id__in=[e.id for e in events])
        .order_by("id")
        .values("id", "job_name", "state", "event_id")
    ):
        runs.setdefault(r["event_id"], []).append(r)
    rows = [
        {
            "event": e,
            "payload": json.dumps(e.payload, ensure_ascii=False, sort_keys=True),
            "runs": runs.get(e.id, []),
        }
        for e in events
    ]
    subscribed = list(
        JobDefinition.objects.exclude(subscribed_events=[]).values("name", "subscribed_events")
    )
    return page(
        request,
        "rota_ops/events.html",
        {"rows": rows, "name": name, "subscribed": subscribed},
        section="events",
        fragment="rota_ops/_events_table.html",
    )


# -- DLQ ------------------------------------------------------------------------------------

DLQ_SHOWN = 100


async def read_dlq(limit: int = DLQ_SHOWN) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` dead letters, newest first, and how many the stream holds."""
    from rota.api.app import get_bus
    from rota.bus.subjects import DLQ_STREAM

    bus = await get_bus()
    info = await bus.js.stream_info(DLQ_STREAM)
    first, last = info.state.first_seq, info.state.last_seq
    out: list[dict[str, Any]] = []
    seq = last
    while seq >= first and seq > 0 and len(out) < limit:
        try:
            msg = await bus.js.get_msg(DLQ_STREAM, seq)
        except Exception:  # a gap (deleted message)
            seq -= 1
            continue
        try:
            rec = json.loads(msg.data or b"{}")
        except ValueError:
            rec = {"reason": "?", "error": (msg.data or b"")[:200].decode(errors="replace")}
        rec["seq"] = msg.seq
        rec["subject"] = msg.subject
        rec["at_dt"] = datetime.fromtimestamp(rec["at"], UTC) if rec.get("at") else None
        out.append(rec)
        seq -= 1
    return out, info.state.messages


@ops_required()
async def dlq_page(request: HttpRequest) -> HttpResponse:
    try:
        records, total = await read_dlq()
        error = ""
    except Exception as exc:
        log.warning("ops: cannot read the DLQ: %s", exc)
        records, total, error = [], 0, str(exc) or type(exc).__name__
    reason = request.GET.get("reason", "").strip()
    reasons = sorted({r.get("reason") or "?" for r in records})
    if reason:
        records = [r for r in records if r.get("reason") == reason]
    return page(
        request,
        "rota_ops/dlq.html",
        {
            "records": records,
            "total": total,
            "error": error,
            "reason": reason,
            "reasons": reasons,
            "shown": DLQ_SHOWN,
        },
        section="dlq",
        fragment="rota_ops/_dlq_table.html",
    )
