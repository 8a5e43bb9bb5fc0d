"""The executor seam.

An executor turns one claimed run into an :class:`Outcome`. The worker owns the
run's state; an executor never touches NATS, KV or SQL. Contract for
implementations:

- ``run`` must return (not raise) for anything the job itself does wrong: a
  non-zero exit, an exception in user code, a timeout. It raises only for a bug
  in rota.
- when ``cancel`` is set, ``run`` must stop the work (kill the process group) and
  return an outcome with state CANCELLED promptly.
- when the run's ``timeout`` passes, ``run`` must stop the work and return
  TIMED_OUT; nothing it started may outlive it.
- ``close`` releases pooled resources; it must be idempotent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from rota.domain.snapshot import RunSnapshot
from rota.domain.states import RunState


@dataclass(slots=True)
class Outcome:
    state: RunState
    exit_code: int | None = None
    result: Any = None
    error_summary: str = ""
    stdout: str = ""
    stderr: str = ""


class Executor(Protocol):
    async def run(self, snap: RunSnapshot, cancel: asyncio.Event) -> Outcome: ...

    async def close(self) -> None: ...
