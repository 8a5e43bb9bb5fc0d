"""Schedules: cron validation, the structured form, and fire times across DST.

The DST properties compare rota's fire times against a brute-force reference
that walks every UTC minute, reads the local wall clock, and applies the rules
of the module docstring directly. It knows nothing of croniter or of rota's
parser: schedules are drawn as value sets and written out as cron text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rota.domain.schedules import (
    SHIFT_FORWARD_FIRST,
    SKIP_NONEXISTENT,
    FireCalendar,
    compile_structured,
    describe,
    fires_between,
    is_cadence,
    next_fire_after,
    next_fires,
    structured_from_cron,
    validate_cron,
    validate_dst_policy,
    validate_structured,
    validate_timezone,
)
from rota.errors import InvalidInput

NY = "America/New_York"
BERLIN = "Europe/Berlin"
LORD_HOWE = "Australia/Lord_Howe"  # DST moves the clock by 30 minutes
# Santiago: its clocks change at midnight, so the repeated hour spans two dates.
ZONES = [NY, BERLIN, LORD_HOWE, "America/Santiago"]
MINUTE = timedelta(minutes=1)
ALL_MINUTES = frozenset(range(60))
ALL_HOURS = frozenset(range(24))
ALL_DOMS = frozenset(range(1, 32))
ALL_MONTHS = frozenset(range(1, 13))
ALL_DOWS = frozenset(range(7))


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(tz: str, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """The UTC instant of a local wall time (its first occurrence)."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).astimezone(UTC)


# ---------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------


class Sched:
    """A schedule as value sets, and its cron text."""

    def __init__(
        self,
        minutes: frozenset[int],
        hours: frozenset[int] = ALL_HOURS,
        doms: frozenset[int] = ALL_DOMS,
        dows: frozenset[int] = ALL_DOWS,
        months: frozenset[int] = ALL_MONTHS,
    ) -> None:
        self.minutes, self.hours, self.doms, self.dows, self.months = (
            minutes,
            hours,
            doms,
            dows,
            months,
        )

    @property
    def cron(self) -> str:
        def text(values: frozenset[int], full: frozenset[int]) -> str:
            return "*" if values == full else ",".join(map(str, sorted(values)))

        return " ".join(
            [
                text(self.minutes, ALL_MINUTES),
                text(self.hours, ALL_HOURS),
                text(self.doms, ALL_DOMS),
                text(self.months, ALL_MONTHS),
                text(self.dows, ALL_DOWS),
            ]
        )

    @property
    def cadence(self) -> bool:
        return self.hours == ALL_HOURS

    def matches(self, wall: datetime) -> bool:
        if wall.minute not in self.minutes or wall.hour not in self.hours:
            return False
        if wall.month not in self.months:
            return False
        dom = wall.day in self.doms
        dow = (wall.weekday() + 1) % 7 in self.dows  # Monday is 0 to Python
        if self.doms != ALL_DOMS and self.dows != ALL_DOWS:
            return dom or dow
        return dom and dow

    def __repr__(self) -> str:
        return f"Sched({self.cron!r})"


def reference(sched: Sched, tz: str, start: datetime, end: datetime, policy: str) -> list[datetime]:
    """Fire instants in (start, end], straight from the rules, minute by minute."""
    zone = ZoneInfo(tz)
    t = start.replace(second=0, microsecond=0) + MINUTE
    prev_wall = (t - MINUTE).astimezone(zone).replace(tzinfo=None)
    out = []
    while t <= end:
        here = t.astimezone(zone)
        wall = here.replace(tzinfo=None)
        # fold=1: the second time this wall time happens (fall-back).
        fires = sched.matches(wall) and (here.fold == 0 or sched.cadence)
        if policy == SHIFT_FORWARD_FIRST and not fires:
            # The wall clock jumped: the wall minutes it skipped do not exist
            # and fire now, at the first instant after them.
            skipped = prev_wall + MINUTE
            while skipped < wall and not fires:
                fires = sched.matches(skipped)
                skipped += MINUTE
        if fires:
            out.append(t)
        prev_wall = wall
        t += MINUTE
    return out


