"""Workers and the leader, as the registry in NATS KV shows them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from rota.coordination import registry
from rota.errors import RotaError
from rota.models import JobRun
from rota.ops.access import ops_required
from rota.ops.errors import error_response
from rota.ops.render import page

log = logging.getLogger(__name__)


def _when(ts: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(ts), UTC) if ts else None
    except (TypeError, ValueError):
        return None


def _shape(w: dict[str, Any]) -> dict[str, Any]:
    """A registry entry with what templates need precomputed."""
    runs = w.get("runs") or []
    run_ids = [r["run_id"] if isinstance(r, dict) else str(r) for r in runs]
    return {
        **w,
        "run_ids": run_ids,
        "started": _when(w.get("started_at")),
        "stopped": _when(w.get("stopped_at")),
        "heartbeat_age_s": None if w.get("heartbeat_age") is None else round(w["heartbeat_age"], 1),
        "load_pct": int(100 * (w.get("load") or 0) / w["capacity"]) if w.get("capacity") else 0,
    }


async def cluster_view() -> dict[str, Any]:
    """Workers and leadership, or the reason NATS could not be read."""
    from rota.api.app import get_bus

    try:
        bus = await get_bus()
        workers = [_shape(w) for w in await registry.list_workers(bus.js)]
        leadership = await registry.leadership(bus.js)
    except Exception as exc:  # an unreachable NATS is shown, not raised
        log.warning("ops: cannot read the registry: %s", exc)
        return {"nats_error": str(exc) or type(exc).__name__, "workers": [], "leadership": None}
    by_id = {w["worker_id"]: w for w in workers}
    leader = leadership.get("leader")
    if leader:
        seen = by_id.get(leader.get("worker_id", ""), {})
        leadership["leader_seen_age"] = seen.get("heartbeat_age_s")
        leadership["leader_since"] = _when(leader.get("since"))
    for sub in leadership.get("subleaders", []):
        sub["since_at"] = _when(sub.get("since"))
        sub["seen_age"] = by_id.get(sub.get("worker_id", ""), {}).get("heartbeat_age_s")
    leadership["subleaders"] = sorted(
        leadership.get("subleaders", []), key=lambda s: s.get("node_id", "")
    )
    return {"nats_error": "", "workers": workers, "leadership": leadership}


@ops_required()
async def workers_page(request: HttpRequest) -> HttpResponse:
    show_all = request.GET.get("scope") == "all"
    hidden = request.GET.get("hidden") == "1"
    data = await cluster_view()
    workers = data["workers"]
    if not show_all:
        workers = [w for w in workers if registry.listed(w)]
    if not hidden:
        workers = [w for w in workers if not w["hidden"]]
    return page(
        request,
        "rota_ops/workers.html",
        {**data, "workers": workers, "show_all": show_all, "show_hidden": hidden},
        section="workers",
        fragment="rota_ops/_workers_table.html",
    )


@ops_required()
async def worker_page(request: HttpRequest, worker_id: str) -> HttpResponse:
    data = await cluster_view()
    worker = next((w for w in data["workers"] if w["worker_id"] == worker_id), None)
    if worker is None and not data["nats_error"]:
        raise Http404(f"no worker {worker_id!r}")
    recent = [
        r
        async for r in JobRun.objects.filter(worker_id=worker_id)
        .order_by("-id")
        .values("id", "job_name", "state", "attempt", "started_at", "finished_at")[:20]
    ]
    return page(
        request,
        "rota_ops/worker_detail.html",
        {**data, "worker": worker, "worker_id": worker_id, "recent": recent},
        section="workers",
        fragment="rota_ops/_worker_state.html",
    )


async def _control_call(request: HttpRequest, worker_id: str, call, action: str) -> HttpResponse:
    """POST only: run a control-plane call on the worker from the web server,
    audit it as ``action``, answer its result as JSON."""
    from rota.audit import record

    if request.method != "POST":
        return JsonResponse({"detail": "POST only"}, status=405)
    try:
        out = await call(worker_id)
    except RotaError as exc:
        return error_response(exc)
    detail = {"ms": out["round_trip_ms"]} if "round_trip_ms" in out else {}
    await record(request.ops.username, action, worker_id, **detail)
    return JsonResponse(out)


@ops_required()
async def worker_ping(request: HttpRequest, worker_id: str) -> HttpResponse:
    """POST: gRPC Ping of the worker, from the web server."""
    from rota.ops.operations import ping

    return await _control_call(request, worker_id, ping, "worker.ping")


@ops_required()
async def worker_status(request: HttpRequest, worker_id: str) -> HttpResponse:
    """POST: gRPC GetStatus of the worker."""
    from rota.ops.operations import status

    return await _control_call(request, worker_id, status, "worker.status")


@ops_required()
async def leader_page(request: HttpRequest) -> HttpResponse:
    data = await cluster_view()
    return page(
        request,
        "rota_ops/leader.html",
        data,
        section="leader",
        fragment="rota_ops/_leader.html",
    )
