"""Celery, the pure parts: a celery job's send options, how Celery's task states
map to rota's run states, the rule for a task that never reports, a params
schema from a task's signature, and Celery schedules as rota's cron.

No I/O and no import of Celery: the worker's executor, the importer and the
beat scheduler (``rota.celery``) do the talking.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from rota.errors import InvalidInput

#: Send options a celery job takes in its ``args``, as ``key=value`` items:
#: queue, routing key, priority (0-255), countdown and expires (seconds), and
#: start_timeout, the never-reports rule's limit for this job (seconds).
OPTION_TYPES: dict[str, type] = {
    "queue": str,
    "routing_key": str,
    "priority": int,
    "countdown": float,
    "expires": float,
    "start_timeout": float,
}


@dataclass(frozen=True, slots=True)
class CeleryOptions:
    queue: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    countdown: float | None = None
    expires: float | None = None
    start_timeout: float | None = None

    def send_kwargs(self) -> dict[str, Any]:
        """What ``Celery.send_task`` takes of these (start_timeout is rota's)."""
        names = ("queue", "routing_key", "priority", "countdown", "expires")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def parse_options(args: list[str]) -> CeleryOptions:
    """A celery job's ``args`` (``["queue=reports", "priority=5"]``) as options.
    Raises InvalidInput naming the item for anything else."""
    values: dict[str, Any] = {}
    for item in args:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or key not in OPTION_TYPES:
            raise InvalidInput(
                f"celery job option {item!r} is not one of "
                f"{', '.join(k + '=...' for k in OPTION_TYPES)}",
                field="args",
            )
        type_ = OPTION_TYPES[key]
        try:
            value = type_(raw.strip())
        except ValueError:
            raise InvalidInput(
                f"celery job option {key}: {raw!r} is not {type_.__name__}", field="args"
            ) from None
        if key == "priority" and not 0 <= value <= 255:
            raise InvalidInput("celery job option priority must be 0-255", field="args")
        if type_ is float and value < 0:
            raise InvalidInput(f"celery job option {key} must be >= 0", field="args")
        if type_ is str and not value:
            raise InvalidInput(f"celery job option {key} is empty", field="args")
        values[key] = value
    return CeleryOptions(**values)


# -- states ------------------------------------------------------------------------

#: Celery states that end a task, and what rota records for each.
FINAL = {"SUCCESS": "SUCCEEDED", "FAILURE": "FAILED", "REVOKED": "CANCELLED"}
#: Celery states of a task that has not started: the run stays ASSIGNED.
WAITING = frozenset({"PENDING", "RECEIVED"})
#: Celery states of a task a Celery worker has begun: the run is RUNNING.
STARTED = frozenset({"STARTED", "RETRY"})


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The never-reports rule fired: revoke the task and end the run so."""

    state: str  # FAILED or TIMED_OUT
    reason: str


def give_up(
    *,
    now: float,
    sent_at: float,
    celery_state: str,
    timeout: float | None,
    start_timeout: float,
    max_runtime: float,
) -> GiveUp | None:
    """The rule for a task that never reports, and for timeouts.

    - The run's timeout counts from the send, whatever Celery says: past it the
      task is revoked and the run is TIMED_OUT.
    - A task still PENDING (Celery's word for "I know nothing of it": no Celery
      worker took it, there is no result backend, the message was lost)
      ``start_timeout`` seconds after the send: revoked, FAILED.
    - A job without a timeout gets ``max_runtime``: a task whose worker died
      after STARTED (its result never comes) ends TIMED_OUT then, not never.
    """
    elapsed = now - sent_at
    if timeout is not None and elapsed >= timeout:
        return GiveUp("TIMED_OUT", f"timed out after {timeout:g}s (the Celery task was revoked)")
    if celery_state in WAITING and elapsed >= start_timeout:
        return GiveUp(
            "FAILED",
            f"the Celery task reported nothing for {start_timeout:g}s after it was sent "
            f"(still {celery_state}: no Celery worker took it, there is no result backend, "
            "or it was lost); it was revoked",
        )
    if timeout is None and elapsed >= max_runtime:
        return GiveUp(
            "TIMED_OUT",
            f"no end reported within celery_max_runtime_seconds={max_runtime:g}s "
            "(the Celery task was revoked)",
        )
    return None


# -- params schema from a signature -------------------------------------------------

_JSON_TYPES: dict[Any, dict[str, Any]] = {
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bool: {"type": "boolean"},
    list: {"type": "array"},
    tuple: {"type": "array"},
    dict: {"type": "object"},
    type(None): {"type": "null"},
}


def _schema_of(hint: Any) -> dict[str, Any] | None:
    if hint in _JSON_TYPES:
        return dict(_JSON_TYPES[hint])
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_schema_of(a) for a in typing.get_args(hint)]
        if any(p is None for p in parts):
            return None
        return {"anyOf": parts}
    if origin in (list, tuple, set, frozenset):
        schema: dict[str, Any] = {"type": "array"}
        args = typing.get_args(hint)
        if origin is list and len(args) == 1 and (item := _schema_of(args[0])) is not None:
            schema["items"] = item
        return schema
    if origin is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(hint))}
    return None  # a type JSON cannot describe: accept any value


def params_schema_for(func: Any) -> dict[str, Any]:
    """A JSON Schema of a task's keyword parameters from its signature and type
    hints: each parameter a property (typed where its hint maps to JSON), those
    without a default required, no others unless it takes ``**kwargs``."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: go without types
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    open_ = False
    for name, p in sig.parameters.items():
        if name == "self" or p.kind is p.POSITIONAL_ONLY:
            continue
        if p.kind is p.VAR_KEYWORD:
            open_ = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        prop = _schema_of(hints[name]) if name in hints else None
        properties[name] = prop or {}
        if p.default is p.empty:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if not open_:
        schema["additionalProperties"] = False
    return schema


def positional_names(func: Any) -> list[str]:
    """The names positional ``args`` of a periodic task bind to, in order."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    return [
        n
        for n, p in sig.parameters.items()
        if n != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


# -- Celery schedules as cron ---------------------------------------------------------


class Unmappable(ValueError):
    """A Celery schedule rota cannot fire at the same times; the message says why."""


def _full(text: str, full: set[int], parsed: set[int]) -> bool:
    return text.strip() == "*" or parsed == full


def crontab_to_cron(
    minute: str,
    hour: str,
    day_of_week: str,
    day_of_month: str,
    month_of_year: str,
    *,
    dow_values: set[int],
    dom_values: set[int],
) -> str:
    """A Celery crontab's five fields as rota's cron. Celery matches day of
    month AND day of week; cron (POSIX, rota's) matches either when both are
    restricted, so that combination is refused."""
    dow_restricted = not _full(day_of_week, set(range(7)), dow_values)
    dom_restricted = not _full(day_of_month, set(range(1, 32)), dom_values)
    if dow_restricted and dom_restricted:
        raise Unmappable(
            "day_of_month and day_of_week are both restricted: Celery needs both to "
            "match, cron either (split it into two schedules, or drop one field)"
        )
    fields = [minute, hour, day_of_month, month_of_year, day_of_week]
    return " ".join(str(f).replace(" ", "") for f in fields)


def interval_to_cron(every: timedelta) -> str:
    """A Celery interval as a clock-aligned cron, for the intervals cron can
    express: whole minutes dividing an hour, whole hours dividing a day, a day."""
    seconds = every.total_seconds()
    if seconds <= 0 or seconds % 60:
        raise Unmappable(f"every {seconds:g}s: rota's schedules fire on whole minutes")
    minutes = int(seconds // 60)
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if minutes % 60 == 0:
        hours = minutes // 60
        if hours < 24 and 24 % hours == 0:
            return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
        if hours == 24:
            return "0 0 * * *"
    raise Unmappable(
        f"every {minutes} minutes does not divide an hour or a day: cron cannot repeat it"
    )