@cache
def transitions(tz: str) -> tuple[datetime, ...]:
    """Every instant in 2024-2031 at which ``tz``'s UTC offset changes."""
    zone = ZoneInfo(tz)
    found = []
    t = utc(2024, 1, 1)
    offset = t.astimezone(zone).utcoffset()
    step = timedelta(hours=1)
    while t < utc(2031, 1, 1):
        nxt = t + step
        if nxt.astimezone(zone).utcoffset() != offset:
            # Narrow down to the minute.
            lo = t
            while nxt - lo > MINUTE:
                mid = lo + (nxt - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid.astimezone(zone).utcoffset() == offset:
                    lo = mid
                else:
                    nxt = mid
            found.append(nxt)
            offset = nxt.astimezone(zone).utcoffset()
        t = nxt
    return tuple(found)


def test_reference_transitions_are_the_known_ones() -> None:
    ny = transitions(NY)
    assert utc(2026, 3, 8, 7) in ny and utc(2026, 11, 1, 6) in ny
    assert utc(2026, 10, 3, 15, 30) in transitions(LORD_HOWE)  # 02:00 +10:30 → 02:30 +11
    assert len(transitions(BERLIN)) == 14


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

small_sets = lambda lo, hi, n: st.frozensets(  # noqa: E731
    st.integers(lo, hi), min_size=1, max_size=n
)

daily = st.builds(
    lambda m, h: Sched(frozenset({m}), frozenset({h})), st.integers(0, 59), st.integers(0, 23)
)
hourly = st.builds(lambda m: Sched(frozenset({m})), st.integers(0, 59))
every_n = st.builds(lambda n: Sched(frozenset(range(0, 60, n))), st.integers(1, 59))
weekly = st.builds(
    lambda m, h, d: Sched(frozenset({m}), frozenset({h}), dows=d),
    st.integers(0, 59),
    st.integers(0, 23),
    small_sets(0, 6, 3),
)
# Hours near the transitions, odd minute sets, and day-of-month OR day-of-week.
mixed = st.builds(
    Sched,
    small_sets(0, 59, 4),
    small_sets(0, 4, 3) | st.just(ALL_HOURS),
    small_sets(1, 31, 8) | st.just(ALL_DOMS),
    small_sets(0, 6, 3) | st.just(ALL_DOWS),
)
schedules = st.one_of(daily, hourly, every_n, weekly, mixed)
policies = st.sampled_from([SHIFT_FORWARD_FIRST, SKIP_NONEXISTENT])


@st.composite
def around_transition(
    draw: st.DrawFn, before: float = 26, after: float = 4
) -> tuple[str, datetime]:
    """A zone and an instant from ``before`` hours before to ``after`` hours after
    one of its DST transitions in 2024-2030 (seconds included: ticks are not
    whole minutes)."""
    tz = draw(st.sampled_from(ZONES))
    moment = draw(st.sampled_from(transitions(tz)))
    shift = timedelta(seconds=draw(st.integers(int(-before * 3600), int(after * 3600))))
    micro = timedelta(microseconds=draw(st.sampled_from([0, 0, 1, 500_000])))
    return tz, moment + shift + micro


# ---------------------------------------------------------------------------
# Properties across DST
# ---------------------------------------------------------------------------

DST_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@DST_SETTINGS
@given(
    sched=schedules,
    where=around_transition(),
    hours=st.integers(1, 30),
    policy=policies,
)
def test_fires_between_follows_the_reference(
    sched: Sched, where: tuple[str, datetime], hours: int, policy: str
) -> None:
    tz, start = where
    end = start + timedelta(hours=hours)
    expected = reference(sched, tz, start, end, policy)
    got = fires_between(sched.cron, tz, start, end, policy)
    assert got == expected
    assert all(t.tzinfo is UTC for t in got)


@DST_SETTINGS
@given(sched=schedules, where=around_transition(), policy=policies)
def test_next_fires_follows_the_reference(
    sched: Sched, where: tuple[str, datetime], policy: str
) -> None:
    tz, after = where
    got = next_fires(sched.cron, tz, after, 6, policy)
    assert len(got) == 6
    # Strictly increasing, strictly after ``after``: never doubled.
    assert all(a < b for a, b in zip([after, *got], got, strict=False))
    # Nothing skipped: the reference over the same span finds exactly these.
    assert reference(sched, tz, after, got[-1], policy) == got
    assert next_fire_after(sched.cron, tz, after, policy) == got[0]
    # Resuming from any fire continues the same sequence.
    assert next_fires(sched.cron, tz, got[1], 4, policy) == got[2:]


@settings(max_examples=40, deadline=None)
@given(
    scheds=st.lists(schedules, min_size=1, max_size=4),
    where=around_transition(),
    policy=policies,
    steps=st.lists(st.integers(1, 150), min_size=20, max_size=60),
)
def test_fire_calendar_ticks_match_the_reference(
    scheds: list[Sched], where: tuple[str, datetime], policy: str, steps: list[int]
) -> None:
    """Ticking a FireCalendar at uneven intervals yields each fire exactly once."""
    tz, start = where
    calendar = FireCalendar()
    for i, sched in enumerate(scheds):
        calendar.upsert(i, sched.cron, tz, after=start, dst_policy=policy)
    seen: dict[int, list[datetime]] = {i: [] for i in range(len(scheds))}
    now = start
    for step in steps:
        now += timedelta(seconds=step * 37)
        due = calendar.due(now)
        assert due == calendar.due(now)  # reading does not change the calendar
        assert [n for _, n in due] == sorted(n for _, n in due)
        for schedule_id, nominal in due:
            assert isinstance(schedule_id, int)
            seen[schedule_id].append(nominal)
            calendar.advance(schedule_id, nominal)
        assert calendar.due(now) == []
    for i, sched in enumerate(scheds):
        assert seen[i] == reference(sched, tz, start, now, policy)


@settings(max_examples=40, deadline=None)
@given(
    sched=schedules,
    where=around_transition(before=1.5, after=0.5),
    policy=policies,
    minutes=st.integers(1, 100),
)
def test_one_second_ticks_see_every_fire_once(
    sched: Sched, where: tuple[str, datetime], policy: str, minutes: int
) -> None:
    """The leader's tick: back-to-back one-second windows (the short-window path)."""
    tz, start = where
    got = []
    for s in range(minutes * 60):
        got += fires_between(
            sched.cron, tz, start + timedelta(seconds=s), start + timedelta(seconds=s + 1), policy
        )
    assert got == reference(sched, tz, start, start + timedelta(minutes=minutes), policy)


# ---------------------------------------------------------------------------
# DST examples
# ---------------------------------------------------------------------------


def test_new_york_spring_forward_daily_0230_fires_once_at_0300_edt() -> None:
    fires = next_fires("30 2 * * *", NY, utc(2026, 3, 6, 12), 3)
    assert fires == [
        local(NY, 2026, 3, 7, 2, 30),  # 07:30Z (EST)
        utc(2026, 3, 8, 7, 0),  # 02:30 does not exist: 03:00 EDT, once
        local(NY, 2026, 3, 9, 2, 30),  # 06:30Z (EDT)
    ]
    assert fires[1].astimezone(ZoneInfo(NY)).strftime("%H:%M %Z") == "03:00 EDT"


def test_new_york_spring_forward_skip_nonexistent() -> None:
    fires = next_fires("30 2 * * *", NY, utc(2026, 3, 6, 12), 2, SKIP_NONEXISTENT)
    assert fires == [local(NY, 2026, 3, 7, 2, 30), local(NY, 2026, 3, 9, 2, 30)]


def test_new_york_fall_back_daily_0130_fires_once_at_first_occurrence() -> None:
    fires = fires_between("30 1 * * *", NY, utc(2026, 10, 31, 12), utc(2026, 11, 2, 0))
    assert fires == [utc(2026, 11, 1, 5, 30)]  # 01:30 EDT; not again at 06:30Z (EST)


def test_lord_howe_spring_forward_0215_fires_at_0230() -> None:
    # 2026-10-04 02:00 +10:30 becomes 02:30 +11: 02:15 does not exist.
    fires = next_fires("15 2 * * *", LORD_HOWE, utc(2026, 10, 2, 12), 3)
    assert fires == [
        local(LORD_HOWE, 2026, 10, 3, 2, 15),
        utc(2026, 10, 3, 15, 30),
        local(LORD_HOWE, 2026, 10, 5, 2, 15),
    ]
    assert fires[1].astimezone(ZoneInfo(LORD_HOWE)).strftime("%H:%M%z") == "02:30+1100"


def test_lord_howe_fall_back_half_hour_repeat() -> None:
    # 2026-04-05 02:00 +11 becomes 01:30 +10:30: 01:30-02:00 happens twice.
    daily = fires_between("45 1 * * *", LORD_HOWE, utc(2026, 4, 4, 12), utc(2026, 4, 5, 0))
    assert daily == [local(LORD_HOWE, 2026, 4, 5, 1, 45)]  # +11, first occurrence
    cadence = fires_between("*/15 * * * *", LORD_HOWE, utc(2026, 4, 4, 14), utc(2026, 4, 4, 16))
    assert [b - a for a, b in zip(cadence, cadence[1:], strict=False)] == [
        timedelta(minutes=15)
    ] * (len(cadence) - 1)


def test_berlin_both_transitions() -> None:
    spring = fires_between("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
    assert spring == [utc(2026, 3, 29, 1, 0)]  # 03:00 CEST
    autumn = fires_between("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert autumn == [utc(2026, 10, 25, 0, 30)]  # 02:30 CEST, the first one


def test_cadence_fires_through_the_repeated_hour_every_15_minutes() -> None:
    fires = fires_between("*/15 * * * *", NY, utc(2026, 11, 1, 4, 50), utc(2026, 11, 1, 7, 10))
    assert fires == [utc(2026, 11, 1, 5, 0) + timedelta(minutes=15 * i) for i in range(9)]
    # Eight of them in the repeated hour 01:00-02:00 local.
    walls = [f.astimezone(ZoneInfo(NY)).strftime("%H:%M") for f in fires]
    assert walls == ["01:00", "01:15", "01:30", "01:45"] * 2 + ["02:00"]


def test_cadence_hourly_fires_both_occurrences_wall_clock_once() -> None:
    window = (utc(2026, 11, 1, 4), utc(2026, 11, 1, 8))
    assert fires_between("30 * * * *", NY, *window) == [
        utc(2026, 11, 1, h, 30) for h in (4, 5, 6, 7)
    ]
    # Hours named: wall-clock semantics, first occurrence only.
    assert fires_between("*/15 1 * * *", NY, *window) == [
        utc(2026, 11, 1, 5, m) for m in (0, 15, 30, 45)
    ]
    assert is_cadence("30 * * * *") and not is_cadence("*/15 1 * * *")


def test_cadence_spring_forward_has_no_hole_and_no_double() -> None:
    fires = fires_between("*/15 * * * *", NY, utc(2026, 3, 8, 6, 20), utc(2026, 3, 8, 7, 20))
    assert fires == [utc(2026, 3, 8, 6, m) for m in (30, 45)] + [
        utc(2026, 3, 8, 7, m) for m in (0, 15)
    ]
    # Hourly at :30: the missing 02:30 fires at 03:00 under the default policy.
    assert fires_between("30 * * * *", NY, utc(2026, 3, 8, 6), utc(2026, 3, 8, 8)) == [
        utc(2026, 3, 8, 6, 30),
        utc(2026, 3, 8, 7, 0),
        utc(2026, 3, 8, 7, 30),
    ]
    assert fires_between(
        "30 * * * *", NY, utc(2026, 3, 8, 6), utc(2026, 3, 8, 8), SKIP_NONEXISTENT
    ) == [utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)]


def test_after_inside_the_repeated_hour() -> None:
    # ``after`` at 01:30 EDT: the EST repeats of 01:00 and 01:15 are still ahead.
    fires = next_fires("*/15 * * * *", NY, utc(2026, 11, 1, 5, 30), 4)
    assert fires == [utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 6, 0)] + [
        utc(2026, 11, 1, 6, 15),
        utc(2026, 11, 1, 6, 30),
    ]
    # ``after`` at 01:20 EST: a daily 01:30 already fired (EDT).
    assert next_fires("30 1 * * *", NY, utc(2026, 11, 1, 6, 20), 1) == [utc(2026, 11, 2, 6, 30)]


def test_window_bounds_and_inputs() -> None:
    # (start, end]: a fire at start is excluded, one at end included.
    assert fires_between("0 * * * *", "UTC", utc(2026, 1, 1, 0), utc(2026, 1, 1, 2)) == [
        utc(2026, 1, 1, 1),
        utc(2026, 1, 1, 2),
    ]
    assert fires_between("0 * * * *", "UTC", utc(2026, 1, 1, 2), utc(2026, 1, 1, 0)) == []
    assert len(fires_between("* * * * *", "UTC", utc(2026, 1, 1), utc(2026, 1, 2), limit=5)) == 5
    # Any aware ``after`` works; results are UTC.
    berlin_noon = datetime(2026, 1, 1, 12, tzinfo=ZoneInfo(BERLIN))
    assert next_fires("0 12 * * *", BERLIN, berlin_noon, 1) == [utc(2026, 1, 2, 11)]
    with pytest.raises(TypeError):
        next_fires("* * * * *", "UTC", datetime(2026, 1, 1), 1)
    with pytest.raises(InvalidInput):
        next_fires("* * * * *", "UTC", utc(2026, 1, 1), 1, "later")
    assert next_fires("* * * * *", "UTC", utc(2026, 1, 1), 0) == []


def test_feb_29_and_month_end() -> None:
    assert next_fires("0 0 29 2 *", "UTC", utc(2026, 1, 1), 2) == [
        utc(2028, 2, 29),
        utc(2032, 2, 29),
    ]
    assert [f.month for f in next_fires("0 0 31 * *", "UTC", utc(2026, 1, 1), 4)] == [
        1,
        3,
        5,
        7,
    ]


# ---------------------------------------------------------------------------
# Cron text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 25 * * *", "cron field 2 (hour) '25' is out of range 0-23"),
        ("60 * * * *", "cron field 1 (minute) '60' is out of range 0-59"),
        ("0 0 0 * *", "cron field 3 (day-of-month) '0' is out of range 1-31"),
        ("0 0 * 13 *", "cron field 4 (month) '13' is out of range 1-12 or jan-dec"),
        ("0 0 * * 8", "cron field 5 (day-of-week) '8' is out of range 0-7"),
        ("0 0 * foo *", "cron field 4 (month) 'foo' is not a number or a month name"),
        ("0 0 * * funday", "cron field 5 (day-of-week) 'funday' is not a number or a day name"),
        ("*/0 * * * *", "step '0' in '*/0' must be at least 1"),
        ("*/x * * * *", "step 'x' in '*/x' is not a number"),
        ("0 5-1 * * *", "cron field 2 (hour) range '5-1' runs backwards"),
        ("1,,2 * * * *", "'1,,2' has an empty list item"),
        ("-5 * * * *", "'-5' is not a valid range"),
        ("0 0 L * *", "cron field 3 (day-of-month) 'l' is not a number"),
        ("0 0 * * 1#2", "cron field 5 (day-of-week) '1#2' is not a number"),
        ("H * * * *", "cron field 1 (minute) 'h' is not a number"),
        ("0 0 * *", "has 4 fields; rota takes exactly 5"),
        ("0 0 0 * * *", "has 6 fields; rota takes exactly 5: minute hour day-of-month"),
        ("0 0 0 * * * 2030", "(no seconds or years field)"),
        ("", "cron expression is empty"),
        ("@reboot", "alias '@reboot' is not supported"),
        ("0 0 31 4 *", "never matches a real date"),
        ("0 0 30 2 *", "never matches a real date"),
    ],
)
def test_cron_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_cron(text)
    assert message in info.value.message
    assert info.value.field == "cron"


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("  0   9 * *  MON-FRI ", "0 9 * * mon-fri"),
        ("@daily", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@MONTHLY", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("*/15\t* * * *", "*/15 * * * *"),
    ],
)
def test_cron_normalised(text: str, normal: str) -> None:
    assert validate_cron(text) == normal


