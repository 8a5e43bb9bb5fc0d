"""The ``pod`` executor: a run is one request to a pod task.

``snap.target`` is the topic (by convention a task subscribes to a topic named
after itself, so the task name works as the target). ``snap.params`` are sent as
one line of JSON; the first ``<target>.result`` any instance publishes in answer
ends the run: SUCCEEDED with that text as ``result``. No answer within the run's
``timeout`` is TIMED_OUT (no timeout: it waits until cancelled); no task on any
host subscribing to the topic is FAILED at once. Implements the
:class:`~rota.worker.executors.base.Executor` contract: it returns (never raises)
for anything the job does wrong, and a cancel returns CANCELLED promptly. The
pod keeps the message if it is already working on it: a pod cannot be
interrupted, only its result is no longer awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

import orjson

from rota.bus.connection import Bus
from rota.domain.snapshot import RunSnapshot
from rota.domain.states import RunState
from rota.pods.client import publish
from rota.pods.errors import InvalidTopic, NoSubscribers, ResultTimeout
from rota.worker.executors.base import Outcome


class PodExecutor:
    """Runs ``pod`` jobs over the worker's NATS connection."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def run(self, snap: RunSnapshot, cancel: asyncio.Event) -> Outcome:
        if cancel.is_set():
            return Outcome(RunState.CANCELLED, error_summary="cancelled before start")
        try:
            data = orjson.dumps(snap.params).decode()
        except TypeError as exc:
            return Outcome(RunState.FAILED, error_summary=f"params are not JSON: {exc}")
        wait = snap.timeout if snap.timeout else math.inf
        request = asyncio.create_task(publish(self.bus, snap.target, data, wait_result=wait))
        cancelled = asyncio.create_task(cancel.wait())
        try:
            await asyncio.wait({request, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not request.done():
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await request
        if request.cancelled():
            return Outcome(RunState.CANCELLED, error_summary="cancelled")
        try:
            result = request.result()
        except ResultTimeout:
            return Outcome(
                RunState.TIMED_OUT,
                error_summary=f"no {snap.target}.result within {snap.timeout:g}s",
            )
        except (NoSubscribers, InvalidTopic) as exc:
            return Outcome(RunState.FAILED, error_summary=exc.message)
        except Exception as exc:  # the connection: closed, draining, payload too big
            return Outcome(
                RunState.FAILED, error_summary=f"cannot publish to {snap.target!r}: {exc!r}"
            )
        return Outcome(RunState.SUCCEEDED, result=result)

    async def close(self) -> None:
        """Nothing pooled: the bus belongs to the worker."""
