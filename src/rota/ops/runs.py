"""Runs: the DataTables list, its server-side data, a run's page, reassign."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import NoReverseMatch, reverse

from rota.domain.states import RunState
from rota.errors import InvalidInput, RotaError
from rota.models import JobDefinition
from rota.ops.access import ops_required
from rota.ops.errors import error_response, json_object
from rota.ops.render import page
from rota.ops.table import COUNT_CAP, parse_request, table_page

#: States a cancel changes (PENDING/ORPHANED end at once, the others via CANCELLING).
CANCELLABLE = {RunState.PENDING, RunState.ASSIGNED, RunState.RUNNING, RunState.ORPHANED}
#: States no worker holds: a reassign dispatches them again.
REASSIGNABLE = {RunState.PENDING, RunState.ORPHANED}


@ops_required()
def runs_page(request: HttpRequest) -> HttpResponse:
    jobs = list(JobDefinition.objects.order_by("name").values_list("name", flat=True))
    return page(
        request,
        "rota_ops/runs.html",
        {"jobs": jobs, "states": [s.value for s in RunState], "count_cap": COUNT_CAP},
        section="runs",
    )


@ops_required()
def runs_data(request: HttpRequest) -> HttpResponse:
    """DataTables' server-side request (GET), answered from SQL."""
    try:
        req = parse_request(request.GET)
    except RotaError as exc:
        return error_response(exc)
    return JsonResponse(table_page(req))


def _ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError):
        return None


def timeline(run: dict[str, Any]) -> list[dict[str, Any]]:
    """What happened to a run, oldest first: its lifecycle times and its events."""
    steps: list[dict[str, Any]] = []
    for key, label in (
        ("created_at", "CREATED"),
        ("scheduled_for", "SCHEDULED_FOR"),
        ("started_at", "STARTED"),
        ("finished_at", run["state"]),
    ):
        at = _ts(run.get(key))
        if at is not None:
            steps.append({"at": at, "event": label, "attempt": None, "detail": {}})
    for ev in run.get("events") or []:
        detail = {k: v for k, v in ev.items() if k not in ("at", "event", "attempt")}
        steps.append(
            {
                "at": _ts(ev.get("at")),
                "event": ev.get("event", "?"),
                "attempt": ev.get("attempt"),
                "detail": detail,
            }
        )
    epoch = datetime.min.replace(tzinfo=UTC)
    steps.sort(key=lambda s: s["at"] or epoch)
    return steps


def _optional_url(name: str, run_id: str) -> str:
    """The URL of an API endpoint if this rota has it, else ''."""
    try:
        return reverse(f"rota-api:{name}", args=[run_id])
    except NoReverseMatch:
        return ""


@ops_required()
async def run_page(request: HttpRequest, run_id: str) -> HttpResponse:
    from rota.api.app import get_run

    try:
        run = await get_run(request, run_id)
    except RotaError as exc:
        if request.GET.get("fragment"):
            return error_response(exc)
        raise Http404(exc.message) from None
    job = await JobDefinition.objects.filter(name=run["job"]).afirst()
    attempts = await sync_to_async(_attempts)(run_id)
    context = {
        "run": run,
        "job": job,
        "timeline": timeline(run),
        "attempts": attempts,
        "params_json": json.dumps(run["params"], indent=2, ensure_ascii=False),
        "result_json": json.dumps(run["result"], indent=2, ensure_ascii=False)
        if run["result"] is not None
        else "",
        "can_cancel": run["state"] in CANCELLABLE,
        "can_reassign": run["state"] in REASSIGNABLE,
        "terminal": run["state"]
        in {RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED},
        # The live tail and the logs endpoint, where this rota serves them.
        "tail_url": _optional_url("tail_logs", run_id),
        "logs_url": _optional_url("run_logs", run_id),
        "reassign_url": reverse("rota-ops:run-reassign", args=[run_id]),
        "cancel_path": f"runs/{run_id}/cancel",
    }
    return page(
        request,
        "rota_ops/run_detail.html",
        context,
        section="runs",
        fragment="rota_ops/_run_state.html",
    )


def _attempts(run_id: str) -> list[dict[str, Any]]:
    """Attempts that left output in the log table, with the size of each stream."""
    from django.db.models import Sum
    from django.db.models.functions import Length

    from rota.models import RunLog

    rows = (
        RunLog.objects.filter(run_id=run_id)
        .values("attempt", "stream")
        .annotate(size=Sum(Length("data")))
        .order_by("attempt", "stream")
    )
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        out.setdefault(r["attempt"], {"attempt": r["attempt"]})[r["stream"]] = r["size"]
    return list(out.values())


@ops_required()
async def reassign(request: HttpRequest, run_id: str) -> HttpResponse:
    """POST: dispatch a run no worker holds (PENDING, ORPHANED) again, to its
    tag or pinned to one worker (``{"worker_id": ...}``). Audited as run.reassign."""
    from rota.audit import record
    from rota.ops.operations import reassign_run

    if request.method != "POST":
        return JsonResponse({"detail": "POST only"}, status=405)
    try:
        worker_id = json_object(request).get("worker_id")
        if worker_id is not None and not isinstance(worker_id, str):
            raise InvalidInput("worker_id must be a string (a worker's id) or absent")
        worker_id = (worker_id or "").strip() or None
        snap = await reassign_run(run_id, worker_id)
    except RotaError as exc:
        return error_response(exc)
    await record(
        request.ops.username,
        "run.reassign",
        run_id,
        worker_id=worker_id or "",
        attempt=snap.attempt,
        state=snap.state,
    )
    return JsonResponse({"run_id": run_id, "state": snap.state, "worker_id": worker_id})
