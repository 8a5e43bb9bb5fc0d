"""Worker states and the runtime thresholds every process follows. Pure."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields
from typing import Any


class WorkerState(enum.StrEnum):
    RUNNING = "RUNNING"
    IDLE = "IDLE"
    DRAINING = "DRAINING"
    STOPPED_GRACEFUL = "STOPPED_GRACEFUL"
    DISCONNECTED = "DISCONNECTED"
    DETACHED = "DETACHED"


#: States of a worker that is alive and part of the cluster.
ACTIVE_STATES = frozenset({WorkerState.RUNNING, WorkerState.IDLE, WorkerState.DRAINING})


def worker_state(
    reported: str, *, heartbeat_age: float | None, ttl: float, detached: bool
) -> WorkerState:
    """The state shown everywhere, from what the worker last reported and the age
    of its heartbeat as the server measured it (never the worker's clock).

    ``heartbeat_age`` None means no heartbeat at all (expired or never written).
    """
    if detached:
        return WorkerState.DETACHED
    if reported == WorkerState.STOPPED_GRACEFUL:
        return WorkerState.STOPPED_GRACEFUL
    if heartbeat_age is None or heartbeat_age > ttl:
        return WorkerState.DISCONNECTED
    if reported == WorkerState.DRAINING:
        return WorkerState.DRAINING
    return WorkerState.RUNNING if reported == WorkerState.RUNNING else WorkerState.IDLE


@dataclass(frozen=True)
class Thresholds:
    """SchedulerSettings as every process sees them (seed 001 §2.8). SQL is the
    record; the leader copies it into KV, from which every worker, execute-only
    ones included, picks changes up within a second or two."""

    continuation_retries: int = 3
    continuation_interval_seconds: float = 0.3
    log_retention_days: int = 7
    heartbeat_interval_seconds: float = 1.0
    heartbeat_ttl_seconds: float = 3.0
    leader_lease_seconds: float = 2.0
    assign_ahead_seconds: float = 2.0
    grpc_timeout_seconds: float = 1.0
    grpc_retries: int = 2
    degrade_cooldown_seconds: float = 30.0

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Thresholds:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def confirm_window_seconds(self) -> float:
        """How long a run stays CONFIRMING before it may be taken away: every
        ConfirmContinuation attempt with its timeout, and the pauses between."""
        n = max(1, self.continuation_retries)
        return n * self.grpc_timeout_seconds + (n - 1) * self.continuation_interval_seconds
