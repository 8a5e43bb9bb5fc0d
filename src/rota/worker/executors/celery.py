"""The ``celery`` executor: a run sends a Celery task and follows it to its end
without holding a worker slot while it waits.

A run sends ``target`` (the task's name) with its params as kwargs and the
run id as the task id, through the app of ``ROTA_CELERY_APP`` (or the broker
URL settings), with the job's options (:mod:`rota.domain.celery`). From then on
the run is *followed*: the worker gives its slot back at once
(:attr:`CeleryExecutor.follows`), and one :class:`TaskFollower` per worker
process reads the states of every followed task from the result backend in one
batch (a Redis ``MGET``) every ``celery_poll_seconds``. Each run's coroutine
only waits for its task's changes, so a thousand waiting runs cost a thousand
small coroutines and one poller, not a thousand slots.

States: sent → Celery PENDING/RECEIVED, the run ASSIGNED; STARTED/RETRY →
RUNNING (each change recorded on the run, a retry with its exception);
SUCCESS → SUCCEEDED with the result; FAILURE → FAILED with the exception and
its traceback (as stderr); REVOKED → CANCELLED. Cancel revokes with
``terminate=True``; the timeout and the never-reports rule
(:func:`rota.domain.celery.give_up`) revoke too.

A run handed back or taken from this worker is *detached*, not revoked: the
next attempt finds ``celery_task_id`` in the snapshot and follows the same task
instead of sending it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from rota.domain.celery import FINAL, STARTED, give_up, parse_options
from rota.domain.snapshot import RunSnapshot
from rota.domain.states import RunState
from rota.errors import InvalidInput
from rota.worker.executors.base import Outcome

log = logging.getLogger(__name__)

#: After a revoke, how long to wait for Celery to confirm (REVOKED or an end).
REVOKE_GRACE_SECONDS = 10.0
#: Keys read per Redis MGET.
_BATCH = 500

Report = Callable[..., Awaitable[None]]


def _pending(task_id: str) -> dict[str, Any]:
    return {"status": "PENDING", "result": None, "traceback": None, "task_id": task_id}


class TaskFollower:
    """Reads the result backend for every followed task, in one loop per
    process. :meth:`follow` returns a queue that gets the task's meta (the
    result backend's dict) each time its state changes."""

    def __init__(self, app: Any, interval: float) -> None:
        self.app = app
        self.interval = interval
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._last: dict[str, str] = {}
        self._task: asyncio.Task | None = None
        self.polls = 0

    def follow(self, task_id: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues[task_id] = queue
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())
        return queue

    def forget(self, task_id: str) -> None:
        self._queues.pop(task_id, None)
        self._last.pop(task_id, None)

    def __len__(self) -> int:
        return len(self._queues)

    async def _loop(self) -> None:
        while self._queues:
            ids = list(self._queues)
            try:
                metas = await asyncio.to_thread(self.read, ids)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reading Celery task states failed", exc_info=True)
                metas = []
            self.polls += 1
            for task_id, meta in zip(ids, metas, strict=False):
                state = str(meta.get("status") or "PENDING")
                queue = self._queues.get(task_id)
                if queue is not None and self._last.get(task_id) != state:
                    self._last[task_id] = state
                    queue.put_nowait(meta)
            await asyncio.sleep(self.interval)

    def read(self, ids: list[str]) -> list[dict[str, Any]]:
        """The metas of ``ids``: one MGET per batch on a key-value backend
        (Redis), else one read per task."""
        backend = self.app.backend
        client = getattr(backend, "client", None)
        if client is not None and hasattr(client, "mget") and hasattr(backend, "get_key_for_task"):
            out: list[dict[str, Any]] = []
            for i in range(0, len(ids), _BATCH):
                chunk = ids[i : i + _BATCH]
                values = client.mget([backend.get_key_for_task(t) for t in chunk])
                out.extend(
                    backend.decode_result(v) if v else _pending(t)
                    for t, v in zip(chunk, values, strict=True)
                )
            return out
        return [backend.get_task_meta(t) for t in ids]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def _jsonable(value: Any) -> Any:
    try:
        orjson.dumps(value)
        return value
    except TypeError:
        return repr(value)


def final_outcome(meta: dict[str, Any]) -> Outcome:
    """The outcome of a task Celery says has ended (SUCCESS, FAILURE, REVOKED)."""
    state = meta["status"]
    result = meta.get("result")
    if state == "SUCCESS":
        return Outcome(RunState.SUCCEEDED, result=_jsonable(result))
    if state == "REVOKED":
        return Outcome(RunState.CANCELLED, error_summary="the Celery task was revoked")
    summary = (
        f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else str(result)
    )
    return Outcome(
        RunState(FINAL[state]), error_summary=summary, stderr=meta.get("traceback") or ""
    )


