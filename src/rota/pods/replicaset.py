"""ReplicaSetController: keeps ``desired_instances`` of a task running on this host.

Each slot is supervised by a small loop: start a pod, wait for it to exit, wait a
backoff delay, start again. A command that cannot start is a failure like any
other: retried with the same backoff, never a dead slot. Quick failures in a row
grow the delay exponentially (``initial * factor**(n-1)`` up to ``maximum``) and,
from ``crash_loop_after`` on, show the slot as ``crash_loop`` in the status. A
pod that ran at least ``stable_after`` seconds starts the count again.
The delay computation is the pure :class:`Backoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rota.pods.config import PodProtocol, TaskSpec
from rota.pods.errors import PodStartError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 30.0
    #: A pod that ran this long was healthy: its exit starts the count again.
    stable_after: float = 10.0
    #: From this many quick failures in a row the slot is shown as crash_loop.
    crash_loop_after: int = 3

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next start after ``failures`` in a row."""
        if failures <= 1:
            return min(self.initial, self.maximum)
        return min(self.maximum, self.initial * self.factor ** (failures - 1))

    def failures_after(self, failures: int, ran: float | None) -> int:
        """The count after an exit (``ran``: seconds it ran; ``None``: it never started)."""
        if ran is not None and ran >= self.stable_after:
            return 1
        return failures + 1


class RunningPod(Protocol):
    """A started pod, as the controller sees it (the host's ``PodRuntime``)."""

    pod_id: str

    @property
    def pid(self) -> int | None: ...

    async def wait(self) -> int | None:
        """The exit status, once the pod has exited and the host has forgotten it."""
        ...

    async def stop(self, grace: float) -> None: ...


StartPod = Callable[[TaskSpec, int], Awaitable[RunningPod]]


@dataclass
class Slot:
    index: int
    #: starting | running | backoff | crash_loop | finished | stopped
    state: str = "starting"
    pod: RunningPod | None = None
    starts: int = 0
    failures: int = 0
    last_exit: int | None = None
    last_error: str = ""
    started_at: float | None = None
    next_start_at: float | None = None

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)


class ReplicaSetController:
    """The replica set of one task on this host."""

    def __init__(
        self,
        spec: TaskSpec,
        start_pod: StartPod,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.start_pod = start_pod
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.slots = [Slot(i) for i in range(spec.desired_instances)]
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for slot in self.slots:
            self._tasks.append(asyncio.create_task(self._supervise(slot)))

    async def _supervise(self, slot: Slot) -> None:
        spec = self.spec
        while not self._stopping.is_set():
            slot.state = "starting"
            slot.starts += 1
            ran: float | None = None
            try:
                pod = await self.start_pod(spec, slot.index)
            except PodStartError as exc:
                slot.last_error = exc.message
                # Loud on the first failure, quieter while it keeps failing.
                level = logging.ERROR if slot.failures == 0 else logging.DEBUG
                log.log(level, "%s (retrying with backoff)", exc)
            except Exception as exc:  # a bug in rota: still never a dead slot
                slot.last_error = f"cannot start: {exc!r}"
                log.exception("task %s: cannot start a pod (retrying with backoff)", spec.name)
            else:
                slot.pod, slot.state = pod, "running"
                slot.started_at = self.clock()
                slot.next_start_at = None
                code = await pod.wait()
                ran = self.clock() - slot.started_at
                slot.pod, slot.last_exit = None, code
                if self._stopping.is_set():
                    break
                if ran >= self.backoff.stable_after:
                    slot.last_error = ""
                log.info(
                    "task %s: pod %s exited with status %s after %.1fs",
                    spec.name,
                    pod.pod_id[:8],
                    code,
                    ran,
                )
                if spec.protocol is PodProtocol.INTERACTIVE:
                    slot.state = "finished"  # the terminal closed: nothing to restart
                    return
            slot.failures = self.backoff.failures_after(slot.failures, ran)
            delay = self.backoff.delay(slot.failures)
            crash_loop = slot.failures >= self.backoff.crash_loop_after
            slot.state = "crash_loop" if crash_loop else "backoff"
            slot.next_start_at = self.clock() + delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        slot.state = "stopped"
        slot.next_start_at = None

    async def stop(self, grace: float) -> None:
        """Stop every pod (SIGTERM, SIGKILL after ``grace``) and the supervisors.
        Idempotent."""
        self._stopping.set()
        pods = [s.pod for s in self.slots if s.pod is not None]
        await asyncio.gather(*(p.stop(grace) for p in pods), return_exceptions=True)
        if self._tasks:
            # A supervisor blocked in start_pod is cancelled; one waiting on a pod
            # returns once the pod is gone.
            done, pending = await asyncio.wait(self._tasks, timeout=grace + 5)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for slot in self.slots:
            slot.state = "stopped"

    def status(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for s in self.slots:
            out.append(
                {
                    "slot": s.index,
                    "state": s.state,
                    "pod_id": s.pod.pod_id if s.pod else None,
                    "pid": s.pod.pid if s.pod else None,
                    "restarts": s.restarts,
                    "failures_in_a_row": s.failures,
                    "last_exit": s.last_exit,
                    "last_error": s.last_error,
                    "uptime": round(now - s.started_at, 3) if s.pod and s.started_at else None,
                    "next_start_in": (
                        round(max(0.0, s.next_start_at - now), 3) if s.next_start_at else None
                    ),
                }
            )
        return out

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self.slots)
