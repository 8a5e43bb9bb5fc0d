"""Schedules: cron text, the structured form the UI edits, time zones, DST, and
the fire times the leader's tick turns into runs (DESIGN §5).

Pure: no I/O beyond the standard library reading the IANA time zone database.

Cron dialect
------------
Exactly five fields, ``minute hour day-of-month month day-of-week``, matched
against the schedule's *local wall-clock time*. Each field takes ``*``, a number,
a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (``a`` to the field's
maximum), or a comma list of these. Months take ``jan``-``dec``, days of week
``sun``-``sat`` (0 and 7 are both Sunday; ``mon-sun`` is Monday to Sunday).
The aliases ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and
``@yearly`` (``@annually``) are accepted and normalised to five fields. Seconds
and years fields, and croniter's extensions (``L``, ``W``, ``#``, ``H``, ``R``,
``?``), are refused: the UI, the API and every worker must agree on one meaning.

Day of month and day of week: when *both* are restricted (neither covers every
day), a day matches if *either* matches (POSIX). A field that covers its whole
range is unrestricted however it is written (``1-31``, ``*/1``, ``0-6``,
``sun-sat`` all mean ``*``), so ``0 9 1-31 * mon`` fires on Mondays only.

DST semantics
-------------
A schedule's wall-clock times are mapped to instants (aware UTC) like this:

* A wall time that exists once fires at that instant.

* **Nonexistent** wall time (in a spring-forward gap, e.g. 02:30 in New York on
  2026-03-08), by ``dst_policy``:

  - ``shift_forward_first`` (the default): fires ONCE at the first valid instant
    after it, which is the moment the gap ends (03:00 EDT in the example). All
    wall times of one gap that match collapse into that one instant, together
    with a match at the gap's end itself (``*/15``: 02:00, 02:15, 02:30 and 02:45
    do not exist, and 03:00 fires once).
  - ``skip_nonexistent``: does not fire.

* **Ambiguous** wall time (in a fall-back overlap, e.g. 01:30 in New York on
  2026-11-01, which happens at 05:30 UTC and again at 06:30 UTC):

  - A *wall-clock* schedule (its hour field names particular hours: daily,
    weekly, monthly, ``*/10 9-17 * * *``...) fires ONCE, at the first occurrence
    (``fold=0``; 05:30 UTC in the example). Its wall time is an appointment, and
    "at 01:30" happened once the first time the clock said so.
  - A *cadence* schedule (its hour field covers all 24 hours: every N minutes,
    hourly at :MM, ``*`` in the hour field) fires at EVERY instant whose wall time
    matches, so in the repeated hour it fires at both occurrences. The fall-back
    hour is real time that passes; first-occurrence-only would leave a ``*/15``
    health check silent for 75 minutes and make an hourly job skip an hour once
    a year. The instants differ (05:30 and 06:30 UTC), so the fire ledger's key
    (schedule, nominal UTC time) never collides.

  The gap rule is the same for both kinds: ``dst_policy`` decides. For ``*/N``
  schedules in whole-hour zones the gap's end is itself a match, so nothing
  extra fires; an hourly ``30 * * * *`` does fire at 03:00 for the missing 02:30
  under ``shift_forward_first`` (choose ``skip_nonexistent`` for a strict cadence).

Every sequence this module returns is strictly increasing aware UTC, strictly
after the given start: never a doubled instant, never a tick skipped relative to
the rules above. The rules are defined instant by instant (the unit tests check
them against a reference that walks every UTC minute); croniter is used only to
step through *naive* local wall times, never for zone handling.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter  # type: ignore[import-untyped]

from rota.errors import InvalidInput

__all__ = [
    "DST_POLICIES",
    "SEARCH_HORIZON",
    "SHIFT_FORWARD_FIRST",
    "SKIP_NONEXISTENT",
    "CronSpec",
    "FireCalendar",
    "compile_structured",
    "describe",
    "fires_between",
    "is_cadence",
    "next_fire_after",
    "next_fires",
    "parse_cron",
    "structured_from_cron",
    "validate_cron",
    "validate_dst_policy",
    "validate_structured",
    "validate_timezone",
]

SHIFT_FORWARD_FIRST = "shift_forward_first"
SKIP_NONEXISTENT = "skip_nonexistent"
DST_POLICIES: frozenset[str] = frozenset({SHIFT_FORWARD_FIRST, SKIP_NONEXISTENT})

#: How far ahead the fire search looks before giving up (a cron that only ever
#: matches nonexistent wall times under skip_nonexistent). Feb 29 recurs within
#: 8 years, so every cron validate_cron accepts fires inside it.
SEARCH_HORIZON = timedelta(days=366 * 10)

_MINUTE = timedelta(minutes=1)

# ---------------------------------------------------------------------------
# Cron text
# ---------------------------------------------------------------------------

_MONTH_NAMES = {
    name: i + 1
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DOW_NAMES = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_SYNTAX_HINT = (
    "each of the 5 fields takes *, a number, a range a-b, a step */n or a-b/n, "
    "or a comma list of these"
)


@dataclass(frozen=True, slots=True)
class _Field:
    index: int  # 1-based, as the error messages count
    name: str
    lo: int
    hi: int
    names: dict[str, int]
    allowed: str  # what the error message says is allowed

    @property
    def full(self) -> frozenset[int]:
        # Day of week: 7 is stored as 0, so "every day" is 0-6.
        return frozenset(range(self.lo, 7 if self.index == 5 else self.hi + 1))


_FIELDS = (
    _Field(1, "minute", 0, 59, {}, "0-59"),
    _Field(2, "hour", 0, 23, {}, "0-23"),
    _Field(3, "day-of-month", 1, 31, {}, "1-31"),
    _Field(4, "month", 1, 12, _MONTH_NAMES, "1-12 or jan-dec"),
    _Field(5, "day-of-week", 0, 7, _DOW_NAMES, "0-7 (0 and 7 are Sunday) or sun-sat"),
)


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed, validated cron: the normalised text and each field's value set."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    #: False when the field covers its whole range (it then does not restrict).
    days_restricted: bool
    weekdays_restricted: bool
    #: The hour field covers all 24 hours: see "DST semantics" in the module doc.
    cadence: bool
    _template: croniter = dataclasses.field(repr=False, compare=False)

    def matches(self, wall: datetime) -> bool:
        """Whether the naive local wall time ``wall`` (whole minute) matches."""
        if (
            wall.minute not in self.minutes
            or wall.hour not in self.hours
            or wall.month not in self.months
        ):
            return False
        in_days = wall.day in self.days
        in_weekdays = (wall.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def walls_after(self, start: datetime) -> Iterator[datetime]:
        """Matching naive wall times strictly after the naive ``start``, ascending."""
        # A private copy per walk: croniter keeps its position in the instance,
        # and the parsed template is shared by every thread.
        it = copy.copy(self._template)
        it.set_current(start, force=True)
        while True:
            yield it.get_next(datetime)


def _cron_error(field: _Field, text: str) -> InvalidInput:
    return InvalidInput(
        f"cron field {field.index} ({field.name}) {text}", field="cron", hint=_SYNTAX_HINT
    )


def _field_value(field: _Field, token: str) -> int:
    if token.isdigit():
        value = int(token)
        if not field.lo <= value <= field.hi:
            raise _cron_error(field, f"'{token}' is out of range {field.allowed}")
        return value
    if token in field.names:
        return field.names[token]
    kind = {4: " or a month name (jan-dec)", 5: " or a day name (sun-sat)"}.get(field.index, "")
    raise _cron_error(field, f"'{token}' is not a number{kind}; allowed: {field.allowed}")


def _parse_field(field: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _cron_error(field, f"'{text}' has an empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit():
                raise _cron_error(field, f"step '{step_text}' in '{item}' is not a number")
            step = int(step_text)
            if step < 1:
                raise _cron_error(field, f"step '{step_text}' in '{item}' must be at least 1")
        if base == "*":
            first, last = field.lo, max(field.full)
        elif "-" in base:
            a, _, b = base.partition("-")
            if not a or not b:
                raise _cron_error(field, f"'{item}' is not a valid range (write a-b)")
            first, last = _field_value(field, a), _field_value(field, b)
            if field.index == 5 and b == "sun":
                last = 7  # mon-sun: Sunday as the week's end
            if first > last:
                raise _cron_error(
                    field,
                    f"range '{base}' runs backwards; write it as two ranges "
                    f"({a}-{field.hi},{field.lo}-{b})",
                )
        else:
            first = _field_value(field, base)
            # "a/n" is a step from a to the field's maximum (croniter, Quartz).
            last = field.hi if slash else first
        values.update(range(first, last + 1, step))
    if field.index == 5 and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def _canonical(field: _Field, values: frozenset[int]) -> str:
    if values == field.full:
        return "*"
    return ",".join(str(v) for v in sorted(values))


@lru_cache(maxsize=4096)
def parse_cron(text: str) -> CronSpec:
    """Parse and validate ``text``; raise InvalidInput(field="cron") naming the problem.

    Cached: the leader asks about the same few thousand crons every tick.
    """
    if not isinstance(text, str):
        raise InvalidInput("cron must be a string", field="cron")
    normal = " ".join(text.strip().lower().split())
    if not normal:
        raise InvalidInput("cron expression is empty", field="cron", hint=_SYNTAX_HINT)
    if normal.startswith("@"):
        if normal not in _ALIASES:
            raise InvalidInput(
                f"cron alias '{normal}' is not supported; use one of "
                + ", ".join(sorted(_ALIASES))
                + " or five fields",
                field="cron",
            )
        normal = _ALIASES[normal]
    parts = normal.split(" ")
    if len(parts) != 5:
        extra = " (no seconds or years field)" if len(parts) in (6, 7) else ""
        raise InvalidInput(
            f"cron '{normal}' has {len(parts)} fields; rota takes exactly 5: "
            f"minute hour day-of-month month day-of-week{extra}",
            field="cron",
            hint=_SYNTAX_HINT,
        )
    sets = [_parse_field(f, p) for f, p in zip(_FIELDS, parts, strict=True)]
    # croniter gets the value sets, not the user's text: its own reading of
    # names, "7-7" and full ranges differs from the rules in the module doc.
    canonical = " ".join(_canonical(f, s) for f, s in zip(_FIELDS, sets, strict=True))
    template = croniter(canonical, datetime(2000, 1, 1), ret_type=datetime)
    try:
        # A cron that names only impossible dates (April 31, February 30).
        copy.copy(template).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidInput(
            f"cron '{normal}' never matches a real date", field="cron", hint=_SYNTAX_HINT
        ) from None
    minutes, hours, days, months, weekdays = sets
    return CronSpec(
        text=normal,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        days_restricted=days != _FIELDS[2].full,
        weekdays_restricted=weekdays != _FIELDS[4].full,
        cadence=hours == _FIELDS[1].full,
        _template=template,
    )


def validate_cron(text: str) -> str:
    """Return the normalised cron (lower case, single spaces, aliases expanded).

    Raises InvalidInput(field="cron") saying which field is wrong and what it
    allows, e.g. ``cron field 2 (hour) '25' is out of range 0-23``.
    """
    return parse_cron(text).text


def is_cadence(cron: str) -> bool:
    """Whether ``cron`` is a cadence schedule (fires in both occurrences of a
    repeated hour; see "DST semantics")."""
    return parse_cron(cron).cadence


# ---------------------------------------------------------------------------
# Time zones and DST policy
# ---------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidInput(
            f"unknown time zone '{name}'",
            field="timezone",
            hint="use an IANA name such as UTC, Europe/Berlin or America/New_York",
        ) from None


def validate_timezone(name: str) -> str:
    """Return ``name`` if it is an IANA time zone zoneinfo knows, else raise
    InvalidInput(field="timezone")."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("time zone is empty", field="timezone", hint="e.g. Europe/Berlin")
    return _zone(name.strip()).key


