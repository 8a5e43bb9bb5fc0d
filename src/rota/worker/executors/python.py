"""The ``python`` executor: call ``package.module:function`` in a warm child process.

A run's ``target`` names a function; it is called with ``snap.params`` as keyword
arguments and its (JSON-serialisable) return value becomes ``Outcome.result``.

Runs execute in a pool of child processes started once, so a run pays a pipe
round trip, not an interpreter start. Children come from multiprocessing's
*forkserver* context: the worker is an asyncio process with threads, which must
not ``fork()`` itself, and a fork from the small forkserver is much cheaper than
a fresh interpreter when a child has to be replaced. Each child puts itself in
its own session, so killing its process group also kills whatever the user's
code started.

Protocol, over a duplex multiprocessing ``Pipe`` (length-prefixed frames):
request ``orjson [target, params, run_id, attempt, live]``; reply ``orjson``
object with ``result`` or ``error``, plus ``stdout`` and ``stderr`` (their
tails). With ``live``, output frames ``\x01`` + ``1``|``2`` + UTF-8 text may
come before the reply: what the call printed, coalesced over
:data:`LIVE_FLUSH_SECONDS` by a thread of the child, for the run's live tail. A
child serves one call at a time. The parent reads replies with ``loop.add_reader`` on the pipe, so the
hot path needs no thread hop.

Multiprocessing caveat: like any forkserver/spawn start, when the worker was
started from a script (not ``-m``), that script is imported in the children as
``__mp_main__``; it must keep its work under ``if __name__ == "__main__"``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import ctypes
import importlib
import inspect
import io
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import orjson

from rota.domain.snapshot import RunSnapshot, tail
from rota.domain.states import RunState
from rota.runs.logs import live_output
from rota.worker.executors.base import Environment, Outcome, scrub_environ
from rota.worker.executors.command import format_summary, signal_name

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("forkserver")

#: How long to wait for a killed child's exit status before giving up on it.
_REAP_TIMEOUT = 5.0

#: How long a new child may take to import rota and report ready.
_READY_TIMEOUT = 60.0

_READY = b"ready"

#: First byte of an output frame (a reply is a JSON object: ``{``).
_OUTPUT = b"\x01"
#: How long a child gathers a call's output before it sends it on.
LIVE_FLUSH_SECONDS = 0.1
#: Output gathered past this is sent at once.
_LIVE_CHUNK = 64 * 1024

_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------
# Child side
# --------------------------------------------------------------------------


def _child_main(
    conn: Connection, sys_path: list[str], cwd: str, environ: dict[str, str] | None = None
) -> None:
    """Entry point of a child: serve calls until the parent closes the pipe."""
    # Own session and process group: the parent kills the child and everything
    # the user's code started with one killpg.
    os.setsid()
    _die_with_parent()
    scrub_environ()  # user code must not see the worker's tokens
    os.environ.update(environ or {})  # the synced wheels' PATH and PYTHONPATH
    sys.path[:] = sys_path if cwd in sys_path else [*sys_path, cwd]
    conn.send_bytes(_READY)
    functions: dict[str, Callable[..., Any]] = {}
    sender = _Sender(conn)
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent closed the pipe or died
        reply = _serve(request, functions, sender)
        sender.send(reply)


def _die_with_parent() -> None:
    """Make sure a child, and all it started, ends when the worker does.

    An idle child sees EOF on its pipe. A busy one cannot, and PDEATHSIG alone
    is not enough: the child's parent is the forkserver, which stays alive as
    long as any child does. So a thread waits on the worker's sentinel (EOF
    when the worker exits) and kills the child's process group.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_watch_parent, args=(parent.sentinel,), name="rota-parent-watch", daemon=True
        ).start()


