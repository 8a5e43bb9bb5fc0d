"""The kinds of job and the execution policies the API accepts: one list, read
by the API's request shapes and by the CLI's choices (which must not import
Django to offer them)."""

from __future__ import annotations

from typing import Literal, get_args

JobKind = Literal["command", "python", "django", "pyoco", "pod", "celery"]
ExecutionPolicyName = Literal["allow", "skip", "queue", "replace"]

JOB_KINDS: tuple[str, ...] = get_args(JobKind)
EXECUTION_POLICIES: tuple[str, ...] = get_args(ExecutionPolicyName)