def validate_dst_policy(name: str) -> str:
    """Return ``name`` if it is one of :data:`DST_POLICIES`, else raise InvalidInput."""
    if name not in DST_POLICIES:
        raise InvalidInput(
            f"unknown DST policy '{name}'; use one of {', '.join(sorted(DST_POLICIES))}",
            field="dst_policy",
        )
    return name


def _as_zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else _zone(tz)


# ---------------------------------------------------------------------------
# The structured form
# ---------------------------------------------------------------------------

_DAY_KEYS = {
    **_DOW_NAMES,
    **{
        full: i
        for i, full in enumerate(
            ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
        )
    },
}
_DAY_ABBR = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")

_STRUCTURED_KEYS = {
    "minutes": {"every", "n"},
    "hour": {"every", "minute"},
    "day": {"every", "time"},
    "week": {"every", "days", "time"},
    "month": {"every", "day", "time"},
}


def _s_error(key: str, message: str) -> InvalidInput:
    return InvalidInput(f"structured.{key}: {message}", field=f"structured.{key}")


def _s_int(form: dict[str, Any], key: str, lo: int, hi: int) -> int:
    if key not in form:
        raise _s_error(key, "is required")
    value = form[key]
    # bool is an int to Python, never to a person filling in a form.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _s_error(key, f"must be a whole number {lo}-{hi}, not {value!r}")
    if not lo <= value <= hi:
        raise _s_error(key, f"{value} is out of range {lo}-{hi}")
    return value


