"""The Celery app of rota's Celery tests: a real Celery 5 worker runs it
(``celery -A tests.celery.app worker``), on the Redis the tests start
(``ROTA_TEST_REDIS_URL``) as broker (db 0) and result backend (db 1)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery
from celery.schedules import crontab, schedule

_REDIS = os.environ.get("ROTA_TEST_REDIS_URL", "redis://127.0.0.1:6379")

app = Celery("rota_tests", broker=f"{_REDIS}/0", backend=f"{_REDIS}/1")
app.conf.update(
    task_track_started=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    timezone="UTC",
    result_expires=3600,
)
app.conf.beat_schedule = {
    "add-every-5-minutes": {
        "task": "rt.add",
        "schedule": schedule(300),
        "args": (1, 2),
    },
    "report-weekdays-at-9": {
        "task": "rt.report",
        "schedule": crontab(minute="0", hour="9", day_of_week="mon-fri"),
        "kwargs": {"region": "eu", "full": True},
    },
    "every-90-seconds": {"task": "rt.noop", "schedule": 90.0},
    "both-days": {
        "task": "rt.noop",
        "schedule": crontab(minute="0", hour="0", day_of_month="1", day_of_week="mon"),
    },
}


@app.task(name="rt.add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="rt.boom")
def boom(message: str = "bad") -> None:
    raise ValueError(message)


@app.task(name="rt.sleep")
def sleep(seconds: float, marker: str = "") -> str:
    """Appends its pid to ``marker`` (a line per execution), sleeps, then
    writes ``marker``.done."""
    if marker:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    if marker:
        Path(marker + ".done").write_text("done")
    return "slept"


@app.task(name="rt.noop")
def noop(i: int = 0) -> int:
    return i


@app.task(name="rt.report")
def report(region: str, full: bool = False, limit: int | None = None, **extra: object) -> str:
    return f"{region} {full} {limit}"


@app.task(name="rt.flaky", bind=True, max_retries=2, default_retry_delay=0.2)
def flaky(self, marker: str) -> str:
    """Fails twice (retried), then succeeds; the attempts are counted in ``marker``."""
    path = Path(marker)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    if n < 2:
        raise self.retry(exc=RuntimeError(f"attempt {n + 1} failed"))
    return f"ok after {n + 1}"


@app.task(name="rt.tick", bind=True)
def tick(self, log: str = "") -> str:
    """Appends its task id to ``log``: which run ran, how often (beat tests)."""
    if log:
        with open(log, "a") as f:
            f.write(f"{self.request.id} {time.time()}\n")
    return self.request.id
