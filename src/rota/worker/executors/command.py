"""The ``command`` executor: run an executable in its own process group.

``snap.target`` is the executable, ``snap.args`` its first arguments and
``snap.params`` become ``--key value`` options (:func:`params_to_argv`). No shell
is involved. The process gets its own session, so a timeout or a cancel can
signal everything it started at once with :func:`os.killpg`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Any

import orjson

from rota.domain.snapshot import OUTPUT_TAIL_BYTES, RunSnapshot, tail
from rota.domain.states import RunState
from rota.worker.executors.base import Outcome

#: Longest error_summary an outcome carries.
SUMMARY_LIMIT = 500

#: How long to wait for the output pipes once the process group is gone. A
#: process that escaped the group (its own ``setsid``) can hold them open forever.
_DRAIN_GRACE = 1.0

_READ_CHUNK = 64 * 1024


def params_to_argv(params: Mapping[str, Any]) -> list[str]:
    """Map run params to command-line options, in the mapping's order.

    ``True`` → ``--key``; ``False``/``None`` → omitted; a list → ``--key v`` once
    per item; a dict (also inside a list) → its JSON; anything else → ``str()``.
    Keys are used verbatim (no ``_`` → ``-`` translation).
    """
    argv: list[str] = []
    for key, value in params.items():
        flag = f"--{key}"
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if item is not None:
                    argv += [flag, _option_value(item)]
        else:
            argv += [flag, _option_value(value)]
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

    async def run(self, snap: RunSnapshot, cancel: asyncio.Event) -> Outcome:
        if cancel.is_set():
            return Outcome(RunState.CANCELLED, error_summary="cancelled before start")
        argv = [snap.target, *snap.args, *params_to_argv(snap.params)]
        env = {**os.environ, "ROTA_RUN_ID": snap.run_id, "ROTA_ATTEMPT": str(snap.attempt)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            return Outcome(RunState.FAILED, error_summary=format_summary(f"executable not found: {snap.target}"))
        except PermissionError:
            return Outcome(RunState.FAILED, error_summary=format_summary(f"permission denied: {snap.target}"))
        except OSError as exc:
            return Outcome(
                RunState.FAILED,
                error_summary=format_summary(f"cannot start {snap.target}: {exc.strerror or exc}"),
            )

        pgid = proc.pid  # start_new_session: the leader's pid is the group id
        self._groups.add(pgid)
        assert proc.stdout is not None and proc.stderr is not None
        drains = [
            asyncio.create_task(_drain(proc.stdout, self.output_limit)),
            asyncio.create_task(_drain(proc.stderr, self.output_limit)),
        ]
        exited = asyncio.create_task(proc.wait())
        cancelled = asyncio.create_task(cancel.wait())
        stopped = False
        try:
            await asyncio.wait({exited, cancelled}, timeout=snap.timeout, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                state, summary = None, ""
            else:
                state = RunState.CANCELLED if cancelled.done() else RunState.TIMED_OUT
                summary = "cancelled" if cancelled.done() else f"timed out after {snap.timeout:g}s"
                await self._stop(pgid, exited)
            returncode = await proc.wait()
            # Whatever the leader left behind in its group dies with the run.
            _signal_group(pgid, signal.SIGKILL)
            stopped = True
            await asyncio.wait(drains, timeout=_DRAIN_GRACE)
            stdout, stderr = (
                _decode(task.result(), self.output_limit) if task.done() else "" for task in drains
            )
        finally:
            if not stopped:  # our own task was cancelled: stop the work anyway
                _signal_group(pgid, signal.SIGKILL)
            self._groups.discard(pgid)
            for task in (*drains, exited, cancelled):
                task.cancel()

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

    async def _stop(self, pgid: int, exited: asyncio.Task[int]) -> None:
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


async def _drain(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read ``stream`` to EOF, keeping only about the last ``limit`` bytes."""
    buf = bytearray()
    while chunk := await stream.read(_READ_CHUNK):
        buf += chunk
        if len(buf) > 2 * limit:  # trim in batches, not on every chunk
            del buf[:-limit]
    return bytes(buf)


def _decode(data: bytes, limit: int) -> str:
    return tail(data.decode("utf-8", "replace"), limit)


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""