def _s_time(form: dict[str, Any]) -> tuple[int, int]:
    if "time" not in form:
        raise _s_error("time", "is required (HH:MM)")
    value = form["time"]
    match = _TIME_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise _s_error("time", f"must be HH:MM (24-hour), not {value!r}")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise _s_error("time", f"{value!r} is not a time of day (00:00-23:59)")
    return hour, minute


def _s_days(form: dict[str, Any]) -> list[int]:
    if "days" not in form:
        raise _s_error("days", "is required (a list such as ['mon', 'thu'])")
    value = form["days"]
    if not isinstance(value, list) or not value:
        raise _s_error("days", "must be a non-empty list of days such as ['mon', 'thu']")
    days: set[int] = set()
    for day in value:
        key = day.strip().lower() if isinstance(day, str) else None
        if key not in _DAY_KEYS:
            raise _s_error("days", f"{day!r} is not a day (sun, mon, tue, wed, thu, fri, sat)")
        days.add(_DAY_KEYS[key])
    return sorted(days)


def validate_structured(form: Any) -> dict[str, Any]:
    """Validate the structured form and return it normalised (canonical keys and
    values, e.g. days as sorted short names); raise InvalidInput(field="structured.<key>")."""
    if not isinstance(form, dict):
        raise InvalidInput("structured must be an object", field="structured")
    every = form.get("every")
    if every not in _STRUCTURED_KEYS:
        raise _s_error("every", f"must be one of {', '.join(_STRUCTURED_KEYS)}, not {every!r}")
    for key in form:
        if key not in _STRUCTURED_KEYS[every]:
            raise _s_error(str(key), f"is not a setting of every={every!r}")
    if every == "minutes":
        return {"every": every, "n": _s_int(form, "n", 1, 59)}
    if every == "hour":
        return {"every": every, "minute": _s_int(form, "minute", 0, 59)}
    hour, minute = _s_time(form)
    time = f"{hour:02d}:{minute:02d}"
    if every == "day":
        return {"every": every, "time": time}
    if every == "week":
        return {"every": every, "days": [_DAY_ABBR[d] for d in _s_days(form)], "time": time}
    return {"every": every, "day": _s_int(form, "day", 1, 31), "time": time}


