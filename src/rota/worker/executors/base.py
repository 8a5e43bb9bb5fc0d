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
- an executor that sees its process's output as it comes passes it on to
  ``rota.runs.logs.live_output.get()`` (set by the worker around ``run``; None
  outside a worker) for the live tail; the outcome still carries the tails.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
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


#: Variables a job never sees: the worker's own credentials.
_SECRET = re.compile(r"^ROTA_.*(TOKEN|SECRET|PASSWORD|KEY|DATABASE_URL)(_FILE)?$")


def without_secrets(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without rota's secrets:
    API and NATS tokens, the secret key. What every job and pod starts from."""
    return {k: v for k, v in (os.environ if base is None else base).items() if not _SECRET.match(k)}


def job_environ(snap: RunSnapshot, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a run's process gets: the worker's, without rota's
    secrets, plus the run's identity."""
    env = without_secrets(base)
    env["ROTA_RUN_ID"] = snap.run_id
    env["ROTA_ATTEMPT"] = str(snap.attempt)
    env["ROTA_WORKER_ID"] = snap.worker_id or ""
    return env


def scrub_environ() -> None:
    """Remove rota's secrets from this process's environment (a pool child,
    before it runs user code)."""
    for key in [k for k in os.environ if _SECRET.match(k)]:
        del os.environ[key]


class Executor(Protocol):
    async def run(self, snap: RunSnapshot, cancel: asyncio.Event) -> Outcome: ...

    async def close(self) -> None: ...