def _days(cron: str, n: int = 10) -> list[tuple[int, int]]:
    return [(f.month, f.day) for f in next_fires(cron, "UTC", utc(2026, 1, 1), n)]


def test_cron_day_rules() -> None:
    # 2026-01-04 is a Sunday.
    sundays = _days("0 9 * * 0", 3)
    assert sundays == [(1, 4), (1, 11), (1, 18)]
    assert _days("0 9 * * 7", 3) == sundays
    assert _days("0 9 * * sun", 3) == sundays
    assert _days("0 9 * * 7-7", 3) == sundays  # croniter reads this as every day
    assert _days("0 9 * * 5-7", 3) == [(1, 2), (1, 3), (1, 4)]
    assert _days("0 9 * * mon-sun", 3) == _days("0 9 * * *", 3)
    # Both restricted: either matches (the 1st, the 15th, and Mondays).
    assert _days("0 9 1,15 * mon", 4) == [(1, 1), (1, 5), (1, 12), (1, 15)]
    # A full range does not restrict: Mondays only.
    assert _days("0 9 1-31 * mon", 2) == [(1, 5), (1, 12)]
    assert _days("0 9 */1 * mon", 2) == [(1, 5), (1, 12)]
    assert _days("0 9 * jan-feb/1 *", 1) == [(1, 1)]
    # "a/n" steps from a to the end of the field.
    assert [f.minute for f in next_fires("50/5 * * * *", "UTC", utc(2026, 1, 1), 3)] == [
        50,
        55,
        50,
    ]


