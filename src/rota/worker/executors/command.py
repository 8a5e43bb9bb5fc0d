"""The ``command`` executor: run an executable in its own process group.

``snap.target`` is the executable, ``snap.args`` its first arguments and
``snap.params`` become ``--key=value`` options (:func:`params_to_argv`). No shell
is involved. The process gets its own session, so a timeout or a cancel can
signal everything it started at once with :func:`os.killpg`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from rota.domain.params import PARAM_KEY
from rota.domain.snapshot import OUTPUT_TAIL_BYTES, RunSnapshot, tail
from rota.domain.states import RunState
from rota.runs.logs import LiveOutput, live_output
from rota.worker.executors.base import Environment, Outcome, job_environ

#: Longest error_summary an outcome carries.
SUMMARY_LIMIT = 500

#: How long to wait for the output pipes once the process group is gone. A
#: process that escaped the group (its own ``setsid``) can hold them open forever.
_DRAIN_GRACE = 1.0


_libc_prctl = None
if sys.platform.startswith("linux"):
    import ctypes

    # Resolved once, in the parent: the child between fork and exec only calls it.
    _libc_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_worker() -> None:
    if _libc_prctl is not None:
        _libc_prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def params_to_argv(params: Mapping[str, Any]) -> list[str]:
    """Map run params to command-line options, in the mapping's order.

    ``True`` → ``--key``; ``False``/``None`` → omitted; a list → ``--key=v`` once
    per item; a dict (also inside a list) → its JSON; anything else →
    ``--key=str(value)``. A value is always joined to its option with ``=``, so
    none can start an option of its own (``{"name": "-rf"}`` → ``--name=-rf``).
    Keys are used verbatim (no ``_`` → ``-`` translation); a key that is not a
    plain name raises ValueError (the API refuses those at submit already: this
    guards runs that reach a worker another way).
    """
    argv: list[str] = []
    for key, value in params.items():
        if not (isinstance(key, str) and PARAM_KEY.fullmatch(key)):
            raise ValueError(f"params key {key!r} is not a plain name")
        flag = f"--{key}"
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if item is not None:
                    argv.append(f"{flag}={_option_value(item)}")
        else:
            argv.append(f"{flag}={_option_value(value)}")
    if any("\x00" in item for item in argv):
        raise ValueError("params carry a NUL character, which cannot be in an argument")
    return argv


def _option_value(value: Any) -> str:
    # str() of a dict or list is Python syntax, which no other program parses.
    if isinstance(value, (dict, list, tuple)):
        return orjson.dumps(value).decode()
    return str(value)


def format_summary(text: str) -> str:
    """``text`` cut to :data:`SUMMARY_LIMIT` characters."""
    text = text.strip()
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class CommandExecutor:
    """Runs ``[snap.target, *snap.args, *params_to_argv(snap.params)]``.

    :param kill_grace: seconds between SIGTERM and SIGKILL when a run is
        stopped (timeout or cancel).
    :param output_limit: bytes of stdout/stderr kept per stream (the tail).

    ``Outcome.exit_code`` is the process's return code as Python reports it:
    negative when a signal killed it.
    """

    def __init__(self, *, kill_grace: float = 2.0, output_limit: int = OUTPUT_TAIL_BYTES) -> None:
        self.kill_grace = kill_grace
        self.output_limit = output_limit
        # Process groups of runs in flight, so close() can stop them.
        self._groups: set[int] = set()
        #: The worker's synced wheels: their bin/ first on PATH, the packages
        #: first on PYTHONPATH, for runs started from now on.
        self.environment = Environment()

    def use_environment(self, env: Environment) -> None:
        self.environment = env

    def argv(self, snap: RunSnapshot) -> list[str]:
        """What to execute for ``snap`` (subclasses run other programs the same way)."""
        return [snap.target, *snap.args, *params_to_argv(snap.params)]

    #: Working directory of the run's process (None: the worker's).
    cwd: str | None = None

    async def run(self, snap: RunSnapshot, cancel: asyncio.Event) -> Outcome:
        if cancel.is_set():
            return Outcome(RunState.CANCELLED, error_summary="cancelled before start")
        try:
            argv = self.argv(snap)
        except ValueError as exc:
            return Outcome(RunState.FAILED, error_summary=format_summary(str(exc)))
        env = self.environment.apply(job_environ(snap))
        loop = asyncio.get_running_loop()
        capture = _Capture(loop, self.output_limit, live_output.get())
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: capture,
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                # A run must not outlive a worker that was killed: its copy would
                # go on beside the attempt the leader dispatches again.
                preexec_fn=_die_with_worker,
            )
        except FileNotFoundError:
            return Outcome(
                RunState.FAILED,
                error_summary=format_summary(f"executable not found: {snap.target}"),
            )
        except PermissionError:
            return Outcome(
                RunState.FAILED, error_summary=format_summary(f"permission denied: {snap.target}")
            )
        except OSError as exc:
            return Outcome(
                RunState.FAILED,
                error_summary=format_summary(f"cannot start {snap.target}: {exc.strerror or exc}"),
            )

        pgid = transport.get_pid()  # start_new_session: the leader's pid is the group id
        self._groups.add(pgid)
        cancelled = asyncio.create_task(cancel.wait())
        stopped = False
        try:
            await asyncio.wait(
                {capture.exited, cancelled},
                timeout=snap.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if capture.exited.done():
                state, summary = None, ""
            else:
                state = RunState.CANCELLED if cancelled.done() else RunState.TIMED_OUT
                summary = "cancelled" if cancelled.done() else f"timed out after {snap.timeout:g}s"
                await self._stop(pgid, capture.exited)
            await capture.exited
            # Whatever the leader left behind in its group dies with the run.
            _signal_group(pgid, signal.SIGKILL)
            stopped = True
            await asyncio.wait({capture.closed}, timeout=_DRAIN_GRACE)
            returncode = transport.get_returncode()
            assert returncode is not None
        finally:
            if not stopped:  # our own task was cancelled: stop the work anyway
                _signal_group(pgid, signal.SIGKILL)
            self._groups.discard(pgid)
            cancelled.cancel()
            transport.close()
        stdout, stderr = capture.text(1), capture.text(2)

        if state is None:
            if returncode == 0:
                state = RunState.SUCCEEDED
            elif returncode < 0:
                state, summary = RunState.FAILED, f"killed by signal {signal_name(-returncode)}"
            else:
                state, summary = RunState.FAILED, f"exit status {returncode}"
                if line := _last_line(stderr):
                    summary += f": {line}"
        return Outcome(
            state,
            exit_code=returncode,
            error_summary=format_summary(summary),
            stdout=stdout,
            stderr=stderr,
        )

    async def _stop(self, pgid: int, exited: asyncio.Future[None]) -> None:
        """SIGTERM the group, give the leader ``kill_grace`` to exit, SIGKILL the group."""
        _signal_group(pgid, signal.SIGTERM)
        # Wait on the leader, not the whole group: orphans that died stay
        # zombies until init reaps them, and some inits (containers) never do.
        await asyncio.wait({exited}, timeout=self.kill_grace)
        _signal_group(pgid, signal.SIGKILL)

    async def close(self) -> None:
        """Kill the process groups of runs still in flight. Idempotent."""
        for pgid in list(self._groups):
            _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    # ESRCH: the group is already empty. EPERM: a member changed its
    # credentials (setuid); nothing more we can do for it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class _Capture(asyncio.SubprocessProtocol):
    """Collects a process's output (only the last ``limit`` bytes per stream),
    passes it on to the run's live output as it comes, and reports its exit and the close of its pipes separately.

    ``Process.wait()`` of the high-level API is not enough: it also waits for
    the pipes, which a background grandchild can hold open forever.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limit: int, live: LiveOutput | None = None
    ) -> None:
        self.limit = limit
        self.live = live
        self.buffers = {1: bytearray(), 2: bytearray()}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self.live is not None:
            self.live.write("stdout" if fd == 1 else "stderr", data)
        buf = self.buffers[fd]
        buf += data
        if len(buf) > 2 * self.limit:  # trim in batches, not on every chunk
            del buf[: -self.limit]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def text(self, fd: int) -> str:
        return tail(self.buffers[fd].decode("utf-8", "replace"), self.limit)


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""
