"""The system of record (DESIGN §1): job definitions, schedules, the fire ledger,
runs, events, settings, the audit log and API tokens.

A run's row is written first by the run service (the unique constraints decide
whether it exists) and afterwards only by the projector, which applies live
snapshots in version order. Nothing else updates a run's state in SQL.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from rota.domain.states import ContinuationState, RunState
from rota.domain.workers import Thresholds

_T = Thresholds()


def _choices(enum_cls):
    return [(m.value, m.value) for m in enum_cls]


class ExecutorKind(models.TextChoices):
    COMMAND = "command"
    PYTHON = "python"
    DJANGO = "django"
    PYOCO = "pyoco"
    POD = "pod"
    CELERY = "celery"


class ExecutionPolicy(models.TextChoices):
    ALLOW = "allow"
    SKIP = "skip"
    QUEUE = "queue"
    REPLACE = "replace"


class JobDefinition(models.Model):
    """What to run."""

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=ExecutorKind.choices)
    #: argv[0] for ``command``, ``module:function`` for ``python``, a command name for ``django``.
    target = models.CharField(max_length=500)
    #: Default arguments (argv tail for ``command``/``django``).
    args = models.JSONField(default=list, blank=True)
    params_schema = models.JSONField(default=dict, blank=True)
    default_params = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=100, blank=True)
    #: Routing tags: a run goes to the work subject of its tag (the first, unless given).
    tags = models.JSONField(default=list, blank=True)
    timeout_seconds = models.FloatField(null=True, blank=True)
    #: Attempts a run may take; a run taken from a lost worker is retried while
    #: attempts remain, then FAILED with a DLQ record.
    max_attempts = models.PositiveIntegerField(default=3)
    #: Delay before the second attempt of a failed run, doubled for each after.
    retry_backoff_seconds = models.FloatField(default=10.0)
    #: The rest of the retry policy (rota.domain.retry.RetryPolicy fields:
    #: backoff_max_seconds, jitter, exit_codes, exceptions, timed_out).
    retry = models.JSONField(default=dict, blank=True)
    execution_policy = models.CharField(
        max_length=10, choices=ExecutionPolicy.choices, default=ExecutionPolicy.ALLOW
    )
    #: Event names this job runs on (DESIGN §5, events).
    subscribed_events = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Schedule(models.Model):
    """When to run a job: many per job, each with its own params."""

    job = models.ForeignKey(JobDefinition, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=200, blank=True)
    #: True when rota made the name up (seed 004 §6); it is made again when the
    #: params or the frequency change.
    auto_generated_name = models.BooleanField(default=False)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=100, blank=True)
    tags = models.JSONField(default=list, blank=True)
    params = models.JSONField(default=dict, blank=True)
    cron = models.CharField(max_length=200)
    #: The safe structured form the UI edits; compiled to ``cron``.
    structured = models.JSONField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    dst_policy = models.CharField(max_length=32, default="shift_forward_first")
    catch_up_seconds = models.PositiveIntegerField(default=300)
    execution_policy = models.CharField(
        max_length=10, choices=ExecutionPolicy.choices, default=ExecutionPolicy.ALLOW
    )
    #: Retry policy fields the runs of this schedule override.
    retry = models.JSONField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    fired_count = models.PositiveBigIntegerField(default=0)
    skipped_count = models.PositiveBigIntegerField(default=0)
    missed_count = models.PositiveBigIntegerField(default=0)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    #: Nominal time the leader has handled ticks up to (fired, skipped or missed);
    #: a new leader continues from here.
    cursor_at = models.DateTimeField(null=True, blank=True)
    #: The ``Idempotency-Key`` of the POST that created it: a repeat returns it.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["enabled"], name="rota_sched_enabled")]

    def __str__(self) -> str:
        return self.name or f"schedule {self.pk}"


class FireRecord(models.Model):
    """The fire ledger: one row per (schedule, nominal time), written before its run."""

    class Outcome(models.TextChoices):
        FIRED = "fired"
        SKIPPED = "skipped"
        MISSED = "missed"

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="fires")
    nominal_time = models.DateTimeField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.FIRED)
    run_id = models.CharField(max_length=26, blank=True)
    leader_epoch = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schedule", "nominal_time"], name="rota_fire_once")
        ]


class JobRun(models.Model):
    """One run of a job. The row is the history; the live state is the KV snapshot."""

    id = models.CharField(primary_key=True, max_length=26)
    job = models.ForeignKey(
        JobDefinition, on_delete=models.PROTECT, related_name="runs", null=True, blank=True
    )
    #: Denormalised so lists and filters never join (and a flow run has no job row).
    job_name = models.CharField(max_length=200)
    flow_name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=20, choices=ExecutorKind.choices)
    schedule = models.ForeignKey(
        Schedule, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    event = models.ForeignKey(
        "Event", on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    state = models.CharField(max_length=12, choices=_choices(RunState), default=RunState.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    #: Version of the live snapshot this row was projected from.
    version = models.PositiveBigIntegerField(default=0)
    leader_epoch = models.BigIntegerField(default=0)
    worker_id = models.CharField(max_length=120, blank=True)
    params = models.JSONField(default=dict, blank=True)
    #: The execution-policy lock key is (job, this): seed 004's task + params hash.
    params_hash = models.CharField(max_length=16, blank=True)
    #: Held back by the queue policy until the earlier run of its key ends.
    held = models.BooleanField(default=False)
    tag = models.CharField(max_length=100, default="default")
    tags = models.JSONField(default=list, blank=True)
    result = models.JSONField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    error_summary = models.TextField(blank=True)
    log_ref = models.CharField(max_length=300, blank=True)
    #: Supervision, hand-back, cancel and retry events, oldest first (from the snapshot).
    events = models.JSONField(default=list, blank=True)
    #: Retry policy fields this run overrides (its schedule's, then its own).
    retry = models.JSONField(null=True, blank=True)
    #: A failed attempt's run waits (PENDING) for its next attempt until then.
    retry_at = models.DateTimeField(null=True, blank=True)
    #: Pyoco flow runs: task name -> state (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED).
    tasks = models.JSONField(default=dict, blank=True)
    #: Pyoco flow runs: task name -> record (state, timings, error, output preview).
    task_records = models.JSONField(default=dict, blank=True)
    #: Records past the size limit were dropped.
    task_records_truncated = models.BooleanField(default=False)
    #: The uploaded flow.yaml a run executes (empty for a flow resolved by name).
    flow_yaml = models.TextField(blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    #: Set when the dispatch message was published (the outbox mark).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    continuation_state = models.CharField(
        max_length=12, choices=_choices(ContinuationState), default=ContinuationState.NONE
    )
    continuation_check_deadline_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One run per (event, job): an event posted twice never runs a job twice.
            models.UniqueConstraint(
                fields=["event", "job"],
                name="rota_run_once_per_event",
                condition=Q(event__isnull=False),
            ),
        ]
        indexes = [
            models.Index(fields=["state", "-id"], name="rota_run_state"),
            models.Index(fields=["job_name", "-id"], name="rota_run_job"),
            models.Index(fields=["flow_name", "-id"], name="rota_run_flow"),
            models.Index(fields=["tag", "-id"], name="rota_run_tag"),
            models.Index(fields=["worker_id", "state"], name="rota_run_worker"),
            models.Index(fields=["updated_at"], name="rota_run_updated"),
            models.Index(fields=["schedule", "-id"], name="rota_run_schedule"),
            models.Index(fields=["job_name", "params_hash", "state"], name="rota_run_lock"),
            # The ops UI's runs table: one index scan per sort column, id as tiebreak
            # (this one also serves what the (scheduled_for) index of 0001 did).
            models.Index(fields=["scheduled_for", "id"], name="rota_ops_run_scheduled"),
            models.Index(fields=["started_at", "id"], name="rota_ops_run_started"),
            models.Index(fields=["finished_at", "id"], name="rota_ops_run_finished"),
            # Worker ids have their index in migration 0004 alone, made per
            # database: in the "C" collation on PostgreSQL (rota.ops.table).
            # The reconciler's outbox query touches only undispatched rows.
            models.Index(
                fields=["created_at"],
                name="rota_run_undispatched",
                condition=Q(dispatched_at__isnull=True, held=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_name} {self.id} {self.state}"


class RunLog(models.Model):
    """Captured stdout/stderr of a run, kept for the retention period."""

    run = models.ForeignKey(JobRun, on_delete=models.CASCADE, related_name="logs")
    attempt = models.PositiveIntegerField(default=1)
    stream = models.CharField(max_length=6)  # stdout | stderr
    #: Chunk number within (run, attempt, stream), for logs written in pieces.
    seq = models.PositiveIntegerField(default=0)
    data = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "attempt", "stream", "seq"], name="rota_log_chunk_once"
            )
        ]


class Event(models.Model):
    id = models.CharField(primary_key=True, max_length=26)
    name = models.CharField(max_length=200)
    payload = models.JSONField(default=dict, blank=True)
    dedupe_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["name", "-id"], name="rota_event_name")]


class SchedulerSettings(models.Model):
    """The singleton of runtime thresholds (seed 001 §2.8), edited live from the UI.

    Defaults come from :class:`rota.domain.workers.Thresholds`; the leader copies
    the row into KV, from which every process picks changes up (no restart)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    continuation_retries = models.PositiveIntegerField(default=_T.continuation_retries)
    continuation_interval_seconds = models.FloatField(default=_T.continuation_interval_seconds)
    log_retention_days = models.PositiveIntegerField(default=_T.log_retention_days)
    heartbeat_interval_seconds = models.FloatField(default=_T.heartbeat_interval_seconds)
    heartbeat_ttl_seconds = models.FloatField(default=_T.heartbeat_ttl_seconds)
    leader_lease_seconds = models.FloatField(default=_T.leader_lease_seconds)
    assign_ahead_seconds = models.FloatField(default=_T.assign_ahead_seconds)
    grpc_timeout_seconds = models.FloatField(default=_T.grpc_timeout_seconds)
    grpc_retries = models.PositiveIntegerField(default=_T.grpc_retries)
    degrade_cooldown_seconds = models.FloatField(default=_T.degrade_cooldown_seconds)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "scheduler settings"

    @classmethod
    def load(cls) -> SchedulerSettings:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj

    def thresholds(self) -> Thresholds:
        return Thresholds.from_mapping(
            {
                f.name: getattr(self, f.name)
                for f in self._meta.fields
                if f.name not in ("id", "updated_at")
            }
        )


