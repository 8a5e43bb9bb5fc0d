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
- an executor may have ``use_environment(env: Environment)``: the worker calls
  it after each change of its synced wheels (docs/wheels.md). Runs that start
  afterwards must see the new code; a run in progress must not be disturbed
  (pooled processes are replaced between runs, never during one).
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
from pathlib import Path
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


@dataclass(frozen=True, slots=True)
class Environment:
    """The wheels a worker synced: the directory ``pip install --target`` put
    them in (None: no wheels), and a generation that grows with every change."""

    root: Path | None = None
    generation: int = 0

    def sys_path(self) -> list[str]:
        """Entries to put first on a Python process's ``sys.path``."""
        return [str(self.root)] if self.root is not None else []

    def apply(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with the wheels' scripts first on PATH and their packages
        first on PYTHONPATH."""
        if self.root is not None:
            env["PATH"] = os.pathsep.join(
                p for p in (str(self.root / "bin"), env.get("PATH", os.defpath)) if p
            )
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.root), env.get("PYTHONPATH", "")) if p
            )
        return env

    def child_environ(self) -> dict[str, str]:
        """What a pooled child adds to the environment it inherited."""
        base = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
        return self.apply(base) if self.root is not None else {}


#: Variables a job never sees: the worker's own credentials.
_SECRET = re.compile(r"^ROTA_.*(TOKEN|SECRET|PASSWORD|KEY|DATABASE_URL)(_FILE)?$")


#: Names of the variables the worker set for itself alone (comma-separated):
#: a job gets the environment the worker was started with, not these.
WORKER_ONLY_ENV = "ROTA_WORKER_ONLY_ENV"


def set_worker_only_env(name: str, value: str) -> None:
    """Set ``name`` for this process unless the user set it already, and keep it
    out of the environment of every job and pod it starts."""
    if name in os.environ:
        return
    os.environ[name] = value
    names = [n for n in os.environ.get(WORKER_ONLY_ENV, "").split(",") if n]
    os.environ[WORKER_ONLY_ENV] = ",".join([*names, name])


def _hidden(env: Mapping[str, str]) -> set[str]:
    return {WORKER_ONLY_ENV, *(n for n in env.get(WORKER_ONLY_ENV, "").split(",") if n)}


def without_secrets(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without rota's secrets:
    API and NATS tokens, the secret key; and without what the worker set for
    itself alone. What every job and pod starts from."""
    env = os.environ if base is None else base
    hidden = _hidden(env)
    return {k: v for k, v in env.items() if not _SECRET.match(k) and k not in hidden}


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
    hidden = _hidden(os.environ)
    for key in [k for k in os.environ if _SECRET.match(k) or k in hidden]:
        del os.environ[key]


class Executor(Protocol):
    async def run(self, snap: RunSnapshot, cancel: asyncio.Event) -> Outcome: ...

    async def close(self) -> None: ...