def _watch_parent(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os.killpg(0, signal.SIGKILL)


class _ResolveError(Exception):
    pass


def _resolve(target: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (the function may be ``Class.method``)."""
    module_name, sep, qualname = target.partition(":")
    if not sep or not module_name or not qualname:
        raise _ResolveError(f"invalid target {target!r}: expected 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # a module may raise anything at import time
        raise _ResolveError(
            f"cannot import module {module_name!r}: {_exception_summary(exc)}"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _ResolveError(f"cannot import {qualname!r} from module {module_name!r}") from None
    if not callable(obj):
        raise _ResolveError(f"{target!r} is not callable")
    return obj


class _Sender:
    """The child's end of the pipe, shared by the serving thread (replies) and
    the output flusher (output frames), which start only while a call runs."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.streams: tuple[_LiveText, ...] = ()
        self.wake = threading.Event()
        self._flusher: threading.Thread | None = None

    def send(self, data: bytes) -> None:
        with self.lock:
            self.conn.send_bytes(data)

    def follow(self, *streams: _LiveText) -> None:
        """Send what ``streams`` gather, until :meth:`stop`."""
        self.streams = streams
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._run, name="rota-output", daemon=True)
            self._flusher.start()

    def stop(self) -> None:
        """Send what is left; later writes (a thread the call left running)
        stay in the tails only."""
        streams, self.streams = self.streams, ()
        for stream in streams:
            stream.close_live()

    def _run(self) -> None:
        while True:
            self.wake.wait()  # a first write since the last flush
            time.sleep(LIVE_FLUSH_SECONDS)
            self.wake.clear()
            for stream in self.streams:
                stream.send_pending()


#: Set on a thread while it sends a chunk: a write from that same thread in the
#: meantime (a signal handler, a ``__del__`` run by the collector) only gathers.
_sending = threading.local()


class _LiveText(io.StringIO):
    """A call's stdout or stderr: kept whole for the reply's tail, and passed on
    to the parent as it comes.

    Only the child itself passes output on: a process the call forked inherits
    this object (and the pipe), and its writes stay in its own copy, as before
    streaming existed, so it can neither break the pipe's framing nor talk
    into a later run's output."""

    def __init__(self, sender: _Sender, fd: bytes) -> None:
        super().__init__()
        self.sender = sender
        self.header = _OUTPUT + fd
        self.pid = os.getpid()
        self.pending: list[str] = []
        self.size = 0
        self.live = True
        # Held while a chunk is sent, so that chunks leave in order; re-entrant
        # for a write that interrupts its own thread's send (see _sending).
        self.lock = threading.RLock()

    def write(self, text: str) -> int:
        n = super().write(text)
        if text and self.live and os.getpid() == self.pid:
            with self.lock:
                self.pending.append(text)
                self.size += len(text)
                full = self.size >= _LIVE_CHUNK and not getattr(_sending, "active", False)
            if full:
                self.send_pending()
            else:
                self.sender.wake.set()
        return n

    def send_pending(self) -> None:
        with self.lock:
            self._send_locked()

    def close_live(self) -> None:
        with self.lock:
            self._send_locked()
            self.live = False

    def _send_locked(self) -> None:
        if self.live and self.pending and not getattr(_sending, "active", False):
            text, self.pending, self.size = "".join(self.pending), [], 0
            _sending.active = True
            try:
                self.sender.send(self.header + text.encode("utf-8", "replace"))
            finally:
                _sending.active = False


def _serve(
    request: bytes, functions: dict[str, Callable[..., Any]], sender: _Sender | None = None
) -> bytes:
    target, params, run_id, attempt, *rest = orjson.loads(request)
    live = bool(rest and rest[0]) and sender is not None
    # Same variables the command executor sets, for code that wants its run id.
    os.environ["ROTA_RUN_ID"] = run_id
    os.environ["ROTA_ATTEMPT"] = str(attempt)
    out: io.StringIO
    err: io.StringIO
    if live:
        assert sender is not None
        out, err = _LiveText(sender, b"1"), _LiveText(sender, b"2")
        sender.follow(out, err)  # type: ignore[arg-type]
        try:
            return _call(target, params, functions, out, err)
        finally:
            sender.stop()
    return _call(target, params, functions, io.StringIO(), io.StringIO())


def _call(
    target: str,
    params: dict[str, Any],
    functions: dict[str, Callable[..., Any]],
    out: io.StringIO,
    err: io.StringIO,
) -> bytes:
    try:
        fn = functions.get(target)
        if fn is None:
            fn = functions[target] = _resolve(target)
    except _ResolveError as exc:
        if exc.__cause__ is not None:
            err.write("".join(traceback.format_exception(exc.__cause__)))
        return _reply(out, err, error=str(exc))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            value = fn(**params)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt fail the run too
        # Skip this frame: the user's traceback starts at their function.
        err.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next)))
        return _reply(out, err, error=_exception_summary(exc))
    try:
        return _reply(out, err, result=value)
    except orjson.JSONEncodeError as exc:
        return _reply(out, err, error=f"result is not JSON-serialisable: {exc}")


