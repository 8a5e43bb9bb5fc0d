"""Run output: the live stream while a run goes, the table afterwards, the
object store after the retention period.

Three places hold a run's stdout/stderr, each for one period of its life:

- **live** — while the run goes, the worker publishes what the process writes on
  ``rota.logs.<run_id>`` (stream ``ROTA_LOGS``, kept for a day), in chunks
  coalesced over :data:`FLUSH_SECONDS`, with plain core publishes (no ack per
  chunk). The chunks of an attempt end with an ``eof`` record. A live tail
  follows that subject; a client that reconnects resumes after the last stream
  sequence it saw.
- **database** — when the run ends, its snapshot carries the tail of each stream
  and the projector writes it to ``RunLog`` (DESIGN §4).
- **archive** — after ``log_retention_days`` (SchedulerSettings) the leader's
  :class:`LogArchiver` copies a run's RunLog rows to the ``rota_logs`` object
  store as ``<run_id>/<attempt>/<stream>``, sets ``JobRun.log_ref`` and only
  then deletes the rows: a crash in between leaves both copies, never none.

:func:`read_logs` answers from wherever the output is.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError as JsNotFound
from nats.js.errors import ObjectNotFoundError

from rota.bus import followers, subjects
from rota.domain.snapshot import tail

log = logging.getLogger(__name__)

#: How long output is coalesced before it is published.
FLUSH_SECONDS = 0.1
#: Most characters in one published chunk: even as JSON escapes (6 bytes a
#: character at worst) it stays well under NATS' default max payload (1 MiB).
CHUNK_CHARS = 64 * 1024
#: How much of a subscriber's backlog nats-py may buffer for a slow reader.
FOLLOW_PENDING_BYTES = 8 * 1024 * 1024
STREAMS = ("stdout", "stderr")


class LiveOutput:
    """A run attempt's output on its way to ``rota.logs.<run_id>``.

    ``write`` is called from the event loop by an executor as its process
    writes; it only buffers, and a flush scheduled :data:`FLUSH_SECONDS` later
    publishes what gathered. ``close`` publishes the rest and the ``eof`` record.
    """

    def __init__(self, nc: Client, run_id: str, attempt: int) -> None:
        self.nc = nc
        self.subject = subjects.log_subject(run_id)
        self.attempt = attempt
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in STREAMS}
        self._pending: dict[str, list[str]] = {s: [] for s in STREAMS}
        self._size = 0
        self._flush: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.published = 0

    def write(self, stream: str, data: bytes) -> None:
        text = self._decoders[stream].decode(data)
        if not text:
            return
        self._pending[stream].append(text)
        self._size += len(text)
        if self._size >= CHUNK_CHARS:
            self.flush()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        for stream, parts in self._pending.items():
            if parts:
                text = "".join(parts)
                parts.clear()
                for i in range(0, len(text), CHUNK_CHARS):
                    self._send({"a": self.attempt, "s": stream, "d": text[i : i + CHUNK_CHARS]})
        self._size = 0

    def _send(self, record: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(
            self.nc.publish(self.subject, orjson.dumps(record))
        )
        self._sending.add(task)
        task.add_done_callback(self._sent)
        self.published += 1

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The run goes on, and its output still reaches SQL when it ends.
            log.warning("live output of %s: %s", self.subject, task.exception())

    async def close(self) -> None:
        """Publish what is left and, if anything was published, the end mark."""
        for stream, decoder in self._decoders.items():
            if rest := decoder.decode(b"", final=True):
                self._pending[stream].append(rest)
        self.flush()
        if self.published:
            self._send({"a": self.attempt, "eof": True})
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


#: The live output of the run an executor is running, set by the worker around
#: ``Executor.run``. Executors that stream (command, django, python) write to it.
live_output: ContextVar[LiveOutput | None] = ContextVar("rota_live_output", default=None)


@dataclass(slots=True)
class LogChunk:
    seq: int
    attempt: int
    stream: str = ""
    data: str = ""
    eof: bool = False


async def follow_chunks(
    js: JetStreamContext, run_id: str, *, after_seq: int = 0, idle: float = 1.0
) -> AsyncIterator[LogChunk | None]:
    """The chunks of ``run_id`` in the live stream after ``after_seq``, as they
    come; ``None`` whenever ``idle`` seconds pass without one (the caller decides
    whether to go on)."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
        opt_start_seq=after_seq + 1 if after_seq else None,
        filter_subject=subjects.log_subject(run_id),
        inactive_threshold=followers.INACTIVE_SECONDS,
    )
    sub = await js.subscribe(
        subjects.log_subject(run_id),
        stream=subjects.LOGS_STREAM,
        ordered_consumer=True,
        config=config,
        pending_bytes_limit=FOLLOW_PENDING_BYTES,
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle)
                followers.raise_if_cancelled()
            except TimeoutError:
                yield None
                continue
            except Exception as exc:  # nats' own TimeoutError
                if type(exc).__name__ == "TimeoutError":
                    yield None
                    continue
                raise
            rec = orjson.loads(msg.data)
            yield LogChunk(
                seq=msg.metadata.sequence.stream,
                attempt=int(rec.get("a", 0)),
                stream=rec.get("s", ""),
                data=rec.get("d", ""),
                eof=bool(rec.get("eof")),
            )
    finally:
        await followers.drop(js, sub)


