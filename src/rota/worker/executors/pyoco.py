"""The ``pyoco`` executor: run a Pyoco flow in a warm child process.

A run names its flow by ``snap.flow_name`` (or ``snap.target``, for a job of kind
``pyoco``), resolved in :mod:`rota.flows` from the configured flow modules and
the ``rota.flows`` entry points, or carries an uploaded flow.yaml
(``snap.flow_yaml``), built from registered tasks only. ``snap.params`` are the
flow's params.

Children come from the same forkserver as the ``python`` executor's and are kept
warm (``pyoco_pool_size`` idle ones): a run pays a pipe round trip, and the flow
modules are imported once per child. A child serves one run at a time, runs
Pyoco's ``Engine`` on a thread, and streams progress frames (task states and
records, fitted to the size limit of :mod:`rota.domain.taskrecords`, at most one
every ``progress_interval`` seconds and only on change) until its final frame.
The parent hands progress to the reporter the worker binds
(:meth:`PyocoExecutor.bind_progress`): the executor itself never touches NATS.

Cancel: the parent sends a cancel frame, the child calls ``Engine.cancel`` (no
new task starts; pending ones become CANCELLED), and if the flow has not ended
within ``cancel_grace`` seconds, its process group is killed. A timeout kills at
once. A killed child is replaced.

Protocol over a duplex ``Pipe``, orjson frames. Parent → child:
``{"op": "run", run_id, attempt, flow_name, flow_yaml, params, modules}`` and
``{"op": "cancel", run_id}``. Child → parent: ``{"op": "progress", tasks,
task_records, truncated}`` and a last ``{"op": "done", status, error, tasks,
task_records, truncated, stdout, stderr}``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import orjson

from rota.domain.snapshot import RunSnapshot, tail
from rota.domain.states import RunState
from rota.domain.taskrecords import TASK_RECORDS_LIMIT, first_failure, fit_records
from rota.worker.executors.base import Environment, Outcome, scrub_environ
from rota.worker.executors.command import format_summary
from rota.worker.executors.python import (
    _CONTEXT,
    _READY,
    _REAP_TIMEOUT,
    _die_with_parent,
    _exception_summary,
    _kill_group,
    _mp_executor,
    _reap,
    _wait_ready,
)

log = logging.getLogger(__name__)

#: ``report(run_id, tasks, task_records, truncated)``: what the worker does with progress.
ProgressReporter = Callable[[str, dict[str, str], dict[str, Any], bool], Awaitable[None]]

#: Seconds between two progress frames of one run, at most.
PROGRESS_INTERVAL = 0.25

_UNFINISHED = ("PENDING", "RUNNING")


# --------------------------------------------------------------------------
# Child side
# --------------------------------------------------------------------------


def _child_main(
    conn: Connection,
    sys_path: list[str],
    cwd: str,
    interval: float,
    limit: int,
    environ: dict[str, str] | None = None,
) -> None:
    os.setsid()  # own process group: one killpg ends the flow and what it started
    _die_with_parent()
    scrub_environ()
    os.environ.update(environ or {})  # the synced wheels' PATH and PYTHONPATH
    sys.path[:] = sys_path if cwd in sys_path else [*sys_path, cwd]
    conn.send_bytes(_READY)
    request: dict[str, Any] | None = None
    while True:
        if request is None:
            try:
                request = orjson.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return
        if request.get("op") == "run":  # a late cancel of a finished run is ignored
            # The next request may arrive while this run winds down.
            request = _FlowRun(conn, request, interval, limit).serve()
        else:
            request = None


class _QuietTrace:
    """Pyoco's trace hooks, silenced: task output is captured, not traced."""

    def on_flow_start(self, flow_name: str, run_id: str | None = None) -> None: ...
    def on_flow_end(self, flow_name: str) -> None: ...
    def on_node_start(self, node_name: str) -> None: ...
    def on_node_end(self, node_name: str, duration_ms: float) -> None: ...
    def on_node_error(self, node_name: str, error: Exception) -> None: ...
    def on_node_transition(self, source: str, target: str) -> None: ...


