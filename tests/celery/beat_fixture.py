"""A django-celery-beat database for the import test, made in its own process
with django-celery-beat's own migrations and models (rota's test process keeps
one database), and django-celery-beat's own fire times for its tasks.

``python -m tests.celery.beat_fixture URL T0 N`` builds the database at URL and
prints {task name: [the next N due times after T0, ISO, UTC]} as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime


def celery_fires(sched, after: datetime, n: int) -> list[str]:
    """The next ``n`` due times of a Celery schedule after ``after``, by
    Celery's own arithmetic (what beat computes after each run)."""
    out, last = [], after
    for _ in range(n):
        if hasattr(sched, "remaining_delta"):
            start, delta, _now = sched.remaining_delta(last)
        else:  # an interval: from the last run
            start, delta = last, sched.run_every
        nxt = start + delta
        out.append(nxt.astimezone(UTC).replace(microsecond=0).isoformat())
        last = nxt
    return out


def build(db: str, t0: datetime) -> None:
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
        SolarSchedule,
    )

    tokyo = CrontabSchedule.objects.using(db).create(
        minute="30",
        hour="*/2",
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone="Asia/Tokyo",
    )
    ny = CrontabSchedule.objects.using(db).create(
        minute="0,30",
        hour="1-3",
        day_of_week="sun",
        day_of_month="*",
        month_of_year="*",
        timezone="America/New_York",
    )
    every15 = IntervalSchedule.objects.using(db).create(every=15, period=IntervalSchedule.MINUTES)
    every7 = IntervalSchedule.objects.using(db).create(every=7, period=IntervalSchedule.MINUTES)
    clocked = ClockedSchedule.objects.using(db).create(
        clocked_time=datetime(2030, 1, 1, 12, tzinfo=UTC)
    )
    solar = SolarSchedule.objects.using(db).create(event="sunrise", latitude=35.0, longitude=139.0)
    make = PeriodicTask.objects.using(db).create
    make(name="tokyo", task="rt.report", crontab=tokyo, kwargs=json.dumps({"region": "jp"}))
    make(name="ny-sundays", task="rt.add", crontab=ny, args=json.dumps([1, 2]))
    make(name="quarterly-hour", task="rt.noop", interval=every15, kwargs='{"i": 4}', last_run_at=t0)
    make(name="off", task="rt.noop", crontab=tokyo, enabled=False)
    make(name="once", task="rt.noop", clocked=clocked, one_off=True)
    make(name="seven", task="rt.noop", interval=every7)
    make(name="sunrise", task="rt.noop", solar=solar)
    make(name="gone", task="rt.noop", crontab=tokyo, expires=datetime(2020, 1, 1, tzinfo=UTC))
    make(name="unknown", task="proj.missing", crontab=tokyo)


def main() -> None:
    url, t0, n = sys.argv[1], datetime.fromisoformat(sys.argv[2]), int(sys.argv[3])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rota.standalone.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from rota.celery.importer import ensure_beat_models

    db = ensure_beat_models(url)
    call_command("migrate", "django_celery_beat", database=db, verbosity=0)
    # Its save signal bumps a change counter on the default database (a scratch one here).
    call_command("migrate", "django_celery_beat", verbosity=0)
    build(db, t0)
    from django_celery_beat.models import PeriodicTask

    fires = {
        pt.name: celery_fires(pt.schedule, t0, n)
        for pt in PeriodicTask.objects.using(db).filter(
            name__in=["tokyo", "ny-sundays", "quarterly-hour", "off"]
        )
    }
    print(json.dumps(fires))


if __name__ == "__main__":
    main()
