"""``rota celery import`` from ``app.conf.beat_schedule`` and from a
django-celery-beat database built with django-celery-beat's own models: the
schedules fire at the times Celery (django-celery-beat) computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rota.cli.main import main
from rota.domain.schedules import next_fires
from rota.models import JobDefinition, Schedule
from tests.celery.beat_fixture import celery_fires
from tests.celery.conftest import session_database_file

pytestmark = pytest.mark.django_db(transaction=True)

APP = "tests.celery.app:app"
ROOT = Path(__file__).resolve().parents[2]


def _import(capsys, *extra: str) -> str:
    assert main(["celery", "import", "-A", APP, *extra]) == 0
    return capsys.readouterr().out


def test_beat_schedule_import_dry_run_then_real_then_idempotent(capsys):
    out = _import(capsys, "--dry-run")
    assert out.startswith("dry run: nothing was changed")
    assert "create job rt.add" in out
    assert "create schedule add-every-5-minutes (job rt.add, cron '*/5 * * * *' UTC" in out
    assert 'params {"a": 1, "b": 2}' in out  # positional args bound to the signature
    assert "not imported: beat_schedule every-90-seconds: every 90s" in out
    assert "not imported: beat_schedule both-days: day_of_month and day_of_week" in out
    assert not JobDefinition.objects.exists() and not Schedule.objects.exists()

    out = _import(capsys, "--tag", "celery-t")
    job = JobDefinition.objects.get(name="rt.report")
    assert job.kind == "celery" and job.target == "rt.report" and job.tags == ["celery-t"]
    assert job.params_schema["required"] == ["region"]
    assert job.params_schema["properties"]["full"] == {"type": "boolean"}
    weekdays = Schedule.objects.get(name="report-weekdays-at-9")
    assert weekdays.cron == "0 9 * * 1-5"
    assert weekdays.params == {"region": "eu", "full": True}
    assert not JobDefinition.objects.filter(name__startswith="celery.").exists()
    stamps = sorted(Schedule.objects.values_list("id", "updated_at"))

    out = _import(capsys)
    assert "0 to create, 0 to update" in out
    assert sorted(Schedule.objects.values_list("id", "updated_at")) == stamps

    # Same timing as Celery's crontab.
    from tests.celery.app import app

    t0 = datetime(2026, 3, 27, 8, 0, tzinfo=UTC)
    entry = app.conf.beat_schedule["report-weekdays-at-9"]["schedule"]
    ours = [f.isoformat() for f in next_fires(weekdays.cron, weekdays.timezone, t0, 20)]
    assert ours == celery_fires(entry, t0, 20)


def test_django_celery_beat_tables_import_with_the_same_fire_times(capsys, tmp_path):
    """The database is built, and django-celery-beat's fire times computed, in a
    process of its own; the import runs as the real CLI against the test database."""
    url = f"sqlite:///{tmp_path / 'beat.sqlite3'}"
    t0 = datetime(2026, 10, 30, 0, 0, tzinfo=UTC)  # the New York schedule crosses DST
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ROTA_DATABASE_URL": f"sqlite:///{tmp_path / 'x'}",
    }
    made = subprocess.run(
        [sys.executable, "-m", "tests.celery.beat_fixture", url, t0.isoformat(), "20"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    theirs = json.loads(made.stdout.strip().splitlines()[-1])
    env["ROTA_DATABASE_URL"] = f"sqlite:///{session_database_file()}"

    def rota_import(*extra: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "rota",
                "celery",
                "import",
                "-A",
                APP,
                "--no-beat-schedule",
                "--beat-database",
                url,
                *extra,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = rota_import("--dry-run")
    assert "create schedule tokyo (job rt.report, cron '30 */2 * * *' Asia/Tokyo" in out
    assert not Schedule.objects.exists()
    out = rota_import()
    assert "not imported: django_celery_beat once: one_off" in out
    assert "not imported: django_celery_beat seven: every 7 minutes" in out
    assert "not imported: django_celery_beat sunrise: a solar schedule (sunrise)" in out
    assert "not imported: django_celery_beat unknown: task 'proj.missing' is not registered" in out
    assert Schedule.objects.get(name="off").enabled is False
    assert Schedule.objects.get(name="tokyo").enabled is True
    gone = Schedule.objects.get(name="gone")
    assert gone.enabled is False and "expired at 2020-01-01" in out
    assert Schedule.objects.get(name="ny-sundays").params == {"a": 1, "b": 2}

    for name in ("tokyo", "ny-sundays", "quarterly-hour", "off"):
        ours = Schedule.objects.get(name=name)
        fires = [f.isoformat() for f in next_fires(ours.cron, ours.timezone, t0, 20)]
        assert fires == theirs[name], name

    assert "0 to create, 0 to update" in rota_import()