class _FlowRun:
    """One flow run inside a child: the engine on a thread, progress on this one."""

    def __init__(self, conn: Connection, request: dict[str, Any], interval: float, limit: int):
        self.conn = conn
        self.request = request
        self.interval = interval
        self.limit = limit
        self.send_lock = threading.Lock()
        self.finished = False
        self.order: list[str] = []

    def send(self, frame: dict[str, Any], *, final: bool = False) -> None:
        try:
            data = orjson.dumps(frame, default=repr)
        except TypeError:  # e.g. an int past 64 bits in a record: fall back to repr
            data = orjson.dumps(orjson.loads(_json_safe(frame)))
        with self.send_lock:
            if self.finished:
                return
            self.finished = final
            self.conn.send_bytes(data)

    def serve(self) -> dict[str, Any] | None:
        """Run the flow; return a request that arrived for the next run, if any."""
        from pyoco import Engine
        from pyoco.core.models import RunContext, RunStatus

        from rota.flows import FlowError, flow_from_yaml, registry

        req = self.request
        os.environ["ROTA_RUN_ID"] = req["run_id"]
        os.environ["ROTA_ATTEMPT"] = str(req["attempt"])
        try:
            reg = registry(req["modules"])
            if req["flow_yaml"]:
                flow = flow_from_yaml(req["flow_yaml"], reg, flow_name=req["flow_name"]).flow
            else:
                flow = reg.flow(req["flow_name"])
        except FlowError as exc:
            self.send(_done("FAILED", str(exc)), final=True)
            return None
        self.order = _task_order(flow)
        engine = Engine(trace_backend=_QuietTrace())  # type: ignore[arg-type]
        run_ctx = RunContext(run_id=req["run_id"])
        out, err = io.StringIO(), io.StringIO()

        def work() -> None:
            error = ""
            try:
                engine.run(flow, req["params"], run_context=run_ctx)
            except BaseException as exc:  # the failing task's exception, re-raised by the engine
                error = _exception_summary(exc)
                if run_ctx.status == RunStatus.RUNNING:
                    run_ctx.status = RunStatus.FAILED
            tasks, records, truncated = self.progress(run_ctx)
            frame = _done(run_ctx.status.value, error)
            frame.update(
                tasks=tasks,
                task_records=records,
                truncated=truncated,
                stdout=tail(out.getvalue()),
                stderr=tail(err.getvalue()),
            )
            self.send(frame, final=True)

        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            thread = threading.Thread(target=work, name="rota-pyoco-engine", daemon=True)
            thread.start()
            last: Any = None
            while thread.is_alive():
                if self.conn.poll(self.interval):
                    try:
                        msg = orjson.loads(self.conn.recv_bytes())
                    except (EOFError, OSError):
                        os._exit(1)  # the worker is gone: so is this run
                    if msg.get("op") == "run":
                        thread.join()
                        return msg
                    if msg.get("run_id") == req["run_id"]:  # cancel
                        engine.cancel(req["run_id"])
                    continue
                try:
                    current = self.progress(run_ctx)
                except RuntimeError:  # the engine changed a dict while we read it
                    continue
                if current != last:
                    last = current
                    tasks, records, truncated = current
                    self.send(
                        {
                            "op": "progress",
                            "tasks": tasks,
                            "task_records": records,
                            "truncated": truncated,
                        }
                    )
            thread.join()
        return None

    def progress(self, run_ctx: Any) -> tuple[dict[str, str], dict[str, Any], bool]:
        states = {name: getattr(s, "value", str(s)) for name, s in list(run_ctx.tasks.items())}
        raw = run_ctx.serialize_task_records()
        names = [n for n in self.order if n in states or n in raw]
        names += sorted((set(states) | set(raw)) - set(names))
        tasks = {n: states.get(n) or raw[n]["state"] for n in names}
        records, truncated = fit_records({n: raw[n] for n in names if n in raw}, self.limit)
        return tasks, records, truncated