# ---------------------------------------------------------------------------
# Structured form
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "cron"),
    [
        ({"every": "minutes", "n": 1}, "* * * * *"),
        ({"every": "minutes", "n": 5}, "*/5 * * * *"),
        ({"every": "minutes", "n": 59}, "*/59 * * * *"),
        ({"every": "hour", "minute": 0}, "0 * * * *"),
        ({"every": "hour", "minute": 45}, "45 * * * *"),
        ({"every": "day", "time": "09:30"}, "30 9 * * *"),
        ({"every": "day", "time": "0:00"}, "0 0 * * *"),
        ({"every": "week", "days": ["fri", "Mon", "mon"], "time": "23:59"}, "59 23 * * 1,5"),
        ({"every": "week", "days": ["sunday", "sat"], "time": "07:05"}, "5 7 * * 0,6"),
        ({"every": "month", "day": 31, "time": "12:00"}, "0 12 31 * *"),
    ],
)
def test_compile_structured(form: dict, cron: str) -> None:
    assert compile_structured(form) == cron
    assert validate_cron(cron) == cron
    assert structured_from_cron(cron) == validate_structured(form)


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ("daily", "structured"),
        ({}, "structured.every"),
        ({"every": "year"}, "structured.every"),
        ({"every": "minutes"}, "structured.n"),
        ({"every": "minutes", "n": 0}, "structured.n"),
        ({"every": "minutes", "n": 60}, "structured.n"),
        ({"every": "minutes", "n": True}, "structured.n"),
        ({"every": "minutes", "n": "5"}, "structured.n"),
        ({"every": "minutes", "n": 5, "time": "09:00"}, "structured.time"),
        ({"every": "hour", "minute": 60}, "structured.minute"),
        ({"every": "day"}, "structured.time"),
        ({"every": "day", "time": "24:00"}, "structured.time"),
        ({"every": "day", "time": "9.30"}, "structured.time"),
        ({"every": "day", "time": 930}, "structured.time"),
        ({"every": "week", "time": "09:00"}, "structured.days"),
        ({"every": "week", "days": [], "time": "09:00"}, "structured.days"),
        ({"every": "week", "days": ["mon", "someday"], "time": "09:00"}, "structured.days"),
        ({"every": "week", "days": "mon", "time": "09:00"}, "structured.days"),
        ({"every": "month", "day": 32, "time": "09:00"}, "structured.day"),
        ({"every": "month", "time": "09:00"}, "structured.day"),
    ],
)
def test_structured_errors_name_the_key(form: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        compile_structured(form)  # type: ignore[arg-type]
    assert info.value.field == field
    assert info.value.message.startswith(field)


structured_forms = st.one_of(
    st.fixed_dictionaries({"every": st.just("minutes"), "n": st.integers(1, 59)}),
    st.fixed_dictionaries({"every": st.just("hour"), "minute": st.integers(0, 59)}),
    st.fixed_dictionaries(
        {
            "every": st.sampled_from(["day", "week", "month"]),
            "time": st.builds("{:02d}:{:02d}".format, st.integers(0, 23), st.integers(0, 59)),
            "days": st.lists(st.sampled_from(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])),
            "day": st.integers(1, 31),
        }
    ).map(
        lambda f: (
            {k: v for k, v in f.items() if k in {"every", "time"}}
            | ({"days": f["days"] or ["mon"]} if f["every"] == "week" else {})
            | ({"day": f["day"]} if f["every"] == "month" else {})
        )
    ),
)


