"""The I/O of one pod: a child process (MiclowStdIO) or the operator's terminal
(Interactive), behind :class:`PodIO`. What the bytes mean is decided elsewhere
(:mod:`rota.pods.protocol`); this module only moves them.

A pod process runs in its own session (its own process group), so stopping it
reaches everything it started: SIGTERM to the group, then SIGKILL after a grace
period. Once the leader has exited, whatever it left in its group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import BinaryIO, Protocol

from rota.pods.config import TaskSpec
from rota.pods.errors import PodStartError
from rota.worker.executors.base import without_secrets

#: ``on_output(stream, data)``: ``stream`` is "stdout" or "stderr"; ``data`` is
#: ``None`` once that stream has ended.
OutputCallback = Callable[[str, bytes | None], None]

#: How long to wait for the output pipes once the process is gone. A grandchild
#: that escaped the group (its own ``setsid``) can hold them open forever.
DRAIN_GRACE = 1.0


class PodIO(Protocol):
    """What the host needs from one running pod.

    Contract: ``write`` never blocks (it buffers) and ignores a closed stdin;
    output reaches the ``on_output`` callback given at creation, ending with
    ``None`` per stream; ``wait`` returns the exit status once the pod has exited
    and its output has been delivered (or :data:`DRAIN_GRACE` passed);
    ``stop`` is idempotent and returns only when the pod is gone.
    """

    pid: int | None

    def write(self, data: bytes) -> None: ...

    async def wait(self) -> int | None: ...

    async def stop(self, grace: float) -> None: ...

    def pause_reading(self) -> None:
        """Stop reading the pod's output for now (backpressure)."""

    def resume_reading(self) -> None: ...


