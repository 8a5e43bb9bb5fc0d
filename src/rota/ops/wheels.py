"""The wheel registry in the ops UI: the wheels, each worker's sync state, the
history; operators upload (a form) and delete (the API's DELETE, from ops.js)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from rota.conf import get_settings
from rota.errors import InvalidInput, RotaError
from rota.models import WheelEvent
from rota.ops.access import ops_required
from rota.ops.render import page

log = logging.getLogger(__name__)

#: History events the page shows.
HISTORY_SHOWN = 50


def _when(ts: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(ts), UTC) if ts else None
    except (TypeError, ValueError):
        return None


async def _context(request: HttpRequest) -> dict[str, Any]:
    from rota.api.app import get_bus
    from rota.coordination import registry
    from rota.wheels.registry import WheelRegistry, info_out

    wheels: list[dict[str, Any]] = []
    workers: list[dict[str, Any]] = []
    error = ""
    try:
        js = (await get_bus()).js
        wheels = [info_out(i) for i in await WheelRegistry(js).infos()]
        for w in await registry.list_workers(js):
            if not registry.listed(w):
                continue
            sync = w.get("wheel_sync") or {}
            workers.append(
                {
                    "worker_id": w["worker_id"],
                    "state": w["state"],
                    "tags": w.get("tags") or [],
                    "enabled": bool(sync.get("enabled")),
                    "result": sync.get("last_result") or "",
                    "error": sync.get("last_error") or "",
                    "synced": _when(sync.get("last_synced_at")),
                    "installed": [
                        {**x, "installed": _when(x.get("installed_at"))}
                        for x in sync.get("installed_wheels") or []
                    ],
                }
            )
    except Exception as exc:  # an unreachable NATS is shown, not raised
        log.warning("ops: cannot read the wheel registry: %s", exc)
        error = str(exc) or type(exc).__name__
    history = [e async for e in WheelEvent.objects.order_by("-occurred_at", "-id")[:HISTORY_SHOWN]]
    return {
        "wheels": wheels,
        "workers": workers,
        "history": history,
        "nats_error": error,
        "uploaded": request.GET.get("uploaded", ""),
        "upload_error": "",
        "max_bytes": get_settings().wheel_max_bytes,
    }


@ops_required()
async def wheels_page(request: HttpRequest) -> HttpResponse:
    return page(
        request,
        "rota_ops/wheels.html",
        await _context(request),
        section="wheels",
        fragment="rota_ops/_wheels.html",
    )


@ops_required()
async def wheel_upload(request: HttpRequest) -> HttpResponse:
    """POST (multipart ``wheel``, ``tags``): the API's upload, for the operator
    level; back to the page, which says what happened."""
    from rota.api.app import get_bus
    from rota.wheels.registry import request_actor, request_source, upload_recorded

    if request.method != "POST":
        return HttpResponseRedirect(reverse("rota-ops:wheels"))
    status = 200
    try:
        upload = request.FILES.get("wheel")
        if upload is None:
            raise InvalidInput("choose a wheel file to upload", field="wheel")
        limit = get_settings().wheel_max_bytes
        if (upload.size or 0) > limit:
            raise InvalidInput(f"the wheel is larger than {limit} bytes (wheel_max_bytes)")
        out = await upload_recorded(
            (await get_bus()).js,
            upload.name or "",
            upload.read(),
            tags=request.POST.get("tags"),
            replace=True,
            actor=request_actor(request, request.ops.username),
            source=request_source(request),
        )
    except RotaError as exc:
        status, message = exc.http_status, exc.message
    else:
        target = reverse("rota-ops:wheels") + "?" + urlencode({"uploaded": out["name"]})
        return HttpResponseRedirect(target)
    context = await _context(request)
    context["upload_error"] = message
    return page(request, "rota_ops/wheels.html", context, section="wheels", status=status)
