"""Retry policy of failed runs (pure; no I/O).

A job carries a policy; a schedule and a single run may override any of its
fields. The effective policy travels in the run's snapshot, so the worker that
records a failed attempt decides, by the same compare-and-set, whether the run
ends FAILED/TIMED_OUT or waits for its next attempt (PENDING with ``retry_at``).

A run taken from a lost worker is a different thing: it is re-dispatched at once
(no backoff), and counts against the same ``max_attempts``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from rota.domain.states import RunState
from rota.errors import InvalidInput

#: The fields a job, schedule or run may set (``max_attempts`` and
#: ``backoff_seconds`` are a job's ``max_attempts`` and ``retry_backoff_seconds``).
POLICY_FIELDS = (
    "max_attempts",
    "backoff_seconds",
    "backoff_max_seconds",
    "jitter",
    "exit_codes",
    "exceptions",
    "timed_out",
)


#: ``exit_codes`` / ``exceptions``: every one retries.
ANY = "any"


class InvalidRetryPolicy(InvalidInput):
    """A retry policy with an unknown field or a value out of range (422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="retry")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: Attempts in all, the first included (1: never retried).
    max_attempts: int = 3
    #: Delay before the second attempt; doubled for each one after, up to the cap.
    backoff_seconds: float = 10.0
    backoff_max_seconds: float = 600.0
    #: Fraction of each delay drawn at random (0: none, 1: anywhere in 0..delay),
    #: so runs that failed together do not come back together.
    jitter: float = 0.5
    #: Exit codes that retry, or "any" (any non-zero one). None retry by default:
    #: a failing job fails at once, as it always did, unless its policy says so.
    exit_codes: tuple[int, ...] | str = ()
    #: Exception type names that retry (a python or pyoco run's error starts with
    #: ``Type:``), or "any".
    exceptions: tuple[str, ...] | str = ()
    #: Whether a run that timed out is retried.
    timed_out: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> RetryPolicy:
        return cls().merged(data)

    def merged(self, override: Mapping[str, Any] | None) -> RetryPolicy:
        """This policy with the fields ``override`` sets (None values are left out)."""
        if not override:
            return self
        unknown = set(override) - set(POLICY_FIELDS)
        if unknown:
            raise InvalidRetryPolicy(
                f"unknown retry field(s) {sorted(unknown)}; allowed: {', '.join(POLICY_FIELDS)}"
            )
        changes: dict[str, Any] = {}
        for name, value in override.items():
            if value is None:
                continue
            if name in ("exit_codes", "exceptions") and value != ANY:
                if not isinstance(value, list | tuple):
                    raise InvalidRetryPolicy(f'retry.{name} must be a list or "any"')
                value = tuple(value)
            changes[name] = value
        policy = replace(self, **changes)
        policy.check()
        return policy

    def check(self) -> None:
        if not isinstance(self.max_attempts, int) or not 1 <= self.max_attempts <= 100:
            raise InvalidRetryPolicy("retry.max_attempts must be an integer from 1 to 100")
        for name in ("backoff_seconds", "backoff_max_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value <= 7 * 24 * 3600:
                raise InvalidRetryPolicy(f"retry.{name} must be 0..604800 seconds")
        if not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 1:
            raise InvalidRetryPolicy("retry.jitter must be between 0 and 1")
        if self.exit_codes != ANY and not all(
            isinstance(c, int) and not isinstance(c, bool) for c in self.exit_codes
        ):
            raise InvalidRetryPolicy('retry.exit_codes must be integers or "any"')
        if self.exceptions != ANY and not all(
            isinstance(e, str) and e.isidentifier() for e in self.exceptions
        ):
            raise InvalidRetryPolicy('retry.exceptions must be exception type names or "any"')
        if not isinstance(self.timed_out, bool):
            raise InvalidRetryPolicy("retry.timed_out must be true or false")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("exit_codes", "exceptions"):
            if out[name] != ANY:
                out[name] = list(out[name])
        return out

    def retries(self, state: RunState | str, *, exit_code: int | None, error_summary: str) -> bool:
        """Whether an attempt that ended so is retried (attempts left aside)."""
        if state == RunState.TIMED_OUT:
            return self.timed_out
        if state != RunState.FAILED:
            return False
        if exit_code is not None and exit_code != 0:
            return self.exit_codes == ANY or exit_code in self.exit_codes
        if self.exceptions == ANY:
            return True
        return exception_type(error_summary) in self.exceptions

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds before the attempt after ``attempt`` (1-based) starts:
        exponential, capped, with the jitter fraction drawn at random."""
        base = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, attempt - 1))
        r = (rng or random).random()
        return base * (1 - self.jitter * r)


def exception_type(error_summary: str) -> str:
    """``"ValueError: bad"`` → ``"ValueError"``; the last line of a traceback counts."""
    lines = [line for line in error_summary.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    for line in (lines[0], lines[-1]):
        head = line.split(":", 1)[0].strip()
        if head and ":" in line and all(p.isidentifier() for p in head.split(".")):
            return head.rsplit(".", 1)[-1]
    return ""
