"""Following a run: its snapshots (``/watch``) and its output (``/logs``,
``/logs/tail``), as Server-Sent Events.

Every frame carries an ``id:``: the KV revision of the snapshot for ``/watch``,
the live stream's sequence for ``/logs/tail``. A client that reconnects with
``Last-Event-ID`` gets only what came after it. ``event: heartbeat`` frames
(every ``heartbeat`` seconds without news) repeat the last id and keep proxies
from closing an idle connection. Both streams end after the run's end.

``/watch`` follows a KV watch of the run's key, not a poll. When the snapshot is
gone (it expires ``snapshot_max_age_seconds`` after the run's last change) the
SQL row is sent as the one and final snapshot.

Streams cost the server a consumer each, so they are bounded (issue 13): the
consumer is deleted when the stream closes (:mod:`rota.bus.followers`), and one
token (or session) holds at most ``sse_streams_per_token`` streams at once in
this process; one more is answered 429 before anything is created.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
from django.http import HttpRequest, StreamingHttpResponse
from nats.errors import TimeoutError as NatsTimeout
from ninja import Query, Router, Schema

from rota.api.schemas import ErrorOut
from rota.bus import followers, subjects
from rota.conf import get_settings
from rota.domain.snapshot import decode
from rota.domain.states import is_terminal
from rota.errors import InvalidInput, NotFound, RotaError
from rota.models import JobRun
from rota.runs.logs import follow_chunks, read_logs
from rota.runs.transitions import RunStore

router = Router(tags=["runs"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_frame(event: str, data: Any, event_id: int | str | None = None) -> bytes:
    """One Server-Sent Events frame; ``data`` is sent as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