class AdminActionLog(models.Model):
    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=100)
    target = models.CharField(max_length=300, blank=True)
    detail_json = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="rota_audit_created"),
            models.Index(fields=["action", "-created_at"], name="rota_audit_action"),
        ]


class WheelEvent(models.Model):
    """The wheel registry's history (seed 003 F-21): every upload and delete,
    with where it came from and who did it."""

    class Action(models.TextChoices):
        UPLOAD = "upload"
        DELETE = "delete"

    id = models.CharField(primary_key=True, max_length=26)
    occurred_at = models.DateTimeField(default=timezone.now)
    action = models.CharField(max_length=10, choices=Action.choices)
    wheel_name = models.CharField(max_length=300)
    package = models.CharField(max_length=200)
    version = models.CharField(max_length=100)
    tags = models.JSONField(default=list, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    sha256_hex = models.CharField(max_length=64, blank=True)
    #: The upload's ``replace`` form field (None for a delete).
    replace = models.BooleanField(null=True, blank=True)
    #: Who: ``{"username", "api_key_id" (the token's prefix, or None), "via"}``.
    actor = models.JSONField(default=dict, blank=True)
    #: Where from: client address, X-Forwarded-For, X-Real-IP, User-Agent, host, scheme.
    source = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["-occurred_at"], name="rota_wheel_event_at"),
            models.Index(fields=["wheel_name", "-occurred_at"], name="rota_wheel_event_name"),
        ]


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A token for programs. Only its SHA-256 is stored; the raw value is shown once."""

    name = models.CharField(max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rota_tokens"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    @classmethod
    def issue(cls, user, name: str = "default") -> tuple[ApiToken, str]:
        raw = "rota_" + secrets.token_urlsafe(32)
        token = cls.objects.create(
            name=name, user=user, token_hash=hash_token(raw), prefix=raw[5:13]
        )
        return token, raw

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