@settings(max_examples=150, deadline=None)
@given(form=structured_forms)
def test_structured_round_trips(form: dict) -> None:
    cron = compile_structured(form)
    assert validate_cron(cron) == cron
    back = structured_from_cron(cron)
    # A week with every day is a day; otherwise the same form comes back.
    if form["every"] == "week" and len(set(form["days"])) == 7:
        assert back == {"every": "day", "time": form["time"]}
    else:
        assert back == validate_structured(form)
    assert compile_structured(back) == cron
    assert describe(cron).startswith("every ")


def test_structured_from_cron_custom_and_describe() -> None:
    assert structured_from_cron("*/10 9-17 * * 1-5") is None
    assert structured_from_cron("5,35 * * * *") is None
    assert structured_from_cron("0 0 1 1 *") is None
    assert describe("*/10 9-17 * * 1-5") == "custom schedule (*/10 9-17 * * 1-5)"
    assert describe("* * * * *") == "every minute"
    assert describe("0,20,40 * * * *") == "every 20 minutes"
    assert describe("7 * * * *") == "every hour at :07"
    assert describe("30 9 * * 1-5") == "every week on Mon, Tue, Wed, Thu, Fri at 09:30"
    assert describe("0 0 1 * *") == "every month on day 1 at 00:00"


