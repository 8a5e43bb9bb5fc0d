"""The wheel registry over HTTP (seed 003 F-20, F-21), with pyoco-server 0.5.1's
routes, fields, shapes and status codes, so its ``pyoco-client`` works unchanged:

- ``POST /wheels``: multipart file ``wheel``, form fields ``tags``
  (comma-separated) and ``replace``; 200 with the stored wheel.
- ``GET /wheels``: the registry, a list sorted by name.
- ``GET /wheels/history``: upload and delete events, newest first; filters
  ``limit`` (1–500), ``wheel_name``, ``action``.
- ``GET /wheels/{wheel_filename}``: the wheel's bytes.
- ``DELETE /wheels/{wheel_filename}``: ``{"name", "deleted": true}``.

Uploading and deleting need the operator role; every change is written to the
history and to the audit log.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from ninja import File, Form, Router, Status
from ninja.files import UploadedFile

from rota.api.schemas import ErrorOut
from rota.audit import actor_of
from rota.conf import get_settings
from rota.domain import wheels as domain
from rota.errors import InvalidInput, NotFound
from rota.wheels.registry import (
    WheelRegistry,
    delete_recorded,
    event_out,
    info_out,
    request_actor,
    request_source,
    upload_recorded,
)

router = Router(tags=["wheels"])

_ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}


async def _js():
    from rota.api.app import get_bus

    return (await get_bus()).js


async def _registry() -> WheelRegistry:
    return WheelRegistry(await _js())


def _flag(raw: str | None, *, field: str, default: bool) -> bool:
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise InvalidInput(f"{field} must be true or false, not {raw!r}", field=field)


@router.get("/wheels", response={200: list[dict[str, Any]], **_ERRORS})
async def list_wheels(request: HttpRequest):
    """Every wheel in the registry, sorted by name, with its size, digest and tags."""
    return [info_out(i) for i in await (await _registry()).infos()]


@router.post("/wheels", response={200: dict[str, Any], 413: ErrorOut, **_ERRORS})
async def upload_wheel(
    request: HttpRequest,
    wheel: UploadedFile | None = File(None),
    tags: str | None = Form(None),
    replace: str | None = Form(None),
):
    """Upload a wheel (multipart field ``wheel``) for the workers whose tags
    intersect ``tags`` (none: every worker). A package only ever gets a higher
    version: the same or a lower one is a 409 naming the current version. Not a
    wheel, a bad file name, METADATA that disagrees with it or entries outside
    the install directory: 422; larger than ``wheel_max_bytes``: 413."""
    if wheel is None:
        raise InvalidInput("upload the wheel as multipart field 'wheel'", field="wheel")
    domain.parse_name(wheel.name or "")  # before reading the body
    domain.parse_tags(tags)
    replace_flag = _flag(replace, field="replace", default=True)
    limit = get_settings().wheel_max_bytes
    if (wheel.size or 0) > limit:
        return Status(413, {"detail": f"the wheel is larger than {limit} bytes (wheel_max_bytes)"})
    data = await sync_to_async(wheel.read)(limit + 1)
    if len(data) > limit:
        return Status(413, {"detail": f"the wheel is larger than {limit} bytes (wheel_max_bytes)"})
    return await upload_recorded(
        await _js(),
        wheel.name or "",
        data,
        tags=tags,
        replace=replace_flag,
        actor=request_actor(request, actor_of(request)),
        source=request_source(request),
    )


@router.get("/wheels/history", response={200: list[dict[str, Any]], **_ERRORS})
async def wheel_history(
    request: HttpRequest,
    limit: int = 100,
    wheel_name: str | None = None,
    action: str | None = None,
):
    """Uploads and deletes, newest first, with source (client address) and actor."""
    from rota.models import WheelEvent

    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", field="limit")
    rows = WheelEvent.objects.all()
    if wheel_name:
        rows = rows.filter(wheel_name=domain.parse_name(wheel_name).filename)
    if action:
        wanted = action.strip().lower()
        if wanted not in WheelEvent.Action.values:
            raise InvalidInput("action must be upload or delete", field="action")
        rows = rows.filter(action=wanted)
    return [event_out(e) async for e in rows.order_by("-occurred_at", "-id")[:limit]]


def _stored_name(wheel_filename: str) -> domain.WheelName:
    """A name from the path; one that cannot be a wheel is not in the registry
    (404, as pyoco-server answers)."""
    try:
        return domain.parse_name(wheel_filename)
    except InvalidInput as exc:
        raise NotFound(f"no wheel {wheel_filename!r} in the registry: {exc.message}") from None


@router.get("/wheels/{wheel_filename}", response={200: None, **_ERRORS})
async def download_wheel(request: HttpRequest, wheel_filename: str):
    """The wheel's bytes, checked against the sha256 recorded at upload."""
    name = _stored_name(wheel_filename)
    data, _ = await (await _registry()).download(name.filename)
    response = HttpResponse(data, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{name.filename}"'
    return response


@router.delete("/wheels/{wheel_filename}", response={200: dict[str, Any], **_ERRORS})
async def delete_wheel(request: HttpRequest, wheel_filename: str):
    """Remove a wheel; workers fall back to the newest remaining version."""
    name = _stored_name(wheel_filename)
    return await delete_recorded(
        await _js(),
        name.filename,
        actor=request_actor(request, actor_of(request)),
        source=request_source(request),
    )