class CeleryExecutor:
    """See the module docstring. ``follows``: the worker frees the run's slot
    once the task is sent (the executor reports so through ``bind_follow``)."""

    follows = True

    def __init__(
        self,
        app: Any,
        *,
        poll_seconds: float = 0.25,
        start_timeout: float = 3600.0,
        max_runtime: float = 86400.0,
        revoke_grace: float = REVOKE_GRACE_SECONDS,
    ) -> None:
        self.app = app
        self.follower = TaskFollower(app, poll_seconds)
        self.start_timeout = start_timeout
        self.max_runtime = max_runtime
        self.revoke_grace = revoke_grace
        self._report: Report | None = None
        self._detached: set[str] = set()

    def bind_follow(self, report: Report) -> None:
        """The worker's callback for what Celery says of a run:
        ``report(run_id, celery_state=..., task_id=..., sent_at=..., detail=...,
        started=...)``. The first call also frees the run's slot."""
        self._report = report

    def detach(self, run_id: str) -> None:
        """Stop following ``run_id`` without revoking its task (the run was
        handed back or taken away; another attempt follows the task)."""
        self._detached.add(run_id)

    async def _tell(self, run_id: str, **what: Any) -> None:
        if self._report is not None:
            await self._report(run_id, **what)

    async def run(self, snap: RunSnapshot, cancel: asyncio.Event) -> Outcome:
        try:
            options = parse_options(snap.args)
        except InvalidInput as exc:
            return Outcome(RunState.FAILED, error_summary=exc.message)
        task_id = snap.celery_task_id or snap.run_id
        sent_at = snap.celery_sent_at
        last = snap.celery_state or "PENDING"
        if snap.celery_task_id:
            # A later attempt: the task was sent before; follow it, never send twice.
            await self._tell(snap.run_id, celery_state=last, detail={"reattached": True})
        else:
            try:
                await asyncio.to_thread(
                    self.app.send_task,
                    snap.target,
                    kwargs=snap.params,
                    task_id=task_id,
                    **options.send_kwargs(),
                )
            except Exception as exc:
                return Outcome(
                    RunState.FAILED, error_summary=f"could not send the Celery task: {exc}"
                )
            sent_at = time.time()
            await self._tell(
                snap.run_id,
                celery_state="PENDING",
                task_id=task_id,
                sent_at=sent_at,
                detail={"task": snap.target},
            )
        sent_at = sent_at or time.time()
        start_timeout = options.start_timeout or self.start_timeout
        queue = self.follower.follow(task_id)
        retries = 0
        try:
            while True:
                if cancel.is_set():
                    if snap.run_id in self._detached:
                        return Outcome(RunState.CANCELLED, error_summary="no longer followed here")
                    return await self._revoke(
                        task_id, queue, Outcome(RunState.CANCELLED, error_summary="cancelled")
                    )
                rule = give_up(
                    now=time.time(),
                    sent_at=sent_at,
                    celery_state=last,
                    timeout=snap.timeout,
                    start_timeout=start_timeout,
                    max_runtime=self.max_runtime,
                )
                if rule is not None:
                    return await self._revoke(
                        task_id,
                        queue,
                        Outcome(RunState(rule.state), error_summary=rule.reason),
                        keep_end=False,
                    )
                meta = await self._next(queue, cancel)
                if meta is None:
                    continue
                state = str(meta["status"])
                if state in FINAL:
                    if state in ("SUCCESS", "FAILURE"):
                        await self._tell(snap.run_id, celery_state=state, started=True)
                    return final_outcome(meta)
                if state == last:
                    continue
                last = state
                detail: dict[str, Any] = {}
                if state == "RETRY":
                    retries += 1
                    detail = {"retries": retries, "exception": str(meta.get("result"))[:500]}
                await self._tell(
                    snap.run_id, celery_state=state, detail=detail, started=state in STARTED
                )
        finally:
            self.follower.forget(task_id)
            self._detached.discard(snap.run_id)

    async def _next(
        self, queue: asyncio.Queue[dict[str, Any]], cancel: asyncio.Event
    ) -> dict[str, Any] | None:
        """The next state change, or None after a second (to check the rules) or a cancel."""
        getter = asyncio.ensure_future(queue.get())
        waiter = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, waiter}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            if not getter.done():
                getter.cancel()
        return getter.result() if getter in done else None

    async def _revoke(
        self,
        task_id: str,
        queue: asyncio.Queue[dict[str, Any]],
        outcome: Outcome,
        *,
        keep_end: bool = True,
    ) -> Outcome:
        """Revoke (terminate) the task and wait a little for Celery to confirm.
        With ``keep_end``, an end Celery reports first (it finished before the
        revoke reached it) is the outcome."""
        try:
            await asyncio.to_thread(
                self.app.control.revoke, task_id, terminate=True, signal="SIGTERM"
            )
        except Exception as exc:
            log.warning("revoking Celery task %s failed: %s", task_id, exc)
            outcome.error_summary += f" (revoke failed: {exc})"
            return outcome
        deadline = time.monotonic() + self.revoke_grace
        while (left := deadline - time.monotonic()) > 0:
            try:
                meta = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                break
            state = str(meta["status"])
            if state == "REVOKED":
                return outcome
            if state in FINAL and keep_end:
                return final_outcome(meta)
        outcome.error_summary += (
            f" (Celery did not confirm the revoke within {self.revoke_grace:g}s)"
        )
        return outcome

    async def close(self) -> None:
        await self.follower.close()
