"""Request and response shapes of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema


class JobIn(Schema):
    name: str = Field(..., min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: Literal["command", "python", "django", "pyoco", "pod", "celery"]
    target: str = Field(..., min_length=1, max_length=500)
    args: list[str] = []
    timeout: float | None = Field(None, gt=0)
    tags: list[str] = []
    params_schema: dict[str, Any] = {}
    default_params: dict[str, Any] = {}
    description: str = ""
    category: str = ""
    max_attempts: int = Field(3, ge=1, le=100)
    execution_policy: Literal["allow", "skip", "queue", "replace"] = "allow"
    subscribed_events: list[str] = []
    enabled: bool = True


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
    execution_policy: str
    subscribed_events: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class RunIn(Schema):
    job: str = Field(..., min_length=1)
    params: dict[str, Any] = {}
    tag: str | None = None


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
    created_at: datetime
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    updated_at: datetime
    log_ref: str = ""
    #: Supervision, hand-back, cancel and retry events, oldest first.
    events: list[dict[str, Any]] = []


class RunPage(Schema):
    items: list[RunOut]
    next_cursor: str | None


class HealthOut(Schema):
    status: str
    database: str
    nats: str
    version: str


class ErrorOut(Schema):
    detail: Any
