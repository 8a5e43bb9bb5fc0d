"""``rota celery import``: a Celery app's tasks and periodic tasks into rota.

Every registered task (but Celery's own ``celery.*``) becomes a job of kind
``celery`` named after the task, with a params schema from the task's signature
and type hints. Every periodic task, from ``app.conf.beat_schedule`` and from
django-celery-beat's tables, becomes a schedule of that job with the same
timing, its kwargs (and its positional args, bound to the signature's names)
as params, enabled as it was. What rota cannot fire at the same times is not
imported and is reported with the reason.

Idempotent: a schedule remembers where it came from in its idempotency key
(``celery:<source>:<name>``), a job is found by name, and an import that finds
everything as it would make it changes nothing. :func:`plan` computes the
actions without writing; :func:`apply` writes them in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rota.domain.celery import (
    Unmappable,
    crontab_to_cron,
    interval_to_cron,
    params_schema_for,
    positional_names,
)
from rota.errors import InvalidInput

BEAT_SCHEDULE = "beat_schedule"
DJANGO_CELERY_BEAT = "django_celery_beat"


@dataclass
class Periodic:
    """One periodic task, from either source, before mapping."""

    source: str
    name: str
    task: str
    schedule: Any  # a celery.schedules object
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    one_off: bool = False
    expires: datetime | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Action:
    verb: str  # create, update, unchanged
    what: str  # job, schedule
    name: str
    fields: dict[str, Any]
    key: str = ""  # a schedule's idempotency key
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.verb} {self.what} {self.name}"
        if self.what == "schedule":
            f = self.fields
            text += f" (job {f['job']}, cron {f['cron']!r} {f['timezone']}"
            text += f", params {json.dumps(f['params'], sort_keys=True)}"
            text += ", enabled)" if f["enabled"] else ", disabled)"
        for note in self.notes:
            text += f"\n    note: {note}"
        return text


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # source, name, why

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.verb != "unchanged"]

    def report(self) -> str:
        lines = [a.describe() for a in self.actions]
        for source, name, why in self.problems:
            lines.append(f"not imported: {source} {name}: {why}")
        counts = {v: sum(a.verb == v for a in self.actions) for v in ("create", "update")}
        lines.append(
            f"{counts['create']} to create, {counts['update']} to update, "
            f"{len(self.actions) - len(self.changes)} unchanged, "
            f"{len(self.problems)} not importable"
        )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "actions": [
                {"verb": a.verb, "what": a.what, "name": a.name, "key": a.key, "notes": a.notes}
                for a in self.actions
            ],
            "problems": [{"source": s, "name": n, "reason": r} for s, n, r in self.problems],
        }


# -- reading the sources -----------------------------------------------------------------


def registered_tasks(app: Any) -> dict[str, Any]:
    """The app's tasks by name, Celery's own left out."""
    app.loader.import_default_modules()
    return {
        name: task for name, task in sorted(app.tasks.items()) if not name.startswith("celery.")
    }


def from_beat_schedule(app: Any) -> list[Periodic]:
    from celery.schedules import maybe_schedule

    out = []
    for name, entry in (app.conf.beat_schedule or {}).items():
        sched = maybe_schedule(entry.get("schedule"), app=app)
        out.append(
            Periodic(
                source=BEAT_SCHEDULE,
                name=name,
                task=entry.get("task", ""),
                schedule=sched,
                args=list(entry.get("args") or ()),
                kwargs=dict(entry.get("kwargs") or {}),
                options=dict(entry.get("options") or {}),
            )
        )
    return out


def ensure_beat_models(database_url: str = "") -> str:
    """Make django-celery-beat's models usable here and return the database
    alias its tables are read from: ``celery_beat`` for ``database_url``, else
    ``default`` (rota inside the project that runs django-celery-beat)."""
    from django.apps import apps
    from django.conf import settings
    from django.db import connections

    if not apps.is_installed("django_celery_beat"):
        apps.set_installed_apps([*settings.INSTALLED_APPS, "django_celery_beat"])
    if not database_url:
        return "default"
    from rota.standalone.settings import database_config

    connections.databases["celery_beat"] = {
        **connections.databases["default"],
        **database_config(database_url),
        "TEST": {},
    }
    return "celery_beat"


def from_django_celery_beat(app: Any, alias: str = "default") -> list[Periodic]:
    from django_celery_beat.models import PeriodicTask

    out = []
    for pt in PeriodicTask.objects.using(alias).select_related(
        "crontab", "interval", "solar", "clocked"
    ):
        if pt.task.startswith("celery."):
            continue  # celery.backend_cleanup and friends: Celery's own housekeeping
        options = {
            k: getattr(pt, k)
            for k in ("queue", "exchange", "routing_key", "priority", "expire_seconds", "headers")
            if getattr(pt, k, None) not in (None, "", "{}")
        }
        sched: Any
        if pt.solar_id is not None:  # celery's solar needs ephem: do not build it
            sched = Unmappable(f"a solar schedule ({pt.solar.event}): rota's schedules are cron")
        else:
            try:
                sched = pt.schedule
            except Exception as exc:  # a task without any schedule
                sched = Unmappable(f"no usable schedule: {exc}")
        out.append(
            Periodic(
                source=DJANGO_CELERY_BEAT,
                name=pt.name,
                task=pt.task,
                schedule=sched,
                args=json.loads(pt.args or "[]"),
                kwargs=json.loads(pt.kwargs or "{}"),
                enabled=pt.enabled,
                one_off=pt.one_off,
                expires=pt.expires,
                options=options,
            )
        )
    return out


# -- mapping ---------------------------------------------------------------------------------


def _zone_name(tz: Any) -> str:
    name = getattr(tz, "key", None) or getattr(tz, "zone", None) or str(tz or "UTC")
    return "UTC" if name in ("utc", "UTC", "Etc/UTC") else name


def _field(values: set[int], lo: int, hi: int) -> str:
    """A crontab field's values (Celery has parsed them) as cron text: ``*``
    for all, else a list of runs (``1-5,9``)."""
    ordered = sorted(values)
    if ordered == list(range(lo, hi + 1)):
        return "*"
    for step in range(2, hi - lo + 1):
        if ordered == list(range(lo, hi + 1, step)):
            return f"*/{step}"
    runs: list[list[int]] = []
    for v in ordered:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def timing(sched: Any) -> tuple[str, str, list[str]]:
    """(cron, time zone, notes) of a Celery schedule; raises Unmappable."""
    from celery.schedules import crontab, schedule, solar

    if isinstance(sched, Unmappable):
        raise sched
    if isinstance(sched, crontab):
        cron = crontab_to_cron(
            _field(sched.minute, 0, 59),
            _field(sched.hour, 0, 23),
            _field(sched.day_of_week, 0, 6),
            _field(sched.day_of_month, 1, 31),
            _field(sched.month_of_year, 1, 12),
            dow_values=set(sched.day_of_week),
            dom_values=set(sched.day_of_month),
        )
        return cron, _zone_name(sched.tz), []
    if isinstance(sched, solar):
        raise Unmappable(f"a solar schedule ({sched.event}): rota's schedules are cron")
    if type(sched).__name__ == "clocked":
        raise Unmappable("a clocked (one-time) schedule: rota's schedules repeat")
    if isinstance(sched, schedule):
        cron = interval_to_cron(sched.run_every)
        return (
            cron,
            "UTC",
            [
                f"every {sched.run_every} on the clock ({cron}): Celery counts from the "
                "last run, rota from the top of the hour or day"
            ],
        )
    raise Unmappable(f"a {type(sched).__name__} schedule is not one rota knows")


def _params(p: Periodic, task: Any) -> dict[str, Any]:
    params = dict(p.kwargs)
    if p.args:
        names = positional_names(task.run)
        if len(p.args) > len(names):
            raise Unmappable(
                f"{len(p.args)} positional args, and the task's signature names only {len(names)}"
            )
        for name, value in zip(names, p.args, strict=False):
            if name in params:
                raise Unmappable(f"{name!r} given both as a positional arg and a kwarg")
            params[name] = value
    return params


def plan(
    app: Any,
    periodic: list[Periodic],
    *,
    tags: list[str] | None = None,
    now: datetime | None = None,
) -> Plan:
    """What an import would do (reads rota's tables, writes nothing)."""
    from rota.domain.params import validate_params
    from rota.domain.schedules import validate_cron
    from rota.models import JobDefinition, Schedule

    now = now or datetime.now(UTC)
    out = Plan()
    tasks = registered_tasks(app)
    schemas: dict[str, dict[str, Any]] = {}
    for name, task in tasks.items():
        schema = params_schema_for(task.run)
        schemas[name] = schema
        fields: dict[str, Any] = {"kind": "celery", "target": name, "params_schema": schema}
        existing = JobDefinition.objects.filter(name=name).first()
        if existing is None:
            fields["tags"] = list(tags or [])
            fields["description"] = (task.__doc__ or "").strip()[:2000]
            out.actions.append(Action("create", "job", name, fields))
        elif existing.kind != "celery" or existing.target != name:
            out.problems.append(
                ("task", name, f"a job of that name exists with kind {existing.kind!r}")
            )
            del schemas[name]
        elif existing.params_schema != schema:
            out.actions.append(Action("update", "job", name, {"params_schema": schema}))
        else:
            out.actions.append(Action("unchanged", "job", name, fields))
    for p in periodic:
        if p.task not in tasks:
            out.problems.append((p.source, p.name, f"task {p.task!r} is not registered in the app"))
            continue
        if p.task not in schemas:
            out.problems.append((p.source, p.name, f"job {p.task!r} is not a celery job"))
            continue
        if p.one_off:
            out.problems.append(
                (p.source, p.name, "one_off: rota's schedules repeat (submit a run instead)")
            )
            continue
        try:
            cron, tz, notes = timing(p.schedule)
            cron = validate_cron(cron)
            params = _params(p, tasks[p.task])
            validate_params(schemas[p.task], params)
        except Unmappable as exc:
            out.problems.append((p.source, p.name, str(exc)))
            continue
        except InvalidInput as exc:
            out.problems.append((p.source, p.name, f"params do not fit the task: {exc.message}"))
            continue
        enabled = p.enabled
        if p.expires is not None:
            if p.expires <= now:
                enabled = False
                notes.append(f"expired at {p.expires.isoformat()}: imported disabled")
            else:
                notes.append(
                    f"expires at {p.expires.isoformat()}: rota does not end schedules, "
                    "disable it then"
                )
        if p.options:
            notes.append(
                f"per-task send options {sorted(p.options)} are not per schedule in rota: "
                "set them on the job (args queue=..., priority=...)"
            )
        key = f"celery:{p.source}:{p.name}"[:200]
        fields = {
            "job": p.task,
            "name": p.name[:200],
            "cron": cron,
            "timezone": tz,
            "params": params,
            "enabled": enabled,
        }
        existing_s = Schedule.objects.select_related("job").filter(idempotency_key=key).first()
        if existing_s is None:
            out.actions.append(Action("create", "schedule", p.name, fields, key, notes))
            continue
        current = {
            "job": existing_s.job.name,
            "name": existing_s.name,
            "cron": existing_s.cron,
            "timezone": existing_s.timezone,
            "params": existing_s.params,
            "enabled": existing_s.enabled,
        }
        verb = "unchanged" if current == fields else "update"
        out.actions.append(Action(verb, "schedule", p.name, fields, key, notes))
    return out


def apply(p: Plan) -> None:
    """Write a plan's changes in one transaction."""
    from django.db import transaction

    from rota.models import JobDefinition, Schedule

    with transaction.atomic():
        for a in p.changes:
            if a.what == "job":
                if a.verb == "create":
                    JobDefinition.objects.create(name=a.name, **a.fields)
                else:
                    job = JobDefinition.objects.get(name=a.name)
                    for k, v in a.fields.items():
                        setattr(job, k, v)
                    job.save()
                continue
            fields = dict(a.fields)
            fields["job"] = JobDefinition.objects.get(name=fields["job"])
            if a.verb == "create":
                Schedule.objects.create(idempotency_key=a.key, **fields)
            else:
                s = Schedule.objects.get(idempotency_key=a.key)
                for k, v in fields.items():
                    setattr(s, k, v)
                s.save()