async def live_tails(
    js: JetStreamContext, run_id: str, attempt: int | None = None
) -> tuple[int, dict[str, str]] | None:
    """The live output of ``run_id`` so far: (attempt, {stream: its last
    ``OUTPUT_TAIL_BYTES``}) of ``attempt`` or the newest one; None when the
    stream has none. Memory stays bounded whatever the run wrote."""
    try:
        last = await js.get_last_msg(subjects.LOGS_STREAM, subjects.log_subject(run_id))
    except JsNotFound:
        return None
    texts: dict[tuple[int, str], str] = {}
    async for chunk in follow_chunks(js, run_id, idle=1.0):
        if chunk is None:
            break
        if not chunk.eof:
            key = (chunk.attempt, chunk.stream)
            texts[key] = tail(texts.get(key, "") + chunk.data)
        if chunk.seq >= (last.seq or 0):
            break
    attempts = {a for a, _ in texts}
    if not attempts:
        return None
    chosen = attempt if attempt is not None else max(attempts)
    return chosen, {stream: text for (a, stream), text in texts.items() if a == chosen}


@dataclass
class RunOutput:
    run_id: str
    attempt: int
    #: live | database | archive | none
    source: str
    stdout: str = ""
    stderr: str = ""
    streams: dict[str, str] = field(default_factory=dict)


def archive_name(run_id: str, attempt: int, stream: str) -> str:
    return f"{run_id}/{attempt}/{stream}"


def _rows_of(run_id: str) -> list[tuple[int, str, str]]:
    from rota.models import RunLog

    return list(
        RunLog.objects.filter(run_id=run_id)
        .order_by("attempt", "stream", "seq")
        .values_list("attempt", "stream", "data")
    )


def newest_attempt(rows: list[tuple[int, str, str]], attempt: int | None) -> tuple[int, dict]:
    """Join the chunks of one attempt (the newest, or ``attempt``) per stream."""
    if not rows:
        return attempt or 0, {}
    chosen = attempt if attempt is not None else max(a for a, _, _ in rows)
    out: dict[str, str] = {}
    for a, stream, data in rows:
        if a == chosen:
            out[stream] = out.get(stream, "") + data
    return chosen, out


async def read_logs(
    js: JetStreamContext, run: Any, *, attempt: int | None = None, terminal: bool
) -> RunOutput:
    """A run's output from wherever it is now: the archive (``log_ref`` set),
    the table, or — while the run goes — the live stream."""
    from rota.runs.sqlwriter import sql_writer

    if run.log_ref:
        store = await js.object_store(subjects.LOGS_STORE)
        chosen = attempt if attempt is not None else run.attempt
        texts: dict[str, str] = {}
        for stream in STREAMS:
            with contextlib.suppress(ObjectNotFoundError, JsNotFound):
                obj = await store.get(archive_name(run.id, chosen, stream))
                texts[stream] = (obj.data or b"").decode("utf-8", "replace")
        return _output(run.id, chosen, "archive", texts)
    rows = await sql_writer().call(_rows_of, run.id)
    if rows:
        chosen, texts = newest_attempt(rows, attempt)
        return _output(run.id, chosen, "database", texts)
    if not terminal:
        live = await live_tails(js, run.id, attempt)
        if live is not None:
            return _output(run.id, live[0], "live", live[1])
        return _output(run.id, attempt or run.attempt, "none", {})
    return _output(run.id, attempt or run.attempt, "none", {})


def _output(run_id: str, attempt: int, source: str, texts: dict[str, str]) -> RunOutput:
    return RunOutput(
        run_id,
        attempt,
        source,
        stdout=texts.get("stdout", ""),
        stderr=texts.get("stderr", ""),
    )


# -- retention -----------------------------------------------------------------------


def _expired_runs(cutoff: datetime, limit: int) -> list[str]:
    from rota.models import RunLog

    return list(
        RunLog.objects.filter(created_at__lt=cutoff)
        .values_list("run_id", flat=True)
        .order_by("run_id")
        .distinct()[:limit]
    )


def _mark_archived(run_ids: list[str]) -> int:
    from django.db import transaction

    from rota.models import JobRun, RunLog

    with transaction.atomic():
        for run_id in run_ids:
            JobRun.objects.filter(id=run_id).update(log_ref=f"{subjects.LOGS_STORE}/{run_id}")
        deleted, _ = RunLog.objects.filter(run_id__in=run_ids).delete()
    return deleted


class LogArchiver:
    """Leader duty: moves output older than the retention period from the
    table to the object store, a batch of runs per step."""

    def __init__(self, js: JetStreamContext, retention_days: Any, *, batch: int = 100) -> None:
        self.js = js
        self.retention_days = retention_days  # a callable: the live setting
        self.batch = batch

    async def step(self, now: datetime | None = None) -> bool:
        from rota.runs.sqlwriter import sql_writer

        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=self.retention_days())
        run_ids = await sql_writer().call(_expired_runs, cutoff, self.batch)
        if not run_ids:
            return False
        store = await self.js.object_store(subjects.LOGS_STORE)
        for run_id in run_ids:
            rows = await sql_writer().call(_rows_of, run_id)
            texts: dict[tuple[int, str], list[str]] = {}
            for a, stream, data in rows:
                texts.setdefault((a, stream), []).append(data)
            for (a, stream), parts in texts.items():
                await store.put(archive_name(run_id, a, stream), "".join(parts).encode())
        await sql_writer().call(_mark_archived, run_ids)
        log.info("archived the output of %d runs to %s", len(run_ids), subjects.LOGS_STORE)
        return True

    async def run(self, stop: asyncio.Event, interval: float = 60.0) -> None:
        from rota.steps import run_steps

        await run_steps("log archiver", self.step, stop, idle_interval=interval)
