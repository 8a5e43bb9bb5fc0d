"""Request and response shapes of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema
from pydantic import ConfigDict

from rota.domain.kinds import ExecutionPolicyName, JobKind


class StrictSchema(Schema):
    """A request body: a field it does not know is refused (422 naming it, with
    the closest known name), not silently dropped."""

    model_config = ConfigDict(extra="forbid")


#: A job's name: starts with a letter or digit, then letters, digits, ``_ . -``
#: (never ``.``, ``..`` or an option such as ``-rf``).
JOB_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"

Policy = ExecutionPolicyName


class JobIn(StrictSchema):
    name: str = Field(..., min_length=1, max_length=200, pattern=JOB_NAME)
    kind: JobKind
    target: str = Field(..., min_length=1, max_length=500)
    args: list[str] = []
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    tags: list[str] = []
    params_schema: dict[str, Any] = {}
    default_params: dict[str, Any] = {}
    description: str = Field("", max_length=10_000)
    category: str = Field("", max_length=100)
    max_attempts: int = Field(3, ge=1, le=100)
    #: Delay before the second attempt of a failed run, doubled for each after.
    retry_backoff_seconds: float = Field(10.0, ge=0, le=604800)
    #: The rest of the retry policy: backoff_max_seconds, jitter (0..1),
    #: exit_codes (a list, or "any" non-zero), exceptions (type names, or "any"),
    #: timed_out (retry a timeout: true/false). By default nothing is retried.
    retry: dict[str, Any] = {}
    execution_policy: ExecutionPolicyName = "allow"
    subscribed_events: list[str] = []
    enabled: bool = True


class JobPatch(StrictSchema):
    """What ``PATCH /jobs/{name}`` may change, with the checks of :class:`JobIn`."""

    target: str | None = Field(None, min_length=1, max_length=500)
    args: list[str] | None = None
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    tags: list[str] | None = None
    params_schema: dict[str, Any] | None = None
    default_params: dict[str, Any] | None = None
    description: str | None = Field(None, max_length=10_000)
    category: str | None = Field(None, max_length=100)
    max_attempts: int | None = Field(None, ge=1, le=100)
    retry_backoff_seconds: float | None = Field(None, ge=0, le=604800)
    retry: dict[str, Any] | None = None
    execution_policy: Policy | None = None
    subscribed_events: list[str] | None = None
    enabled: bool | None = None


class JobOut(Schema):
    id: int
    name: str
    kind: str
    target: str
    args: list[Any]
    timeout: float | None
    tags: list[str]
    params_schema: dict[str, Any]
    default_params: dict[str, Any]
    description: str
    category: str
    max_attempts: int
    retry_backoff_seconds: float
    retry: dict[str, Any]
    execution_policy: str
    subscribed_events: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class RunIn(StrictSchema):
    """A run of a job, or of a Pyoco flow by name: exactly one of ``job`` and ``flow_name``."""

    job: str | None = Field(None, min_length=1)
    flow_name: str | None = Field(None, min_length=1, max_length=200)
    params: dict[str, Any] = {}
    tag: str | None = Field(None, min_length=1, max_length=100)
    #: Tags of a flow run (a job's runs take the job's tags).
    tags: list[str] = []
    #: Retry policy fields this run overrides (see JobIn.retry; max_attempts
    #: and backoff_seconds too).
    retry: dict[str, Any] | None = None


class RunOut(Schema):
    run_id: str
    job: str
    flow_name: str = ""
    kind: str
    state: str
    #: seed 003's vocabulary (COMPLETED for SUCCEEDED, ...), for its existing clients.
    status: str
    attempt: int
    version: int
    leader_epoch: int
    worker_id: str | None
    params: dict[str, Any]
    tag: str
    tags: list[str]
    result: Any = None
    exit_code: int | None = None
    error: str | None = None
    error_summary: str = ""
    stdout: str = ""
    stderr: str = ""
    continuation_state: str
    continuation_check_deadline_at: datetime | None = None
    #: A failed attempt's run (PENDING) starts its next attempt at this time.
    retry_at: datetime | None = None
    created_at: datetime
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    updated_at: datetime
    log_ref: str = ""
    #: Supervision, hand-back, cancel and retry events, oldest first.
    events: list[dict[str, Any]] = []
    #: Pyoco flow runs: task name -> state (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED).
    tasks: dict[str, str] = {}
    #: Task name -> record; only with ``include=records``.
    task_records: dict[str, Any] | None = None
    #: Records past the size limit were cut or dropped.
    task_records_truncated: bool = False
    #: The uploaded flow.yaml of the run, if any: its SHA-256 and size.
    workflow_yaml_sha256: str | None = None
    workflow_yaml_bytes: int | None = None


class TasksOut(Schema):
    run_id: str
    flow_name: str
    state: str
    status: str
    tasks: dict[str, str]
    task_records: dict[str, Any] | None = None
    task_records_truncated: bool = False


class RunPage(Schema):
    items: list[RunOut]
    next_cursor: str | None


class ConsumersOut(Schema):
    #: Consumers of the NATS account (every process's, watches included).
    count: int
    #: Where pressure is reported: the account's limit, else ``nats_consumers_limit``.
    limit: int
    #: ok, high (over 80 % of the limit), or full.
    state: str


class HealthOut(Schema):
    status: str
    database: str
    nats: str
    version: str
    consumers: ConsumersOut | None = None
    #: Event streams (watches, log tails) open in this web process.
    open_streams: int = 0
    #: How many of them one token may hold.
    streams_per_token: int = 0


class ErrorOut(Schema):
    detail: Any