def _reply(out: io.StringIO, err: io.StringIO, **fields: Any) -> bytes:
    # Cap here, not in the parent: the pipe should not carry what is dropped.
    return orjson.dumps({**fields, "stdout": tail(out.getvalue()), "stderr": tail(err.getvalue())})


def _exception_summary(exc: BaseException) -> str:
    """The last line of a traceback: ``ValueError: bad``."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    try:
        message = str(exc).strip()
    except Exception:
        message = "<exception str() failed>"
    return f"{name}: {message}" if message else name


# --------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------

_mp_thread: ThreadPoolExecutor | None = None


def _mp_executor() -> ThreadPoolExecutor:
    # Starting, joining and polling multiprocessing processes is blocking, and
    # not safe from several threads at once (Process.start() polls every known
    # child), so all of it happens on one thread shared by all executors.
    global _mp_thread
    if _mp_thread is None:
        _mp_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rota-mp")
    return _mp_thread


def _reap(proc: BaseProcess, timeout: float) -> int | None:
    proc.join(timeout)
    code = proc.exitcode
    if code is not None:
        proc.close()
    return code


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Child:
    """A child process and the parent's end of its pipe."""

    __slots__ = (
        "proc",
        "pid",
        "conn",
        "loop",
        "alive",
        "pending",
        "on_output",
        "generation",
        "_on_idle_death",
    )

    def __init__(
        self,
        proc: BaseProcess,
        conn: Connection,
        loop: asyncio.AbstractEventLoop,
        on_idle_death: Callable[[_Child], None],
    ) -> None:
        self.proc = proc
        self.pid: int = proc.pid  # type: ignore[assignment]  # started
        self.conn = conn
        self.loop = loop
        self.alive = True
        self.pending: asyncio.Future[tuple[str, bytes | None]] | None = None
        #: Where the output frames of the call in flight go (the run's live output).
        self.on_output: Callable[[str, bytes], None] | None = None
        #: The generation of the synced wheels the child started with.
        self.generation = 0
        self._on_idle_death = on_idle_death
        loop.add_reader(conn.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.conn.recv_bytes()
        except (EOFError, OSError):
            self._lost()
            return
        if data[:1] == _OUTPUT:
            if self.on_output is not None:
                self.on_output("stdout" if data[1:2] == b"1" else "stderr", data[2:])
            return
        fut, self.pending = self.pending, None
        if fut is not None and not fut.done():
            fut.set_result(("done", data))

    def _lost(self) -> None:
        self.loop.remove_reader(self.conn.fileno())
        self.alive = False
        fut, self.pending = self.pending, None
        if fut is not None:
            if not fut.done():
                fut.set_result(("died", None))
        else:
            self._on_idle_death(self)

    async def call(
        self,
        request: bytes,
        stop: asyncio.Future[str],
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> tuple[str, bytes | None]:
        """Send one request; return ("done", reply), ("died", None), or
        (stop's result, None) if ``stop`` settles first. Output frames go to
        ``on_output`` as they come."""
        fut: asyncio.Future[tuple[str, bytes | None]] = self.loop.create_future()
        self.on_output = on_output

        def on_stop(s: asyncio.Future[str]) -> None:
            if not fut.done():
                fut.set_result((s.result(), None))

        self.pending = fut
        stop.add_done_callback(on_stop)
        try:
            try:
                self.conn.send_bytes(request)
            except OSError:  # died while idle, before we saw the EOF
                return "died", None
            return await fut
        finally:
            stop.remove_done_callback(on_stop)
            self.pending = None
            self.on_output = None

    def kill(self) -> None:
        """SIGKILL the child's process group and stop listening to it."""
        if self.alive:
            self.alive = False
            self.loop.remove_reader(self.conn.fileno())
        fut, self.pending = self.pending, None
        if fut is not None and not fut.done():  # killed by close() mid-call
            fut.set_result(("died", None))
        # Also after a natural death: what the user's code started may remain.
        _kill_group(self.pid)


def _settle(fut: asyncio.Future[str], value: str) -> None:
    if not fut.done():
        fut.set_result(value)


class PythonExecutor:
    """Calls ``snap.target`` (``package.module:function``) in a pool of warm processes.

    :param size: number of child processes (default: ``os.cpu_count()``).
        Unused with ``fresh_process``, where the worker's own concurrency limit
        bounds the number of processes.
    :param fresh_process: start a new process per run instead of using the pool,
        for jobs that leak or mutate global state.

    The pool starts on the first run, or on :meth:`start`. A child whose run
    times out, is cancelled or dies is killed and replaced.
    """

    def __init__(self, size: int | None = None, *, fresh_process: bool = False) -> None:
        self.size = size if size is not None else (os.cpu_count() or 1)
        if self.size < 1:
            raise ValueError("size must be at least 1")
        self.fresh_process = fresh_process
        self._children: set[_Child] = set()
        # Processes started but not yet ready, so the exit hook can kill them too.
        self._spawned: set[BaseProcess] = set()
        self._idle: collections.deque[_Child] = collections.deque()
        # Runs waiting for a child; resolved with a child, or None when the run
        # was stopped or the executor closed.
        self._waiters: collections.deque[asyncio.Future[_Child | None]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._start_lock = asyncio.Lock()
        self._atexit_registered = False
        self.environment = Environment()

    # -- public API ---------------------------------------------------------

    def use_environment(self, env: Environment) -> None:
        """Runs from now on see ``env``'s code: idle children are replaced at
        once, busy ones when their run ends (never mid-run)."""
        self.environment = env
        idle, self._idle = list(self._idle), collections.deque()
        for child in idle:
            self._replace(child)

    async def start(self) -> None:
        """Start the pool's children now rather than on the first run."""
        if self._started or self.fresh_process:
            return
        async with self._start_lock:
            if self._started:
                return
            spawned = await asyncio.gather(
                *(self._spawn() for _ in range(self.size)), return_exceptions=True
            )
            children = [c for c in spawned if isinstance(c, _Child)]
            if len(children) < len(spawned):
                await asyncio.gather(*(self._retire(c) for c in children))
                raise next(e for e in spawned if isinstance(e, BaseException))
            for child in children:
                self._release(child)
            self._started = True

    async def run(self, snap: RunSnapshot, cancel: asyncio.Event) -> Outcome:
        if self._closed:
            raise RuntimeError("PythonExecutor is closed")
        if cancel.is_set():
            return Outcome(RunState.CANCELLED, error_summary="cancelled before start")
        live = live_output.get()
        request = orjson.dumps([snap.target, snap.params, snap.run_id, snap.attempt, bool(live)])
        on_output = live.write if live is not None else None
        loop = asyncio.get_running_loop()
        # One future per run that settles with "timeout" or "cancel"; the
        # acquire and call phases both listen to it.
        stop: asyncio.Future[str] = loop.create_future()
        timer = None
        if snap.timeout is not None:
            timer = loop.call_later(snap.timeout, _settle, stop, "timeout")
        watcher = loop.create_task(cancel.wait())
        watcher.add_done_callback(lambda t: t.cancelled() or _settle(stop, "cancel"))
        try:
            if self.fresh_process:
                kind, data, exit_code = await self._run_fresh(request, stop, on_output)
            else:
                kind, data, exit_code = await self._run_pooled(request, stop, on_output)
        finally:
            if timer is not None:
                timer.cancel()
            watcher.cancel()
        return _outcome(kind, data, exit_code, snap)

    async def close(self) -> None:
        """Stop all children. Idempotent; ``run`` raises afterwards."""
        if self._closed:
            return
        self._closed = True
        while self._waiters:
            _settle_waiter(self._waiters.popleft(), None)
        # Replacement tasks see _closed and retire what they started.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._retire(c) for c in list(self._children)), return_exceptions=True
        )
        self._idle.clear()
        if self._atexit_registered:
            atexit.unregister(self._kill_all)

    # -- runs ---------------------------------------------------------------

    async def _run_pooled(
        self,
        request: bytes,
        stop: asyncio.Future[str],
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> tuple[str, bytes | None, int | None]:
        if not self._started:
            await self.start()
        child = await self._acquire(stop)
        if child is None:
            return stop.result(), None, None
        try:
            kind, data = await child.call(request, stop, on_output)
        except BaseException:
            # Our task was cancelled mid-call: the child's state is unknown.
            child.kill()
            self._replace(child)
            raise
        if kind == "done":
            self._release(child)
            return kind, data, None
        exit_code = await self._retire(child)
        self._replace(None)
        return kind, data, exit_code

    async def _run_fresh(
        self,
        request: bytes,
        stop: asyncio.Future[str],
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> tuple[str, bytes | None, int | None]:
        if stop.done():
            return stop.result(), None, None
        child = await self._spawn()
        try:
            kind, data = await child.call(request, stop, on_output)
        except BaseException:
            child.kill()
            self._track(self._retire(child))
            raise
        # Killing the group also ends whatever the run left running.
        exit_code = await self._retire(child)
        return kind, data, exit_code

    # -- pool ---------------------------------------------------------------

    async def _acquire(self, stop: asyncio.Future[str]) -> _Child | None:
        """An idle child, or None if ``stop`` settled first."""
        if stop.done():
            return None
        while self._idle:
            child = self._idle.popleft()
            if not child.alive:
                continue
            # An idle child has nothing to say: anything readable is the EOF of
            # a death the event loop has not reported yet. Sending it a run
            # would fail that run for nothing, so replace it and look further.
            if child.conn.poll():
                child._lost()
                continue
            return child
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Child | None] = loop.create_future()
        self._waiters.append(waiter)

        def on_stop(_: asyncio.Future[str]) -> None:
            _settle_waiter(waiter, None)

        stop.add_done_callback(on_stop)
        try:
            child = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and (got := waiter.result()) is not None:
                self._release(got)
            raise
        finally:
            stop.remove_done_callback(on_stop)
        if child is None and self._closed:
            raise RuntimeError("PythonExecutor is closed")
        if child is not None and stop.done():
            self._release(child)  # handed over just as the run was stopped
            return None
        return child

    def _release(self, child: _Child) -> None:
        """Give an idle child to the first waiting run, or park it."""
        if self._closed:
            self._track(self._retire(child))
            return
        if child.generation != self.environment.generation:
            self._replace(child)  # it started before the wheels changed
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(child)
                return
        self._idle.append(child)

    async def _spawn(self) -> _Child:
        loop = asyncio.get_running_loop()
        parent_conn, child_conn = _CONTEXT.Pipe(duplex=True)
        env = self.environment
        proc = _CONTEXT.Process(
            target=_child_main,
            args=(
                child_conn,
                [*env.sys_path(), *sys.path],
                os.getcwd(),
                env.child_environ(),
            ),
            name="rota-python-executor",
        )
        try:
            await loop.run_in_executor(_mp_executor(), proc.start)
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()  # the child has its copy; ours would hide its EOF
        if not self._atexit_registered:
            # Runs before multiprocessing's own exit hook, which would
            # otherwise wait forever for our (non-daemon) children.
            atexit.register(self._kill_all)
            self._atexit_registered = True
        self._spawned.add(proc)
        try:
            await _wait_ready(loop, parent_conn)
        except BaseException as exc:
            _kill_group(proc.pid)  # type: ignore[arg-type]
            code = await loop.run_in_executor(_mp_executor(), _reap, proc, _REAP_TIMEOUT)
            parent_conn.close()
            if isinstance(exc, EOFError):
                raise RuntimeError(
                    f"python executor process exited with code {code} before it was ready"
                ) from None
            raise
        finally:
            self._spawned.discard(proc)
        child = _Child(proc, parent_conn, loop, self._on_idle_death)
        child.generation = env.generation
        self._children.add(child)
        return child

    async def _retire(self, child: _Child) -> int | None:
        """Kill a child, wait for it, release it; return its exit code.

        Idempotent: only the first call for a child waits and reports a code."""
        if child not in self._children:
            return None
        self._children.discard(child)
        child.kill()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(_mp_executor(), _reap, child.proc, _REAP_TIMEOUT)
        finally:
            child.conn.close()

    def _replace(self, old: _Child | None) -> None:
        """Retire ``old`` (if given) and start a new child, in the background."""
        if not self.fresh_process:
            self._track(self._replace_task(old))
        elif old is not None:
            self._track(self._retire(old))

    async def _replace_task(self, old: _Child | None) -> None:
        if old is not None:
            await self._retire(old)
        while not self._closed:
            try:
                child = await self._spawn()
            except Exception:
                log.exception("cannot start a python executor process; retrying")
                await asyncio.sleep(1.0)
                continue
            self._release(child)
            return

    def _on_idle_death(self, child: _Child) -> None:
        log.warning("python executor process %d died while idle; replacing it", child.pid)
        self._replace(child)

    def _track(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kill_all(self) -> None:
        for child in list(self._children):
            _kill_group(child.pid)
        for proc in list(self._spawned):
            _kill_group(proc.pid)  # type: ignore[arg-type]


async def _wait_ready(loop: asyncio.AbstractEventLoop, conn: Connection) -> None:
    """Wait for a new child's ready message; EOFError if it died first."""
    readable = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
    try:
        await asyncio.wait_for(readable, _READY_TIMEOUT)
    finally:
        loop.remove_reader(conn.fileno())
    if conn.recv_bytes() != _READY:
        raise RuntimeError("python executor process sent an unexpected greeting")


def _settle_waiter(waiter: asyncio.Future[_Child | None], value: _Child | None) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _outcome(kind: str, data: bytes | None, exit_code: int | None, snap: RunSnapshot) -> Outcome:
    if kind == "done":
        assert data is not None
        reply = orjson.loads(data)
        if "error" in reply:
            return Outcome(
                RunState.FAILED,
                error_summary=format_summary(reply["error"]),
                stdout=reply["stdout"],
                stderr=reply["stderr"],
            )
        return Outcome(
            RunState.SUCCEEDED,
            result=reply["result"],
            stdout=reply["stdout"],
            stderr=reply["stderr"],
        )
    if kind == "timeout":
        return Outcome(RunState.TIMED_OUT, error_summary=f"timed out after {snap.timeout:g}s")
    if kind == "cancel":
        return Outcome(RunState.CANCELLED, error_summary="cancelled")
    if exit_code is None:
        summary = "worker process exited"
    elif exit_code < 0:
        summary = f"worker process killed by signal {signal_name(-exit_code)}"
    else:
        summary = f"worker process exited with code {exit_code}"
    return Outcome(RunState.FAILED, exit_code=exit_code, error_summary=summary)