def compile_structured(form: dict[str, Any]) -> str:
    """The cron for a structured form.

    ========================================================  ===============
    ``{"every": "minutes", "n": 15}`` (n 1..59)               ``*/15 * * * *``
    ``{"every": "hour", "minute": 5}``                        ``5 * * * *``
    ``{"every": "day", "time": "09:30"}``                     ``30 9 * * *``
    ``{"every": "week", "days": ["mon", "fri"], "time": ...}``  ``30 9 * * 1,5``
    ``{"every": "month", "day": 31, "time": "09:30"}``        ``30 9 31 * *``
    ========================================================  ===============

    ``*/n`` restarts at every hour, so an n that does not divide 60 leaves a
    shorter gap before :00 (``*/7``: ..., :49, :56, :00). A monthly day 29-31
    fires only in months that have that day.
    """
    form = validate_structured(form)
    every = form["every"]
    if every == "minutes":
        return "* * * * *" if form["n"] == 1 else f"*/{form['n']} * * * *"
    if every == "hour":
        return f"{form['minute']} * * * *"
    hour, minute = (int(x) for x in form["time"].split(":"))
    if every == "day":
        return f"{minute} {hour} * * *"
    if every == "week":
        days = ",".join(str(_DOW_NAMES[d]) for d in form["days"])
        days = "*" if len(form["days"]) == 7 else days
        return f"{minute} {hour} * * {days}"
    return f"{minute} {hour} {form['day']} * *"


