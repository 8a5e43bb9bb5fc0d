"""Cost of the leader's schedule tick for many schedules (pure CPU, no I/O).

Makes S schedules (default 10,000): a mix of every minute, every N minutes,
hourly, daily and weekly crons over a dozen time zones, then measures

* the naive tick: for every schedule, ``fires_between`` over the last second
  and ``next_fire_after``; once in the middle of a minute and once on a minute
  boundary (when every-minute schedules fire), next-fire memo cold;
* the FireCalendar tick: ``due(now)`` then ``advance`` for each due fire, one
  tick per simulated second for ``--seconds`` seconds; mean, p50, p99 and max.
  Run twice: with the next-fire memo (schedules sharing a cron and zone share
  one computation) and with the memo cleared before every tick (as if no two
  schedules were alike).

    python bench/schedule_tick.py --schedules 10000 --seconds 3600
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rota.domain import schedules as sch  # noqa: E402

ZONES = [
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]


def make_schedules(count: int, seed: int) -> list[tuple[int, str, str]]:
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        kind = rnd.random()
        if kind < 0.30:
            cron = "* * * * *"
        elif kind < 0.45:
            cron = f"*/{rnd.choice([2, 5, 10, 15, 30])} * * * *"
        elif kind < 0.65:
            cron = f"{rnd.randrange(60)} * * * *"
        elif kind < 0.90:
            cron = f"{rnd.randrange(60)} {rnd.randrange(24)} * * *"
        else:
            cron = f"{rnd.randrange(60)} {rnd.randrange(24)} * * {rnd.randrange(7)}"
        out.append((i, cron, rnd.choice(ZONES)))
    return out


def naive_tick(scheds: list[tuple[int, str, str]], now: datetime) -> tuple[float, int]:
    sch._next_fire_cached.cache_clear()
    t0 = time.perf_counter()
    fired = 0
    before = now - timedelta(seconds=1)
    for _, cron, tz in scheds:
        fired += len(sch.fires_between(cron, tz, before, now))
        sch.next_fire_after(cron, tz, now)
    return (time.perf_counter() - t0) * 1000, fired


def calendar_run(
    scheds: list[tuple[int, str, str]], start: datetime, seconds: int, memo: bool
) -> dict[str, float]:
    sch._next_fire_cached.cache_clear()
    calendar = sch.FireCalendar()
    t0 = time.perf_counter()
    for sid, cron, tz in scheds:
        calendar.upsert(sid, cron, tz, after=start)
    build_ms = (time.perf_counter() - t0) * 1000
    ticks, fires, worst_fires = [], 0, 0
    for s in range(1, seconds + 1):
        now = start + timedelta(seconds=s)
        if not memo:
            sch._next_fire_cached.cache_clear()
        t0 = time.perf_counter()
        due = calendar.due(now)
        for schedule_id, nominal in due:
            calendar.advance(schedule_id, nominal)
        ticks.append((time.perf_counter() - t0) * 1000)
        fires += len(due)
        worst_fires = max(worst_fires, len(due))
    ticks.sort()
    return {
        "build_ms": build_ms,
        "mean": statistics.fmean(ticks),
        "p50": ticks[len(ticks) // 2],
        "p99": ticks[int(len(ticks) * 0.99)],
        "max": ticks[-1],
        "fires": fires,
        "worst_fires": worst_fires,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=3600, help="simulated 1-second ticks")
    parser.add_argument(
        "--start",
        default="2026-03-08T06:30:00+00:00",
        help="first instant (default: half an hour before New York's spring-forward)",
    )
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()

    start = datetime.fromisoformat(args.start).astimezone(UTC)
    scheds = make_schedules(args.schedules, args.seed)
    for _, cron, tz in scheds:  # parse and zone caches warm, as in a running leader
        sch.parse_cron(cron)
        sch.validate_timezone(tz)
    print(f"{len(scheds)} schedules, {len({(c, z) for _, c, z in scheds})} distinct (cron, zone)")

    mid = start.replace(second=30, microsecond=0)
    boundary = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for label, now in (("mid-minute", mid), ("minute boundary", boundary)):
        ms, fired = naive_tick(scheds, now)
        print(f"naive tick, {label:15}: {ms:8.1f} ms  ({fired} fires)")

    # Raw cost of one next fire with nothing memoised (a croniter step dominates).
    sample = scheds[:2000]
    t0 = time.perf_counter()
    for i, (_, cron, tz) in enumerate(sample):
        sch.next_fire_after(cron, tz, start + timedelta(seconds=i * 7 + 1))
    per_call = (time.perf_counter() - t0) / len(sample) * 1e6
    print(f"next_fire_after, nothing memoised: {per_call:.1f} us per call")

    for memo in (True, False):
        r = calendar_run(scheds, start, args.seconds, memo)
        label = "with next-fire memo" if memo else "memo cleared each tick"
        print(
            f"FireCalendar, {label}: build {r['build_ms']:.0f} ms; per tick over "
            f"{args.seconds} ticks: mean {r['mean']:.2f} ms, p50 {r['p50']:.2f} ms, "
            f"p99 {r['p99']:.2f} ms, max {r['max']:.1f} ms "
            f"({r['fires']:.0f} fires, at most {r['worst_fires']:.0f} in one tick)"
        )


if __name__ == "__main__":
    main()