def _last_event_id(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return 0
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise InvalidInput("Last-Event-ID must be an id this stream sent", field="Last-Event-ID")
    return int(raw)


async def _row(run_id: str) -> JobRun:
    row = await JobRun.objects.filter(id=run_id).afirst()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    return row


class TooManyStreams(RotaError):
    """This token holds as many event streams as it may."""

    http_status = 429


class StreamSlots:
    """Open event streams per principal (a token, or a session's user) in this
    process. A slot is taken before the stream's consumer exists and given back
    when the stream ends, is closed, or is dropped before it started."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def total(self) -> int:
        return sum(self._open.values())

    def held_by(self, who: str) -> int:
        return self._open.get(who, 0)

    def guard(self, who: str, limit: int, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``frames``, holding one of ``who``'s at most ``limit`` slots while it
        lives; TooManyStreams when they are all taken."""
        if self._open.get(who, 0) >= limit:
            raise TooManyStreams(
                f"this token has {limit} event streams open already (watches and log"
                " tails); close one, or wait for a run to end",
                hint="raise ROTA_SSE_STREAMS_PER_TOKEN on the server if more are needed",
            )
        self._open[who] = self._open.get(who, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._open.get(who, 1) - 1
                if left > 0:
                    self._open[who] = left
                else:
                    self._open.pop(who, None)

        async def held() -> AsyncIterator[bytes]:
            try:
                async for frame in frames:
                    followers.raise_if_cancelled()
                    yield frame
            finally:
                release()
                # Now, not when the collector gets to it: this closes the consumer.
                await frames.aclose()  # type: ignore[attr-defined]

        guarded = held()
        # A response dropped before its first frame never runs ``held``.
        weakref.finalize(guarded, release)
        return guarded


slots = StreamSlots()


def _principal(request: HttpRequest) -> str:
    who = getattr(request, "rota_principal", "")
    if who:
        return who
    user = getattr(request, "user", None)
    return f"user:{getattr(user, 'pk', '')}"


class EventStreamResponse(StreamingHttpResponse):
    """A StreamingHttpResponse that closes its frames when Django closes the
    response's iterator (the client went away). Django's own ``__aiter__``
    wraps the frames in two generators and closes only the outer one, leaving
    ours (and its consumer and slot) to the garbage collector."""

    async def __aiter__(self):
        frames = self._iterator
        try:
            async for part in frames:
                yield part
        finally:
            await frames.aclose()


def _stream(request: HttpRequest, frames: AsyncIterator[bytes]) -> StreamingHttpResponse:
    frames = slots.guard(_principal(request), get_settings().sse_streams_per_token, frames)
    response = EventStreamResponse(frames, content_type="text/event-stream")
    for name, value in SSE_HEADERS.items():
        response[name] = value
    return response


class StreamParams(Schema):
    #: Seconds between heartbeat frames when nothing else happens.
    heartbeat: float = 15.0


def _heartbeat(params: StreamParams) -> float:
    if not 0.2 <= params.heartbeat <= 300:
        raise InvalidInput("heartbeat must be between 0.2 and 300 seconds", field="heartbeat")
    return params.heartbeat


_STREAM_ERRORS = {429: ErrorOut, 404: ErrorOut, 422: ErrorOut}


@router.get("/runs/{run_id}/watch", response={200: None, **_STREAM_ERRORS})
async def watch_run(request: HttpRequest, run_id: str, params: Query[StreamParams]):
    """Server-Sent Events: ``event: snapshot`` (the run as ``GET /runs/{id}``
    returns it) on every change, ``event: heartbeat`` in between; ends after the
    terminal snapshot. Resume with ``Last-Event-ID``."""
    from rota.api.app import get_bus, run_from_row, run_from_snapshot

    row = await _row(run_id)
    after = _last_event_id(request)
    every = _heartbeat(params)
    bus = await get_bus()

    async def frames() -> AsyncIterator[bytes]:
        last = after
        watcher = await bus.runs.watch(
            subjects.run_key(run_id), inactive_threshold=followers.INACTIVE_SECONDS
        )
        try:
            # The current value first, read directly: the watch's own marker
            # for "initial values done" can come before them.
            current = await RunStore(bus.runs).get(run_id)
            if current is None:
                fresh = await JobRun.objects.aget(id=run_id)
                if is_terminal(fresh.state):
                    yield sse_frame("snapshot", _jsonable(run_from_row(fresh)), fresh.version)
                    return
            elif current.rev > last:
                last = current.rev
                yield sse_frame("snapshot", _jsonable(run_from_snapshot(current.snap, row)), last)
                if current.snap.terminal:
                    return
            elif current.snap.terminal:
                return  # the client has the terminal snapshot already
            seen = current is not None
            while True:
                try:
                    entry = await watcher.updates(timeout=every)
                    followers.raise_if_cancelled()
                except NatsTimeout:
                    if not seen:
                        # No snapshot yet (held by the queue policy): a cancel
                        # of such a run ends it in SQL only.
                        fresh = await JobRun.objects.aget(id=run_id)
                        if is_terminal(fresh.state):
                            yield sse_frame("snapshot", _jsonable(run_from_row(fresh)), last)
                            return
                    yield sse_frame("heartbeat", {"at": time.time()}, last)
                    continue
                if entry is None or entry.revision <= last:
                    continue
                if entry.operation in ("DEL", "PURGE") or entry.value is None:
                    fresh = await JobRun.objects.aget(id=run_id)
                    yield sse_frame("snapshot", _jsonable(run_from_row(fresh)), entry.revision)
                    return
                snap = decode(entry.value)
                seen, last = True, entry.revision
                yield sse_frame("snapshot", _jsonable(run_from_snapshot(snap, row)), last)
                if snap.terminal:
                    return
        finally:
            await followers.drop_watcher(bus.js, watcher)

    return _stream(request, frames())


def _jsonable(out: dict[str, Any]) -> dict[str, Any]:
    """Datetimes in the one format every JSON endpoint sends (Django's encoder:
    UTC with ``Z``, milliseconds), so a snapshot reads like ``GET /runs``."""
    from django.core.serializers.json import DjangoJSONEncoder

    encode = DjangoJSONEncoder().default
    return {k: encode(v) if isinstance(v, datetime) else v for k, v in out.items()}


class LogsOut(Schema):
    run_id: str
    attempt: int
    #: Where the output came from: live (the run is going), database, archive,
    #: or none (nothing was captured).
    source: str
    stdout: str
    stderr: str


async def _output(bus, row: JobRun, attempt: int | None = None) -> dict[str, Any]:
    current = await RunStore(bus.runs).get(row.id)
    terminal = current.snap.terminal if current else is_terminal(row.state)
    if (
        current is not None
        and terminal
        and not row.log_ref
        and attempt in (None, current.snap.attempt)
    ):
        # Finished, maybe not projected yet: the snapshot has the same tails.
        snap = current.snap
        if snap.stdout or snap.stderr:
            return {
                "run_id": row.id,
                "attempt": snap.attempt,
                "source": "database",
                "stdout": snap.stdout,
                "stderr": snap.stderr,
            }
    out = await read_logs(bus.js, row, attempt=attempt, terminal=terminal)
    return {
        "run_id": out.run_id,
        "attempt": out.attempt,
        "source": out.source,
        "stdout": out.stdout,
        "stderr": out.stderr,
    }


@router.get("/runs/{run_id}/logs", response=LogsOut)
async def run_logs(request: HttpRequest, run_id: str, attempt: int | None = None):
    """A run's stdout and stderr from wherever they are: while it runs, what it
    wrote so far; then the table (for the retention period); then the archive."""
    from rota.api.app import get_bus

    return await _output(await get_bus(), await _row(run_id), attempt)


@router.get("/runs/{run_id}/logs/tail", response={200: None, **_STREAM_ERRORS})
async def tail_logs(request: HttpRequest, run_id: str, params: Query[StreamParams]):
    """Server-Sent Events: ``event: log`` frames ``{"attempt", "stream",
    "data"}`` as the run writes output, ``event: heartbeat`` in between, and
    ``event: end`` once the run has ended. A run that ended already sends its
    recorded output as one ``log`` frame per stream, then ``end``."""
    from rota.api.app import get_bus

    row = await _row(run_id)
    after = _last_event_id(request)
    every = _heartbeat(params)
    bus = await get_bus()
    store = RunStore(bus.runs)

    async def finished() -> bool:
        current = await store.get(run_id)
        if current is not None:
            return current.snap.terminal
        return is_terminal((await JobRun.objects.aget(id=run_id)).state)

    async def frames() -> AsyncIterator[bytes]:
        if await finished() and not after:
            out = await _output(bus, row)
            for stream in ("stdout", "stderr"):
                if out[stream]:
                    yield sse_frame(
                        "log", {"attempt": out["attempt"], "stream": stream, "data": out[stream]}
                    )
            yield sse_frame("end", {"source": out["source"]})
            return
        last = after
        async for chunk in follow_chunks(bus.js, run_id, after_seq=after, idle=every):
            if chunk is None:
                if await finished():
                    yield sse_frame("end", {"source": "live"}, last)
                    return
                yield sse_frame("heartbeat", {"at": time.time()}, last)
                continue
            last = chunk.seq
            if chunk.eof:
                # This attempt ended. Its outcome is written just after the end
                # mark; a later attempt may follow if the run goes on.
                for _ in range(20):
                    if await finished():
                        yield sse_frame("end", {"source": "live"}, last)
                        return
                    await asyncio.sleep(0.1)
                continue
            yield sse_frame(
                "log", {"attempt": chunk.attempt, "stream": chunk.stream, "data": chunk.data}, last
            )

    return _stream(request, frames())