# ---------------------------------------------------------------------------
# Zones and policies
# ---------------------------------------------------------------------------


def test_validate_timezone() -> None:
    assert validate_timezone("Europe/Berlin") == "Europe/Berlin"
    assert validate_timezone(" UTC ") == "UTC"
    for bad in ["", "Mars/Olympus", "../etc/passwd", "/usr/share/zoneinfo/UTC", "Europe/"]:
        with pytest.raises(InvalidInput) as info:
            validate_timezone(bad)
        assert info.value.field == "timezone"
    with pytest.raises(InvalidInput):
        next_fires("* * * * *", "Nowhere/City", utc(2026, 1, 1), 1)


def test_validate_dst_policy() -> None:
    assert validate_dst_policy("shift_forward_first") == SHIFT_FORWARD_FIRST
    assert validate_dst_policy("skip_nonexistent") == SKIP_NONEXISTENT
    with pytest.raises(InvalidInput) as info:
        validate_dst_policy("both")
    assert info.value.field == "dst_policy"


# ---------------------------------------------------------------------------
# FireCalendar
# ---------------------------------------------------------------------------


def test_fire_calendar_due_and_advance() -> None:
    calendar = FireCalendar()
    start = utc(2026, 1, 1, 0, 0, 30)
    assert calendar.upsert("a", "* * * * *", "UTC", after=start) == utc(2026, 1, 1, 0, 1)
    assert calendar.upsert("b", "0 * * * *", BERLIN, after=start) == utc(2026, 1, 1, 1)
    assert len(calendar) == 2 and "a" in calendar
    assert calendar.wake_at() == utc(2026, 1, 1, 0, 1)
    assert calendar.due(utc(2026, 1, 1, 0, 0, 59)) == []
    # A leader that stalled for three minutes sees each missed fire.
    due = calendar.due(utc(2026, 1, 1, 0, 3, 10))
    assert due == [("a", utc(2026, 1, 1, 0, m)) for m in (1, 2, 3)]
    assert calendar.due(utc(2026, 1, 1, 0, 3, 10), per_schedule=2) == due[:2]
    # Advancing only the first: the rest stay due (a failed write retries).
    assert calendar.advance("a", due[0][1]) == utc(2026, 1, 1, 0, 2)
    assert calendar.due(utc(2026, 1, 1, 0, 3, 10)) == due[1:]
    assert calendar.advance("a", due[2][1]) == utc(2026, 1, 1, 0, 4)
    assert calendar.advance("a", due[0][1]) == utc(2026, 1, 1, 0, 4)  # never back
    # Re-reading an unchanged definition keeps the cursor.
    calendar.upsert("a", "* * * * *", "UTC", after=start)
    assert calendar.next_fire("a") == utc(2026, 1, 1, 0, 4)
    # A changed one starts from ``after``.
    calendar.upsert("a", "*/5 * * * *", "UTC", after=utc(2026, 1, 1, 0, 3))
    assert calendar.next_fire("a") == utc(2026, 1, 1, 0, 5)
    calendar.remove("a")
    calendar.remove("missing")
    assert calendar.due(utc(2026, 1, 1, 2)) == [
        ("b", utc(2026, 1, 1, 1)),
        ("b", utc(2026, 1, 1, 2)),
    ]
    assert calendar.wake_at() == utc(2026, 1, 1, 1)
    with pytest.raises(InvalidInput):
        calendar.upsert("c", "bad", "UTC", after=start)


def test_fire_calendar_heap_stays_small_under_reloads() -> None:
    calendar = FireCalendar()
    start = utc(2026, 1, 1)
    for round_ in range(50):
        for i in range(100):
            # Alternating definitions: every reload replaces the heap item.
            cron = "0 9 * * 1" if round_ % 2 else "0 10 * * 1"
            calendar.upsert(i, cron, "UTC", after=start)
    assert len(calendar._heap) <= 2 * len(calendar) + 65
    due = calendar.due(utc(2026, 1, 5, 9, 30))
    assert sorted(due) == [(i, utc(2026, 1, 5, 9)) for i in range(100)]