def structured_from_cron(cron: str) -> dict[str, Any] | None:
    """The structured form equivalent to ``cron``, or None if it has none (so
    the UI can show an existing cron in its form)."""
    spec = parse_cron(cron)
    all_days = not spec.days_restricted and not spec.weekdays_restricted
    if len(spec.months) != 12:
        return None
    if spec.cadence and all_days:
        minutes = sorted(spec.minutes)
        if len(minutes) == 1:
            return {"every": "hour", "minute": minutes[0]}
        step = minutes[1] - minutes[0]
        if minutes[0] == 0 and minutes == list(range(0, 60, step)):
            return {"every": "minutes", "n": step}
        return None
    if len(spec.minutes) != 1 or len(spec.hours) != 1:
        return None
    time = f"{min(spec.hours):02d}:{min(spec.minutes):02d}"
    if all_days:
        return {"every": "day", "time": time}
    if not spec.days_restricted:
        return {
            "every": "week",
            "days": [_DAY_ABBR[d] for d in sorted(spec.weekdays)],
            "time": time,
        }
    if not spec.weekdays_restricted and len(spec.days) == 1:
        return {"every": "month", "day": min(spec.days), "time": time}
    return None


def describe(cron: str) -> str:
    """A short English description, e.g. ``every 15 minutes``, ``every day at 09:30``."""
    form = structured_from_cron(cron)
    if form is None:
        return f"custom schedule ({parse_cron(cron).text})"
    every = form["every"]
    if every == "minutes":
        return "every minute" if form["n"] == 1 else f"every {form['n']} minutes"
    if every == "hour":
        return f"every hour at :{form['minute']:02d}"
    if every == "day":
        return f"every day at {form['time']}"
    if every == "week":
        days = ", ".join(d.capitalize() for d in form["days"])
        return f"every week on {days} at {form['time']}"
    return f"every month on day {form['day']} at {form['time']}"


# ---------------------------------------------------------------------------
# Wall time → instants
# ---------------------------------------------------------------------------


def _offset_at(tz: ZoneInfo, ts: int) -> timedelta:
    offset = datetime.fromtimestamp(ts, tz).utcoffset()
    assert offset is not None
    return offset


