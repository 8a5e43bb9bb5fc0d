"""The live snapshot of a run: what the run KV bucket holds under ``run.<id>``
and what a dispatch message carries.

Pure: encode, decode, and :func:`advance`, the one function that makes the next
snapshot from the current one. It checks the transition against the table in
:mod:`rota.domain.states` and bumps ``version``; the caller applies the result
with a compare-and-set on the KV revision.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from rota.domain.states import ContinuationState, RunState, check_transition

#: Output kept per stream: the last this many bytes, in the snapshot and (for a
#: finished run) in the RunLog table.
OUTPUT_TAIL_BYTES = 64 * 1024


@dataclass(slots=True)
class RunSnapshot:
    run_id: str
    job: str
    kind: str
    target: str
    args: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    tag: str = "default"
    tags: list[str] = field(default_factory=list)
    timeout: float | None = None
    max_attempts: int = 3
    #: The effective retry policy (rota.domain.retry.RetryPolicy as a dict);
    #: empty: the defaults with ``max_attempts``.
    retry: dict[str, Any] = field(default_factory=dict)
    #: A failed attempt's run (PENDING) is not claimed before this time.
    retry_at: float | None = None
    state: str = RunState.PENDING
    attempt: int = 0
    version: int = 0
    leader_epoch: int = 0
    worker_id: str | None = None
    created_at: float = 0.0
    scheduled_for: float | None = None
    assigned_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    updated_at: float = 0.0
    continuation_state: str = ContinuationState.NONE
    continuation_deadline_at: float | None = None
    error_summary: str = ""
    result: Any = None
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    #: What happened to the run besides its plain path (supervision, hand-back,
    #: cancel, a new attempt): [{"at", "event", "attempt", ...}]. Empty for most runs.
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Pyoco flow runs (kind ``pyoco``): the flow's name, the uploaded flow.yaml
    #: it runs (empty for a flow resolved by name), task name -> state, task name
    #: -> record, and whether records were dropped past the size limit.
    flow_name: str = ""
    flow_yaml: str = ""
    tasks: dict[str, str] = field(default_factory=dict)
    task_records: dict[str, Any] = field(default_factory=dict)
    task_records_truncated: bool = False
    #: Celery runs (kind ``celery``): the task id it was sent as (the run id),
    #: when, and the task's last state as Celery reported it (PENDING, RECEIVED,
    #: STARTED, RETRY, ...). Each change is also an event, which SQL keeps.
    celery_task_id: str = ""
    celery_sent_at: float | None = None
    celery_state: str = ""

    def encode(self) -> bytes:
        return orjson.dumps(self)

    @property
    def terminal(self) -> bool:
        from rota.domain.states import is_terminal

        return is_terminal(self.state)


_FIELDS = frozenset(f.name for f in dataclasses.fields(RunSnapshot))


def decode(data: bytes) -> RunSnapshot:
    raw = orjson.loads(data)
    # Ignore keys a newer rota may have added; a rolling upgrade must not break.
    return RunSnapshot(**{k: v for k, v in raw.items() if k in _FIELDS})


def advance(
    snap: RunSnapshot, target: RunState | str, *, now: float | None = None, **changes: Any
) -> RunSnapshot:
    """Return the snapshot after ``snap.state → target``, with ``changes`` applied.

    Raises :class:`~rota.domain.states.InvalidTransition` if the table forbids it.
    ``target`` equal to the current state is allowed for non-state updates
    (a heartbeat, a continuation change) and still bumps the version.
    """
    if target != snap.state:
        check_transition(snap.state, target)
    now = time.time() if now is None else now
    new = dataclasses.replace(snap, **changes)
    new.state = RunState(target).value
    new.version = snap.version + 1
    new.updated_at = now
    return new


def with_event(snap: RunSnapshot, event: str, *, at: float, **detail: Any) -> list[dict[str, Any]]:
    """``snap.events`` plus one more (a new list: snapshots are not mutated)."""
    return [*snap.events, {"at": at, "event": event, "attempt": snap.attempt, **detail}]


def tail(text: str, limit: int = OUTPUT_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``text``, cut on a character boundary."""
    # Encoding with "replace" also turns lone surrogates (undecodable bytes a
    # process printed) into "?", so the result always serialises.
    data = text.encode("utf-8", "replace")
    if limit <= 0:
        return ""
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[-limit:].decode("utf-8", "ignore")