def pod_environ(
    spec: TaskSpec, pod_id: str, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A pod's environment: the host's without rota's secrets, ``PYTHONUNBUFFERED``
    (a Python pod that block-buffers a pipe would never be heard), the task's
    ``environment_vars``, then the pod's identity."""
    env = without_secrets(base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(spec.environment_vars)
    env["MICLOW_POD_ID"] = pod_id
    env["ROTA_POD_ID"] = pod_id
    # miclow's Python client refuses to import without MICLOW_TASK_ID.
    env["MICLOW_TASK_ID"] = pod_id
    env["ROTA_POD_TASK"] = spec.name
    return env


#: A pod runs under a keeper: the leader of the pod's process group, which runs
#: the pod's command as its child (same stdin/stdout/stderr) and exits as it
#: exits. The keeper holds the read end of a pipe whose write end only the host
#: holds; when the host dies, even by SIGKILL, the kernel closes it, the keeper
#: reads EOF and kills the whole group. So a pod that ignores its stdin and
#: SIGTERM, and the children it started, die with their host instead of running
#: on beside the next host's copy. Signals the host sends the group (SIGTERM to
#: stop) reach the pod itself; the keeper only waits. No imports beyond os,
#: signal and sys: the keeper adds a bare interpreter start to a pod's start.
KEEPER = r"""
import os, signal, sys
fd, argv = int(sys.argv[1]), sys.argv[2:]
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    os.close(fd)
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, ("%s: %s\n" % (argv[0], e.strerror)).encode())
        os._exit(127)
def reap(*_):
    p, status = os.waitpid(pid, os.WNOHANG)
    if p == pid:
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code)
signal.signal(signal.SIGCHLD, reap)
reap()
while os.read(fd, 1):
    pass
os.killpg(0, signal.SIGKILL)
"""

_lifeline: tuple[int, int] | None = None


def _lifeline_fd() -> int:
    """The read end of this host's lifeline pipe. The write end stays open (and
    is not inherited) for as long as this process lives."""
    global _lifeline
    if _lifeline is None:
        _lifeline = os.pipe()
    return _lifeline[0]


def keeper_argv(command: str, *args: str) -> tuple[list[str], tuple[int, ...]]:
    """The argv that runs ``command`` under the keeper, and the fds it must
    inherit (POSIX; elsewhere the command as is)."""
    if os.name != "posix":
        return [command, *args], ()
    fd = _lifeline_fd()
    return [sys.executable, "-I", "-S", "-c", KEEPER, str(fd), command, *args], (fd,)


def _signal_group(pgid: int, signum: int) -> None:
    # ESRCH: the group is already empty. EPERM: a member changed credentials.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class PodProcess(asyncio.SubprocessProtocol):
    """A pod's child process. Create with :func:`spawn_process`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_output: OutputCallback) -> None:
        self.on_output = on_output
        self.pid: int | None = None
        self.returncode: int | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._exited: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._open = {1, 2}
        self._finished = False

    # -- asyncio.SubprocessProtocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.on_output("stdout" if fd == 1 else "stderr", data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in self._open:
            self._open.discard(fd)
            self.on_output("stdout" if fd == 1 else "stderr", None)
            if not self._open and not self._closed.done():
                self._closed.set_result(None)

    def process_exited(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)

    # -- PodIO ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        stdin = self._stdin
        if stdin is not None and not stdin.is_closing() and not self._exited.done():
            stdin.write(data)

    async def wait(self) -> int | None:
        await asyncio.shield(self._exited)
        await asyncio.wait({self._closed}, timeout=DRAIN_GRACE)
        if not self._finished:
            self._finished = True
            assert self._transport is not None and self.pid is not None
            self.returncode = self._transport.get_returncode()
            # Whatever the leader left behind in its group dies with it.
            _signal_group(self.pid, signal.SIGKILL)
            self._transport.close()
        return self.returncode

    def pause_reading(self) -> None:
        self._each_reader("pause_reading")

    def resume_reading(self) -> None:
        self._each_reader("resume_reading")

    def _each_reader(self, method: str) -> None:
        if self._transport is None:
            return
        for fd in (1, 2):
            pipe = self._transport.get_pipe_transport(fd)
            if pipe is not None and not pipe.is_closing():
                with contextlib.suppress(RuntimeError):  # already paused/resumed
                    getattr(pipe, method)()

    async def stop(self, grace: float) -> None:
        if self.pid is None:
            return
        if not self._exited.done():
            if self._stdin is not None:
                self._stdin.close()
            _signal_group(self.pid, signal.SIGTERM)
            await asyncio.wait({self._exited}, timeout=grace)
            _signal_group(self.pid, signal.SIGKILL)
        await self.wait()


def _check_command(spec: TaskSpec, env: Mapping[str, str], cwd: str | None) -> None:
    """What exec would say about ``spec.command``, said before the keeper starts."""
    command = spec.command
    if os.sep in command:
        path = command if os.path.isabs(command) else os.path.join(cwd or os.getcwd(), command)
        if not os.path.exists(path):
            raise PodStartError(
                f"task {spec.name!r}: command not found: {command}",
                hint="is it installed and on PATH (or give its full path)?",
            )
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            raise PodStartError(
                f"task {spec.name!r}: permission denied: {command}",
                hint="is the file executable?",
            )
    elif shutil.which(command, path=env.get("PATH", os.defpath)) is None:
        raise PodStartError(
            f"task {spec.name!r}: command not found: {command}",
            hint="is it installed and on PATH (or give its full path)?",
        )


async def spawn_process(
    spec: TaskSpec, env: Mapping[str, str], on_output: OutputCallback
) -> PodProcess:
    """Start ``spec.command`` with ``spec.args``. Raises :class:`PodStartError`
    with a message that says what to fix."""
    loop = asyncio.get_running_loop()
    proto = PodProcess(loop, on_output)
    cwd = str(spec.working_directory) if spec.working_directory is not None else None
    if cwd is not None and not os.path.isdir(cwd):
        raise PodStartError(
            f"task {spec.name!r}: working directory {cwd} does not exist",
            hint="fix working_directory in the pods config",
        )
    _check_command(spec, env, cwd)  # the keeper would start, and the command fail inside it
    argv, pass_fds = keeper_argv(spec.command, *spec.args)
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: proto,
            *argv,
            pass_fds=pass_fds,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except FileNotFoundError:
        raise PodStartError(
            f"task {spec.name!r}: command not found: {spec.command}",
            hint="is it installed and on PATH (or give its full path)?",
        ) from None
    except PermissionError:
        raise PodStartError(
            f"task {spec.name!r}: permission denied: {spec.command}",
            hint="is the file executable?",
        ) from None
    except OSError as exc:
        raise PodStartError(
            f"task {spec.name!r}: cannot start {spec.command}: {exc.strerror or exc}"
        ) from None
    proto.pid = transport.get_pid()
    # Not an isinstance check: uvloop's pipe transports do not subclass asyncio's.
    proto._stdin = transport.get_pipe_transport(0)  # type: ignore[assignment]
    return proto


class TerminalIO:
    """The Interactive protocol: the host's stdin is the pod's output (each line
    parsed like a pod's stdout), and messages for the task are printed.

    A daemon thread reads the terminal: it may block in ``readline`` forever and
    must not keep the process alive at exit.
    """

    pid: int | None = None

    def __init__(
        self,
        on_output: OutputCallback,
        *,
        show: Callable[[bytes], None],
        stdin: BinaryIO | None = None,
    ) -> None:
        self.on_output = on_output
        self.show = show
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self._stdin = stdin if stdin is not None else sys.stdin.buffer
        threading.Thread(target=self._read, name="rota-pods-terminal", daemon=True).start()

    def _read(self) -> None:
        try:
            for line in iter(self._stdin.readline, b""):
                self._loop.call_soon_threadsafe(self.on_output, "stdout", line)
        except (OSError, ValueError):  # stdin closed under us
            pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._eof)

    def _eof(self) -> None:
        self.on_output("stdout", None)
        if not self._exited.done():
            self._exited.set_result(None)

    def write(self, data: bytes) -> None:
        self.show(data)

    async def wait(self) -> int | None:
        await asyncio.shield(self._exited)
        return 0

    async def stop(self, grace: float) -> None:
        if not self._exited.done():
            self._exited.set_result(None)

    def pause_reading(self) -> None:
        """A terminal is read a line at a time by a person: nothing to pause."""

    def resume_reading(self) -> None:
        pass
