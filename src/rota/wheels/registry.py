"""The wheel registry's operations on the object store, and its history in SQL.

An upload or a delete of a package holds that package's lock (a compare-and-set
``create`` of ``wheels.lock.<package>`` in the coordination bucket) while it
checks the version policy and changes the store, so two uploads of one package
cannot both pass the check. A lock left by a crashed server is taken over (by
compare-and-set on its revision) once it is older than :data:`LOCK_STALE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from nats.js import JetStreamContext, api
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
    ObjectNotFoundError,
)

from rota.bus import subjects
from rota.domain import wheels as domain
from rota.domain.ids import new_event_id
from rota.errors import BackendUnavailable, Conflict, NotFound

#: A lock older than this belongs to a server that died mid-upload.
LOCK_STALE_SECONDS = 120.0
#: How long an upload waits for another one of the same package.
LOCK_WAIT_SECONDS = 30.0


def info_out(info: api.ObjectInfo) -> dict[str, Any]:
    """A stored wheel as ``GET /wheels`` shows it (pyoco-server 0.5.1's shape)."""
    digest = str(info.digest or "")
    headers = info.headers or {}
    return {
        "name": info.name,
        "size_bytes": int(info.size or 0),
        "digest": digest,
        "sha256_b64": digest.split("=", 1)[1] if digest.startswith("SHA-256=") else None,
        "sha256_hex": domain.sha256_from_headers(headers),
        "mtime": str(info.mtime or ""),
        "nuid": str(info.nuid or ""),
        "tags": domain.tags_from_headers(headers),
    }


class WheelRegistry:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def _store(self):
        return await self.js.object_store(subjects.WHEELS_STORE)

    async def infos(self) -> list[api.ObjectInfo]:
        """Every wheel in the registry (deleted ones left out), by name.

        Read from the stream's subject list, one get per meta subject, for the
        reason given in :func:`rota.coordination.registry._read`: a watch that
        has just started may call its initial values complete too early."""
        stream = f"OBJ_{subjects.WHEELS_STORE}"
        prefix = f"$O.{subjects.WHEELS_STORE}.M."
        try:
            info = await self.js.stream_info(stream, subjects_filter=prefix + ">")
        except NotFoundError:
            return []
        found: list[api.ObjectInfo] = []

        async def one(subject: str) -> None:
            try:
                msg = await self.js.get_msg(stream, subject=subject)
            except NotFoundError:
                return
            try:
                obj = api.ObjectInfo.from_response(orjson.loads(msg.data or b"{}"))
            except (ValueError, TypeError, KeyError):
                return
            if not obj.deleted and domain.NAME_RE.fullmatch(obj.name or ""):
                found.append(obj)

        await asyncio.gather(*(one(s) for s in (info.state.subjects or {})))
        return sorted(found, key=lambda i: i.name)

    async def stored(self) -> list[domain.Stored]:
        return [
            domain.Stored(
                i.name,
                domain.sha256_from_headers(i.headers),
                tuple(domain.tags_from_headers(i.headers)),
                str(i.nuid or ""),
                int(i.size or 0),
            )
            for i in await self.infos()
        ]

    async def info(self, filename: str) -> api.ObjectInfo:
        try:
            return await (await self._store()).get_info(filename)
        except (ObjectNotFoundError, NotFoundError):
            raise NotFound(f"no wheel {filename!r} in the registry") from None

    async def upload(
        self, name: domain.WheelName, data: bytes, tags: list[str], sha256_hex: str
    ) -> api.ObjectInfo:
        """Store a checked wheel; WheelConflict (409) if its version is not
        higher than the package's current one."""
        store = await self._store()
        async with self._lock(name.package):
            domain.check_version_policy(name, [i.name for i in await self.infos()])
            headers = {"content-type": "application/octet-stream", domain.SHA256_HEADER: sha256_hex}
            if tags:
                headers[domain.TAGS_HEADER] = ",".join(tags)
            info = await store.put(
                name.filename, data, meta=api.ObjectMeta(name=name.filename, headers=headers)
            )
        if info.digest != domain.store_digest(sha256_hex):
            # The store hashed other bytes than we checked: never keep them.
            with contextlib.suppress(Exception):
                await store.delete(name.filename)
            raise BackendUnavailable(
                f"the object store recorded digest {info.digest} for {name.filename}, "
                f"not the upload's sha256 {sha256_hex}",
                hint="the upload was removed again; retry it",
            )
        return info

    async def download(self, filename: str) -> tuple[bytes, api.ObjectInfo]:
        """A wheel's bytes, checked against the sha256 recorded at upload."""
        try:
            result = await (await self._store()).get(filename)
        except (ObjectNotFoundError, NotFoundError):
            raise NotFound(f"no wheel {filename!r} in the registry") from None
        data = bytes(result.data or b"")
        want = domain.sha256_from_headers(result.info.headers)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise BackendUnavailable(
                f"{filename}: the stored bytes do not match the sha256 recorded at upload",
                hint="delete the wheel and upload it again",
            )
        return data, result.info

    async def delete(self, filename: str) -> api.ObjectInfo:
        name = domain.parse_name(filename)
        async with self._lock(name.package):
            info = await self.info(filename)
            await (await self._store()).delete(filename)
        return info

    @contextlib.asynccontextmanager
    async def _lock(self, package: str) -> AsyncIterator[None]:
        coord = await self.js.key_value(subjects.COORD_BUCKET)
        key = subjects.wheel_lock_key(package)
        mine = orjson.dumps({"at": time.time(), "id": new_event_id()})
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        revision = None
        while revision is None:
            try:
                revision = await coord.create(key, mine)
                break
            except (KeyWrongLastSequenceError, BadRequestError):
                pass
            try:
                held = await coord.get(key)
            except KeyNotFoundError:
                continue  # released meanwhile
            at = orjson.loads(held.value or b"{}").get("at", 0.0) if held.value else 0.0
            if time.time() - at > LOCK_STALE_SECONDS:
                with contextlib.suppress(KeyWrongLastSequenceError, BadRequestError):
                    revision = await coord.update(key, mine, last=held.revision)
                continue
            if time.monotonic() > deadline:
                raise Conflict(
                    f"another upload or delete of {package} is in progress",
                    hint="retry in a moment",
                )
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await coord.delete(key, last=revision)


# -- the operations the API and the ops UI share ------------------------------------


async def upload_recorded(
    js: JetStreamContext,
    filename: str,
    data: bytes,
    *,
    tags: str | None,
    replace: bool | None,
    actor: dict[str, Any],
    source: dict[str, Any],
) -> dict[str, Any]:
    """Check, store, write the history event and the audit record; the stored
    wheel as ``POST /wheels`` answers. Size limits are the caller's (the API
    answers 413 before reading a too large body)."""
    from rota.audit import record
    from rota.runs.sqlwriter import sql_writer

    name = domain.parse_name(filename)
    wheel_tags = domain.parse_tags(tags)
    sha256_hex = domain.check_contents(name, data)
    info = await WheelRegistry(js).upload(name, data, wheel_tags, sha256_hex)
    out = info_out(info)
    out["sha256_hex"], out["tags"] = sha256_hex, wheel_tags
    await sql_writer().call(
        lambda: record_event("upload", out, actor=actor, source=source, replace=replace)
    )
    await record(
        actor.get("username") or "anonymous",
        "wheel.upload",
        name.filename,
        version=str(name.version),
        tags=wheel_tags,
        sha256=sha256_hex,
    )
    return out


async def delete_recorded(
    js: JetStreamContext, filename: str, *, actor: dict[str, Any], source: dict[str, Any]
) -> dict[str, Any]:
    """Delete a wheel, write the history event and the audit record."""
    from rota.audit import record
    from rota.runs.sqlwriter import sql_writer

    name = domain.parse_name(filename)
    out = info_out(await WheelRegistry(js).delete(name.filename))
    await sql_writer().call(lambda: record_event("delete", out, actor=actor, source=source))
    await record(
        actor.get("username") or "anonymous",
        "wheel.delete",
        name.filename,
        version=str(name.version),
    )
    return {"name": name.filename, "deleted": True}


def request_source(request: Any) -> dict[str, Any]:
    """Where a change came from (seed 003's ``source``)."""
    h = request.headers
    return {
        "remote_addr": request.META.get("REMOTE_ADDR") or None,
        "x_forwarded_for": h.get("X-Forwarded-For") or None,
        "x_real_ip": h.get("X-Real-IP") or None,
        "user_agent": h.get("User-Agent") or None,
        "host": h.get("Host") or None,
        "scheme": request.scheme or None,
    }


def request_actor(request: Any, username: str) -> dict[str, Any]:
    """Who made a change: the user, and the prefix of the token it used (the
    prefix ApiToken keeps; never the token)."""
    header = request.headers.get("Authorization", "")
    raw = header[7:].strip() if header.lower().startswith("bearer ") else ""
    raw = raw or request.headers.get("X-API-Key", "").strip()
    return {
        "username": username,
        "api_key_id": raw[5:13] if raw.startswith("rota_") else None,
        "tenant_id": None,
        "via": "token" if raw else "session",
    }


# -- history (SQL) ---------------------------------------------------------------


def record_event(
    action: str,
    info: dict[str, Any],
    *,
    actor: dict[str, Any],
    source: dict[str, Any],
    replace: bool | None = None,
) -> dict[str, Any]:
    """Write one history event (on the SQL writer thread); return it as the API shows it."""
    from rota.models import WheelEvent

    name = domain.parse_name(info["name"])
    event = WheelEvent.objects.create(
        id=new_event_id(),
        action=action,
        wheel_name=name.filename,
        package=name.package,
        version=str(name.version),
        tags=list(info.get("tags") or []),
        size_bytes=info.get("size_bytes"),
        sha256_hex=info.get("sha256_hex") or "",
        replace=replace,
        actor=actor,
        source=source,
    )
    return event_out(event)


def event_out(e: Any) -> dict[str, Any]:
    """A history event in pyoco-server 0.5.1's shape (plus package and version)."""
    return {
        "event_id": e.id,
        "occurred_at": e.occurred_at.timestamp(),
        "action": e.action,
        "wheel_name": e.wheel_name,
        "package_name": e.package,
        "package_version": e.version,
        "tags": e.tags,
        "size_bytes": e.size_bytes,
        "sha256_hex": e.sha256_hex or None,
        "replace": e.replace,
        "actor": e.actor,
        "source": e.source,
    }
