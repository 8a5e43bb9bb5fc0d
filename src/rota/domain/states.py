"""Run states and the one table of allowed transitions (DESIGN §4).

Every run transition anywhere in rota is checked by :func:`check_transition`.
The I/O that applies a transition (a compare-and-set on the live snapshot) lives
in :mod:`rota.runs.transitions`; nothing else writes a run's state.
"""

from __future__ import annotations

import enum


class RunState(enum.StrEnum):
    PENDING = "PENDING"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    ORPHANED = "ORPHANED"
    SKIPPED = "SKIPPED"


class ContinuationState(enum.StrEnum):
    NONE = "NONE"
    CONFIRMING = "CONFIRMING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"


S = RunState

TERMINAL: frozenset[RunState] = frozenset(
    {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.SKIPPED}
)

#: States from which a worker may claim a run (DESIGN §4, Claim).
CLAIMABLE: frozenset[RunState] = frozenset({S.PENDING, S.ORPHANED})

#: States in which a worker owns the run.
OWNED: frozenset[RunState] = frozenset({S.ASSIGNED, S.RUNNING, S.CANCELLING})

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    # A new run waits for a worker; it may be cancelled, skipped by policy, or
    # failed before it ever runs (unknown job, invalid payload).
    S.PENDING: frozenset({S.ASSIGNED, S.RUNNING, S.CANCELLED, S.SKIPPED, S.FAILED}),
    # Claimed ahead of its start time (assign_ahead_seconds) or by StartJob.
    S.ASSIGNED: frozenset({S.RUNNING, S.CANCELLING, S.CANCELLED, S.ORPHANED, S.FAILED}),
    # PENDING again: a failed attempt waiting for its retry (``retry_at``).
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLING, S.ORPHANED, S.PENDING}),
    # The owner is asked to stop; it reports CANCELLED, or the run finished first.
    S.CANCELLING: frozenset({S.CANCELLED, S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.ORPHANED}),
    # Taken from a lost worker (or handed back on shutdown): claimed again with
    # attempt + 1, or failed when the retry budget is spent, or cancelled.
    S.ORPHANED: frozenset({S.ASSIGNED, S.RUNNING, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.TIMED_OUT: frozenset(),
    S.CANCELLED: frozenset(),
    S.SKIPPED: frozenset(),
}


class InvalidTransition(ValueError):
    """A transition the table does not allow. Never retryable."""

    retryable = False

    def __init__(self, current: RunState, target: RunState) -> None:
        super().__init__(f"run cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: RunState | str, target: RunState | str) -> bool:
    return RunState(target) in TRANSITIONS[RunState(current)]


def check_transition(current: RunState | str, target: RunState | str) -> None:
    """Raise :class:`InvalidTransition` unless ``current → target`` is allowed."""
    if not can_transition(current, target):
        raise InvalidTransition(RunState(current), RunState(target))


def is_terminal(state: RunState | str) -> bool:
    return RunState(state) in TERMINAL


#: seed 003's status vocabulary, kept for its existing clients (DESIGN §8).
_SEED003_STATUS = {
    S.PENDING: "PENDING",
    S.ASSIGNED: "PENDING",
    S.ORPHANED: "PENDING",
    S.RUNNING: "RUNNING",
    S.SUCCEEDED: "COMPLETED",
    S.FAILED: "FAILED",
    S.TIMED_OUT: "FAILED",
    S.CANCELLING: "CANCELLING",
    S.CANCELLED: "CANCELLED",
    S.SKIPPED: "CANCELLED",
}


def seed003_status(state: RunState | str) -> str:
    return _SEED003_STATUS[RunState(state)]
