"""Write combining for the run path's SQL.

Every run creation writes two things to SQL: the row (before anything else) and
the outbox mark after dispatch. Done per request, concurrent requests each open a
transaction of their own, and on SQLite they queue on the database lock with
millisecond back-off sleeps. Here they go through one thread with one connection,
and what arrives while a transaction runs is written by the next one: a burst of
N submissions costs a few transactions, not N.

Uniqueness still decides per row: a batch that hits a unique constraint (an
Idempotency-Key used before) is retried row by row, each in its own savepoint,
and only the conflicting rows fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction

from rota.models import JobRun

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 500


class SqlWriter:
    """One per event loop: a single writer thread and two combining queues."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rota-sql")
        self._inserts: list[tuple[JobRun, asyncio.Future[None]]] = []
        self._marks: list[tuple[str, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def close(self) -> None:
        """Close this writer's database connection and stop its thread."""
        from django.db import connections

        self._executor.submit(connections.close_all).result()
        self._executor.shutdown(wait=True)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` on the writer thread (retrying once on a broken connection)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _with_reconnect, fn, *args)

    async def insert(self, row: JobRun) -> None:
        """Insert ``row``; raises IntegrityError if a unique constraint refuses it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inserts.append((row, fut))
        self._kick()
        await fut

    async def mark_dispatched(self, run_ids: list[str]) -> None:
        loop = asyncio.get_running_loop()
        futs = []
        for run_id in run_ids:
            fut: asyncio.Future[None] = loop.create_future()
            self._marks.append((run_id, fut))
            futs.append(fut)
        self._kick()
        await asyncio.gather(*futs)

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._inserts or self._marks:
            inserts, self._inserts = self._inserts[:MAX_BATCH], self._inserts[MAX_BATCH:]
            marks, self._marks = self._marks[:MAX_BATCH], self._marks[MAX_BATCH:]
            try:
                failures = await self.call(
                    _write_batch, [r for r, _ in inserts], [m for m, _ in marks]
                )
            except Exception as exc:
                for _, fut in inserts + marks:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for row, fut in inserts:
                if fut.done():
                    continue
                if row.id in failures:
                    fut.set_exception(failures[row.id])
                else:
                    fut.set_result(None)
            for _, fut in marks:
                if not fut.done():
                    fut.set_result(None)


def _with_reconnect(fn: Callable[..., T], *args: object) -> T:
    try:
        return fn(*args)
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        # A connection the server dropped (restart, idle timeout): reconnect once.
        connection.close()
        return fn(*args)


def _write_batch(rows: list[JobRun], marks: list[str]) -> dict[str, IntegrityError]:
    failures: dict[str, IntegrityError] = {}
    with transaction.atomic():
        if rows:
            try:
                with transaction.atomic():
                    JobRun.objects.bulk_create(rows)
            except IntegrityError:
                for row in rows:
                    try:
                        with transaction.atomic():
                            row.save(force_insert=True)
                    except IntegrityError as exc:
                        failures[row.id] = exc
        if marks:
            JobRun.objects.filter(id__in=marks, dispatched_at__isnull=True).update(
                dispatched_at=datetime.now(UTC)
            )
    return failures


_writers: dict[int, SqlWriter] = {}


def sql_writer() -> SqlWriter:
    """The writer of the running event loop."""
    loop_id = id(asyncio.get_running_loop())
    writer = _writers.get(loop_id)
    if writer is None:
        writer = _writers[loop_id] = SqlWriter()
    return writer


def close_all_writers() -> None:
    """Close every writer (tests, and processes that shut down their loop)."""
    while _writers:
        _, writer = _writers.popitem()
        writer.close()