def _transition(tz: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The instant in (lo, hi] at which ``tz``'s offset becomes its offset at ``hi``."""
    # zoneinfo keeps its transition table private; a binary search over whole
    # seconds (every tzdata transition is on one) finds it in ~14 steps, and
    # the callers cache the result.
    lo_ts, hi_ts = int(lo.timestamp()), int(hi.timestamp())
    target = _offset_at(tz, hi_ts)
    while hi_ts - lo_ts > 1:
        mid = (lo_ts + hi_ts) // 2
        if _offset_at(tz, mid) == target:
            hi_ts = mid
        else:
            lo_ts = mid
    return datetime.fromtimestamp(hi_ts, UTC)


@dataclass(frozen=True, slots=True)
class _Odd:
    """A wall time that is nonexistent (gap) or ambiguous (fold)."""

    gap: bool
    #: The transition instant: where a gap ends / where the repeat begins.
    transition: datetime
    #: Fold only: the wall times [repeat_start, repeat_end) happen twice.
    repeat_start: datetime | None = None
    repeat_end: datetime | None = None


@lru_cache(maxsize=8192)
def _odd(tz: ZoneInfo, first: datetime, second: datetime) -> _Odd:
    """What is odd about the wall time whose fold=0 reading is the instant
    ``first`` and fold=1 reading is ``second`` (they differ)."""
    if first > second:
        # A gap: fold=0 reads it with the offset before the jump (later
        # instant), fold=1 with the offset after (earlier instant).
        return _Odd(gap=True, transition=_transition(tz, second, first))
    transition = _transition(tz, first, second)
    before = (transition - timedelta(seconds=1)).astimezone(tz).utcoffset()
    after = transition.astimezone(tz).utcoffset()
    assert before is not None and after is not None
    naive = transition.replace(tzinfo=None)
    return _Odd(
        gap=False, transition=transition, repeat_start=naive + after, repeat_end=naive + before
    )


def _resolve(wall: datetime, tz: ZoneInfo) -> tuple[datetime, _Odd | None]:
    """The instant of ``wall`` (its first occurrence; for a gap, the fold=0 reading)
    and, if ``wall`` is nonexistent or ambiguous, what is odd about it."""
    # fold=0 explicitly: a wall time read off an aware datetime keeps its fold.
    off0 = wall.replace(tzinfo=tz, fold=0).utcoffset()
    off1 = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert off0 is not None and off1 is not None
    u0 = (wall - off0).replace(tzinfo=UTC)
    if off0 == off1:
        return u0, None
    u1 = (wall - off1).replace(tzinfo=UTC)
    return u0, _odd(tz, u0, u1)


def _second_occurrence(wall: datetime, tz: ZoneInfo) -> datetime:
    off = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert off is not None
    return (wall - off).replace(tzinfo=UTC)


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise TypeError(f"{name} must be an aware datetime, not {value!r}")
    return value.astimezone(UTC)


def _iter_fires(spec: CronSpec, tz: ZoneInfo, after: datetime, policy: str) -> Iterator[datetime]:
    """Fire instants strictly after ``after`` (aware UTC), strictly increasing."""
    wall_after = after.astimezone(tz).replace(tzinfo=None)
    start = wall_after.replace(second=0, microsecond=0) - _MINUTE
    if spec.cadence:
        # ``after`` inside a repeated hour: wall times of that hour earlier than
        # wall_after may still have their second occurrence ahead.
        _, odd = _resolve(wall_after, tz)
        if odd is not None and not odd.gap:
            assert odd.repeat_start is not None
            start = min(start, odd.repeat_start - _MINUTE)
    horizon = wall_after + SEARCH_HORIZON
    shift = policy == SHIFT_FORWARD_FIRST
    last = after
    walls = spec.walls_after(start)
    pending: datetime | None = None
    while True:
        wall = pending if pending is not None else next(walls)
        pending = None
        if wall > horizon:
            return
        instant, odd = _resolve(wall, tz)
        if odd is None:
            candidates = [instant]
        elif odd.gap:
            candidates = [odd.transition] if shift else []
        elif not spec.cadence:
            candidates = [instant]  # first occurrence only
        else:
            # Every wall time of the repeated hour fires twice. Gather them all:
            # the first occurrences all come before the transition and the
            # second ones after it, so this order is increasing.
            assert odd.repeat_end is not None
            repeated = [wall]
            for later in walls:
                if later >= odd.repeat_end:
                    pending = later
                    break
                repeated.append(later)
            candidates = [_resolve(w, tz)[0] for w in repeated]
            candidates += [_second_occurrence(w, tz) for w in repeated]
        for candidate in candidates:
            # Strictly greater: drops instants at or before ``after`` and the
            # collapse of several gap wall times onto the gap's end.
            if candidate > last:
                last = candidate
                yield candidate


def _check_policy(policy: str) -> str:
    return policy if policy in DST_POLICIES else validate_dst_policy(policy)


def next_fires(
    cron: str,
    tz: str | ZoneInfo,
    after: datetime,
    n: int,
    dst_policy: str = SHIFT_FORWARD_FIRST,
) -> list[datetime]:
    """The next ``n`` fire instants strictly after ``after`` (aware), as aware
    UTC datetimes, strictly increasing. Fewer only if the schedule does not fire
    within :data:`SEARCH_HORIZON`."""
    spec, zone = parse_cron(cron), _as_zone(tz)
    _check_policy(dst_policy)
    out: list[datetime] = []
    if n <= 0:
        return out
    for instant in _iter_fires(spec, zone, _utc(after, "after"), dst_policy):
        out.append(instant)
        if len(out) >= n:
            break
    return out


@lru_cache(maxsize=65536)
def _next_fire_cached(cron: str, zone: ZoneInfo, after: datetime, policy: str) -> datetime | None:
    for instant in _iter_fires(parse_cron(cron), zone, after, policy):
        return instant
    return None


def next_fire_after(
    cron: str,
    tz: str | ZoneInfo,
    after: datetime,
    dst_policy: str = SHIFT_FORWARD_FIRST,
) -> datetime | None:
    """The first fire instant strictly after ``after``, or None (see :func:`next_fires`).

    Memoised on its arguments: at a minute boundary thousands of schedules
    share a (cron, zone, nominal time) and cost one computation.
    """
    _check_policy(dst_policy)
    return _next_fire_cached(cron, _as_zone(tz), _utc(after, "after"), dst_policy)


def fires_between(
    cron: str,
    tz: str | ZoneInfo,
    start: datetime,
    end: datetime,
    dst_policy: str = SHIFT_FORWARD_FIRST,
    *,
    limit: int | None = None,
) -> list[datetime]:
    """Nominal fire instants in ``(start, end]`` (aware UTC, increasing), at most
    ``limit`` of them (the earliest) if given.

    The leader's tick calls this with a window of about a second, and catch-up
    with the schedule's catch-up window.
    """
    spec, zone = parse_cron(cron), _as_zone(tz)
    _check_policy(dst_policy)
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start or limit == 0:
        return []
    quick = _short_window(spec, zone, start, end)
    if quick is not None:
        return quick
    out: list[datetime] = []
    for instant in _iter_fires(spec, zone, start, dst_policy):
        if instant > end:
            break
        out.append(instant)
        if limit is not None and len(out) >= limit:
            break
    return out


def _short_window(
    spec: CronSpec, zone: ZoneInfo, start: datetime, end: datetime
) -> list[datetime] | None:
    """Answer a tick-sized window without walking the cron, or None to walk it.

    With the same offset at both ends of a window under a minute no transition
    lies inside (tzdata has none that close together), so the wall clock ran
    straight and the only candidate is the one whole wall minute in it.
    """
    if end - start > _MINUTE:
        return None
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    if local_start.utcoffset() != local_end.utcoffset():
        return None
    wall_start = local_start.replace(tzinfo=None)
    candidate = local_end.replace(tzinfo=None, second=0, microsecond=0)
    if candidate <= wall_start or not spec.matches(candidate):
        return []
    instant, odd = _resolve(candidate, zone)
    if odd is not None:
        return None  # a repeated hour: let the full rules decide
    return [instant] if start < instant <= end else []


# ---------------------------------------------------------------------------
# FireCalendar
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    cron: str
    zone: ZoneInfo
    policy: str
    #: Every fire at or before this instant has been handled.
    cursor: datetime
    next: datetime | None
    token: int


class FireCalendar:
    """Each schedule's next fire, kept in a heap, so a tick touches only the
    schedules that are due instead of asking all of them.

    Pure and single-threaded (the leader's tick owns it). The leader reads
    :meth:`due`, writes each fire record, then calls :meth:`advance` for it;
    a fire whose write failed is simply due again at the next tick, and the
    fire ledger's unique key makes writing it twice harmless.
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        # (next fire as epoch seconds, sequence, token, schedule id). The
        # sequence breaks ties so ids are never compared; a token that no longer
        # matches the entry's marks a stale heap item, dropped lazily.
        self._heap: list[tuple[float, int, int, Hashable]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, schedule_id: object) -> bool:
        return schedule_id in self._entries

    def upsert(
        self,
        schedule_id: Hashable,
        cron: str,
        tz: str | ZoneInfo,
        *,
        after: datetime,
        dst_policy: str = SHIFT_FORWARD_FIRST,
    ) -> datetime | None:
        """Track a schedule, or replace its definition; fires strictly after
        ``after`` (usually its last handled nominal time, or now) become due.
        Returns its next fire. Raises InvalidInput for a bad cron, zone or policy."""
        parse_cron(cron)
        zone = _as_zone(tz)
        _check_policy(dst_policy)
        after = _utc(after, "after")
        old = self._entries.get(schedule_id)
        if old is not None and (old.cron, old.zone, old.policy) == (cron, zone, dst_policy):
            # Unchanged definition (the leader re-reads schedules often): keep
            # the cursor, so a reload never makes a handled fire due again.
            return self.advance(schedule_id, after)
        entry = _Entry(cron, zone, dst_policy, after, None, old.token + 1 if old else 0)
        self._entries[schedule_id] = entry
        self._reschedule(schedule_id, entry)
        return entry.next

    def remove(self, schedule_id: Hashable) -> None:
        """Stop tracking a schedule (disabled or deleted). Unknown ids are ignored."""
        self._entries.pop(schedule_id, None)
        self._drop_stale()

    def next_fire(self, schedule_id: Hashable) -> datetime | None:
        """The schedule's next unhandled fire (None if it has none in the horizon)."""
        return self._entries[schedule_id].next

    def wake_at(self) -> datetime | None:
        """The earliest unhandled fire of any schedule: the leader may sleep until then."""
        self._drop_stale()
        return datetime.fromtimestamp(self._heap[0][0], UTC) if self._heap else None

    def due(self, now: datetime, *, per_schedule: int = 1000) -> list[tuple[Hashable, datetime]]:
        """Every unhandled (schedule_id, nominal) with nominal <= ``now``, by
        nominal time. Does not change the calendar. A schedule that is behind
        (the leader stalled) contributes each missed fire, at most
        ``per_schedule`` of them."""
        now = _utc(now, "now")
        now_ts = now.timestamp()
        heap, out = self._heap, []
        # Walk only the heap's top: a child is never earlier than its parent.
        stack = [0]
        while stack:
            i = stack.pop()
            if i >= len(heap) or heap[i][0] > now_ts:
                continue
            stack += (2 * i + 1, 2 * i + 2)
            _, _, token, schedule_id = heap[i]
            entry = self._entries.get(schedule_id)
            if entry is None or entry.token != token or entry.next is None:
                continue
            out.append((schedule_id, entry.next))
            if per_schedule > 1:
                more = fires_between(
                    entry.cron, entry.zone, entry.next, now, entry.policy, limit=per_schedule - 1
                )
                out.extend((schedule_id, nominal) for nominal in more)
        out.sort(key=lambda item: item[1])
        return out

    def advance(self, schedule_id: Hashable, nominal: datetime) -> datetime | None:
        """Mark every fire of the schedule at or before ``nominal`` handled (fired,
        skipped or recorded missed); return its next fire. Idempotent; moving
        back is ignored."""
        entry = self._entries[schedule_id]
        nominal = _utc(nominal, "nominal")
        if nominal > entry.cursor:
            entry.cursor = nominal
            entry.token += 1
            self._reschedule(schedule_id, entry)
        return entry.next

    def _reschedule(self, schedule_id: Hashable, entry: _Entry) -> None:
        entry.next = _next_fire_cached(entry.cron, entry.zone, entry.cursor, entry.policy)
        if entry.next is not None:
            self._seq += 1
            heapq.heappush(
                self._heap, (entry.next.timestamp(), self._seq, entry.token, schedule_id)
            )
        self._drop_stale()

    def _drop_stale(self) -> None:
        heap = self._heap
        if len(heap) > 2 * len(self._entries) + 64:
            # Stale items below the top would otherwise pile up when schedules
            # change or go away long before their next fire.
            live = self._entries
            heap[:] = [item for item in heap if (e := live.get(item[3])) and e.token == item[2]]
            heapq.heapify(heap)
        while heap:
            _, _, token, schedule_id = heap[0]
            entry = self._entries.get(schedule_id)
            if entry is not None and entry.token == token:
                return
            heapq.heappop(heap)