def _done(status: str, error: str) -> dict[str, Any]:
    return {
        "op": "done",
        "status": status,
        "error": error,
        "tasks": {},
        "task_records": {},
        "truncated": False,
        "stdout": "",
        "stderr": "",
    }


def _task_order(flow: Any) -> list[str]:
    """Task names by depth in the graph, then name: a stable order to show."""
    depth: dict[str, int] = {}

    def level(task: Any, seen: frozenset[str] = frozenset()) -> int:
        if task.name in depth:
            return depth[task.name]
        if task.name in seen:  # a cycle; the engine reports it
            return 0
        d = 1 + max((level(t, seen | {task.name}) for t in task.dependencies), default=-1)
        depth[task.name] = d
        return d

    for t in flow.tasks:
        level(t)
    return sorted(depth, key=lambda n: (depth[n], n))


def _json_safe(value: Any) -> bytes:
    import json

    return json.dumps(value, default=repr).encode()


# --------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------


class _FlowChild:
    """A child process, the parent's end of its pipe, and its frames as they arrive."""

    def __init__(self, proc: BaseProcess, conn: Connection, loop: asyncio.AbstractEventLoop):
        self.proc = proc
        self.pid: int = proc.pid  # type: ignore[assignment]
        self.conn = conn
        self.loop = loop
        self.alive = True
        #: The generation of the synced wheels the child started with.
        self.generation = 0
        #: Decoded frames; None once the pipe closed (the child died).
        self.frames: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        loop.add_reader(conn.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.conn.recv_bytes()
        except (EOFError, OSError):
            self._lost()
            return
        self.frames.put_nowait(orjson.loads(data))

    def _lost(self) -> None:
        if self.alive:
            self.alive = False
            self.loop.remove_reader(self.conn.fileno())
        self.frames.put_nowait(None)

    def send(self, frame: dict[str, Any]) -> bool:
        try:
            self.conn.send_bytes(orjson.dumps(frame))
            return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.alive:
            self.alive = False
            self.loop.remove_reader(self.conn.fileno())
        _kill_group(self.pid)


class _Reporter:
    """Hands a run's progress to the worker, newest first: while one write is in
    flight, newer progress replaces older progress waiting behind it."""

    def __init__(self, report: ProgressReporter | None, run_id: str) -> None:
        self.report = report
        self.run_id = run_id
        self.latest: tuple[dict[str, str], dict[str, Any], bool] | None = None
        self.task: asyncio.Task[None] | None = None

    def offer(self, tasks: dict[str, str], records: dict[str, Any], truncated: bool) -> None:
        if self.report is None:
            return
        self.latest = (tasks, records, truncated)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        assert self.report is not None
        while self.latest is not None:
            tasks, records, truncated = self.latest
            self.latest = None
            try:
                await self.report(self.run_id, tasks, records, truncated)
            except Exception:
                log.warning("progress of run %s not recorded", self.run_id, exc_info=True)

    async def close(self) -> None:
        """Wait until the newest progress is written."""
        if self.task is not None:
            await self.task

    def cancel(self) -> None:
        """Drop progress not yet written and stop a write in flight: the run is
        being abandoned, and nothing may land on its snapshot after it."""
        self.latest = None
        if self.task is not None:
            self.task.cancel()


class PyocoExecutor:
    """Runs Pyoco flows in warm child processes.

    :param modules: flow modules (``RotaSettings.flow_modules``).
    :param size: idle children kept warm; more start when more runs overlap.
    :param cancel_grace: seconds a cancelled flow gets before its process is killed.
    """

    def __init__(
        self,
        modules: Sequence[str] = (),
        *,
        size: int = 2,
        cancel_grace: float = 5.0,
        progress_interval: float = PROGRESS_INTERVAL,
        records_limit: int = TASK_RECORDS_LIMIT,
    ) -> None:
        self.modules = list(modules)
        self.size = max(0, size)
        self.cancel_grace = cancel_grace
        self.progress_interval = progress_interval
        self.records_limit = records_limit
        self.report: ProgressReporter | None = None
        self._idle: collections.deque[_FlowChild] = collections.deque()
        self._children: set[_FlowChild] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._atexit_registered = False
        self.environment = Environment()

    def use_environment(self, env: Environment) -> None:
        """Flows from now on see ``env``'s code: idle children are retired at
        once (new ones start on demand), busy ones when their flow ends."""
        self.environment = env
        idle, self._idle = list(self._idle), collections.deque()
        for child in idle:
            self._track(self._retire(child))

    def bind_progress(self, report: ProgressReporter) -> None:
        """Where task progress goes (the worker writes it to the run's snapshot)."""
        self.report = report

    async def start(self) -> None:
        """Start the warm children now rather than on the first run."""
        children = await asyncio.gather(
            *(self._spawn() for _ in range(self.size - len(self._idle)))
        )
        self._idle.extend(children)

    async def run(self, snap: RunSnapshot, cancel: asyncio.Event) -> Outcome:
        if self._closed:
            raise RuntimeError("PyocoExecutor is closed")
        if cancel.is_set():
            return Outcome(RunState.CANCELLED, error_summary="cancelled before start")
        flow_name = snap.flow_name or snap.target
        child = await self._acquire()
        reporter = _Reporter(self.report, snap.run_id)
        ok = child.send(
            {
                "op": "run",
                "run_id": snap.run_id,
                "attempt": snap.attempt,
                "flow_name": flow_name,
                "flow_yaml": snap.flow_yaml,
                "params": snap.params,
                "modules": self.modules,
            }
        )
        if not ok:
            child.kill()
            self._track(self._retire(child))
            return Outcome(RunState.FAILED, error_summary="pyoco executor process died")
        try:
            outcome, tasks, records, truncated = await self._follow(child, snap, cancel, reporter)
        except BaseException:
            reporter.cancel()
            child.kill()
            self._track(self._retire(child))
            raise
        if child.alive:
            self._release(child)
        else:
            self._track(self._replace(child))
        # The final states land on the snapshot before the outcome does.
        reporter.offer(tasks, records, truncated)
        await reporter.close()
        return outcome

    async def _follow(
        self, child: _FlowChild, snap: RunSnapshot, cancel: asyncio.Event, reporter: _Reporter
    ) -> tuple[Outcome, dict[str, str], dict[str, Any], bool]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + snap.timeout if snap.timeout is not None else None
        kill_at: float | None = None
        tasks: dict[str, str] = {}
        records: dict[str, Any] = {}
        truncated = False
        cancelled = loop.create_task(cancel.wait())
        get: asyncio.Task[dict[str, Any] | None] | None = None
        try:
            while True:
                if get is None:
                    get = loop.create_task(child.frames.get())
                waits: set[asyncio.Future[Any]] = {get}
                if kill_at is None:
                    waits.add(cancelled)
                limits = [t for t in (deadline, kill_at) if t is not None]
                timeout = max(0.0, min(limits) - loop.time()) if limits else None
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if get in done:
                    frame, get = get.result(), None
                    if frame is None:  # died
                        state = RunState.CANCELLED if kill_at is not None else RunState.FAILED
                        summary = "cancelled" if kill_at is not None else "pyoco process died"
                        return self._ended(state, summary, tasks, records, truncated)
                    tasks, records, truncated = (
                        frame["tasks"] or tasks,
                        frame["task_records"] or records,
                        frame["truncated"] or truncated,
                    )
                    if frame["op"] == "progress":
                        reporter.offer(tasks, records, truncated)
                        continue
                    return _outcome(frame), tasks, records, truncated
                if cancelled in done and kill_at is None:
                    child.send({"op": "cancel", "run_id": snap.run_id})
                    kill_at = loop.time() + self.cancel_grace
                    continue
                now = loop.time()
                if kill_at is not None and now >= kill_at:
                    child.kill()
                    return self._ended(
                        RunState.CANCELLED,
                        f"cancelled; the flow did not stop within {self.cancel_grace:g}s and was killed",
                        tasks,
                        records,
                        truncated,
                    )
                if deadline is not None and now >= deadline:
                    child.kill()
                    return self._ended(
                        RunState.TIMED_OUT,
                        f"timed out after {snap.timeout:g}s",
                        tasks,
                        records,
                        truncated,
                    )
        finally:
            cancelled.cancel()
            if get is not None:
                get.cancel()

    @staticmethod
    def _ended(
        state: RunState,
        summary: str,
        tasks: dict[str, str],
        records: dict[str, Any],
        truncated: bool,
    ) -> tuple[Outcome, dict[str, str], dict[str, Any], bool]:
        """The outcome of a flow whose process was killed: what had not
        finished is CANCELLED."""
        now = time.time()
        tasks = {n: "CANCELLED" if s in _UNFINISHED else s for n, s in tasks.items()}
        records = {
            n: {**r, "state": "CANCELLED", "ended_at": r.get("ended_at") or now}
            if r.get("state") in _UNFINISHED
            else r
            for n, r in records.items()
        }
        return Outcome(state, error_summary=summary), tasks, records, truncated

    async def close(self) -> None:
        """Stop all children. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self._retire(c) for c in list(self._children)))
        self._idle.clear()
        if self._atexit_registered:
            atexit.unregister(self._kill_all)

    # -- pool ---------------------------------------------------------------

    async def _acquire(self) -> _FlowChild:
        while self._idle:
            child = self._idle.popleft()
            # Anything readable on an idle child is the EOF of its death.
            if child.alive and not child.conn.poll():
                return child
            self._track(self._retire(child))
        return await self._spawn()

    def _release(self, child: _FlowChild) -> None:
        stale = child.generation != self.environment.generation
        if self._closed or stale or len(self._idle) >= self.size:
            self._track(self._retire(child))
        else:
            self._idle.append(child)

    async def _replace(self, old: _FlowChild) -> None:
        await self._retire(old)
        if not self._closed and len(self._idle) < self.size:
            try:
                child = await self._spawn()
            except Exception:
                log.exception("cannot start a pyoco executor process")
                return
            self._release(child)

    async def _spawn(self) -> _FlowChild:
        loop = asyncio.get_running_loop()
        parent_conn, child_conn = _CONTEXT.Pipe(duplex=True)
        env = self.environment
        proc = _CONTEXT.Process(
            target=_child_main,
            args=(
                child_conn,
                [*env.sys_path(), *sys.path],
                os.getcwd(),
                self.progress_interval,
                self.records_limit,
                env.child_environ(),
            ),
            name="rota-pyoco-executor",
        )
        try:
            await loop.run_in_executor(_mp_executor(), proc.start)
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        if not self._atexit_registered:
            atexit.register(self._kill_all)
            self._atexit_registered = True
        try:
            await _wait_ready(loop, parent_conn)
        except BaseException:
            _kill_group(proc.pid)  # type: ignore[arg-type]
            await loop.run_in_executor(_mp_executor(), _reap, proc, _REAP_TIMEOUT)
            parent_conn.close()
            raise
        child = _FlowChild(proc, parent_conn, loop)
        child.generation = env.generation
        self._children.add(child)
        return child

    async def _retire(self, child: _FlowChild) -> None:
        if child not in self._children:
            return
        self._children.discard(child)
        child.kill()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(_mp_executor(), _reap, child.proc, _REAP_TIMEOUT)
        finally:
            child.conn.close()

    def _track(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kill_all(self) -> None:
        for child in list(self._children):
            _kill_group(child.pid)


def _outcome(frame: dict[str, Any]) -> Outcome:
    status, error = frame["status"], frame["error"]
    out, err = frame["stdout"], frame["stderr"]
    if status == "CANCELLED":
        return Outcome(RunState.CANCELLED, error_summary="cancelled", stdout=out, stderr=err)
    if status == "COMPLETED" and not error:
        return Outcome(RunState.SUCCEEDED, stdout=out, stderr=err)
    failure = first_failure(frame["task_records"])
    if failure is not None:
        name, task_error = failure
        summary = f"task {name!r} failed: {error or task_error}"
    else:
        summary = error or f"flow ended {status}"
    return Outcome(RunState.FAILED, error_summary=format_summary(summary), stdout=out, stderr=err)
