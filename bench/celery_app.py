"""The Celery app of bench/celery_runs.py: the tests' app (tests/celery/app.py),
plus, when ROTA_BENCH_BEAT_DB is set, a minimal Django with django-celery-beat
on that SQLite file, so that `celery -A celery_app beat -S
django_celery_beat.schedulers:DatabaseScheduler` runs beside rota."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if os.environ.get("ROTA_BENCH_BEAT_DB"):
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django_celery_beat"],
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": os.environ["ROTA_BENCH_BEAT_DB"],
                    "OPTIONS": {"timeout": 30},
                }
            },
            USE_TZ=True,
            TIME_ZONE="UTC",
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        )
        django.setup()

from tests.celery.app import app  # noqa: E402

__all__ = ["app"]
