"""``rota celery import``: a Celery app's tasks and periodic tasks into rota
(jobs of kind ``celery`` and their schedules); see docs/celery.md."""

from __future__ import annotations

import argparse
import json
import sys

from rota.cli.base import CommandError, env_default, env_help, setup_django

help = "import a Celery app's tasks and periodic tasks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="celery_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser(
        "import",
        help="jobs from the app's registered tasks, schedules from its periodic tasks",
        description="Jobs of kind celery from the app's registered tasks (params schema "
        "from each task's signature), schedules from app.conf.beat_schedule and, with "
        "--django-celery-beat, django-celery-beat's tables. Idempotent: a second "
        "import changes nothing. What cannot be mapped is reported, not imported.",
    )
    p.add_argument(
        "-A",
        "--app",
        default=env_default("ROTA_CELERY_APP"),
        help=env_help("the Celery app, module:attribute (proj.celery:app)", "ROTA_CELERY_APP"),
    )
    p.add_argument(
        "--no-beat-schedule",
        action="store_true",
        help="do not read app.conf.beat_schedule",
    )
    p.add_argument(
        "--django-celery-beat",
        action="store_true",
        help="also read django-celery-beat's PeriodicTask tables",
    )
    p.add_argument(
        "--beat-database",
        default=env_default("ROTA_CELERY_BEAT_DATABASE_URL", ""),
        help=env_help(
            "database URL of those tables (default: rota's own database, for rota "
            "inside the project that runs django-celery-beat)",
            "ROTA_CELERY_BEAT_DATABASE_URL",
        ),
    )
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        help="routing tag of the new jobs (repeatable; default: none, i.e. 'default')",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def handle(args: argparse.Namespace) -> int:
    if not args.app:
        raise CommandError(
            "no Celery app given", hint="pass -A proj.celery:app or set ROTA_CELERY_APP"
        )
    setup_django()
    from rota.celery.app import import_app
    from rota.celery.importer import (
        apply,
        ensure_beat_models,
        from_beat_schedule,
        from_django_celery_beat,
        plan,
    )

    app = import_app(args.app)
    periodic = [] if args.no_beat_schedule else from_beat_schedule(app)
    if args.django_celery_beat or args.beat_database:
        try:
            alias = ensure_beat_models(args.beat_database)
        except ImportError:
            raise CommandError(
                "django-celery-beat is not installed", hint="pip install django-celery-beat"
            ) from None
        periodic += from_django_celery_beat(app, alias)
    result = plan(app, periodic, tags=args.tag)
    if not args.dry_run:
        apply(result)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, **result.as_dict()}, indent=2))
    else:
        if args.dry_run:
            print("dry run: nothing was changed")
        print(result.report())
    if result.problems:
        print(f"{len(result.problems)} periodic task(s) not imported (see above)", file=sys.stderr)
    return 0
