"""What the worker sets for itself alone stays out of its runs' environment."""

from __future__ import annotations

import os

from rota.worker.executors.base import (
    WORKER_ONLY_ENV,
    scrub_environ,
    set_worker_only_env,
    without_secrets,
)


def test_a_worker_only_variable_is_hidden_from_runs(monkeypatch):
    monkeypatch.delenv("GRPC_ENABLE_FORK_SUPPORT", raising=False)
    monkeypatch.delenv(WORKER_ONLY_ENV, raising=False)
    set_worker_only_env("GRPC_ENABLE_FORK_SUPPORT", "false")
    assert os.environ["GRPC_ENABLE_FORK_SUPPORT"] == "false"
    env = without_secrets()
    assert "GRPC_ENABLE_FORK_SUPPORT" not in env and WORKER_ONLY_ENV not in env
    scrub_environ()  # a pool child, before user code
    assert "GRPC_ENABLE_FORK_SUPPORT" not in os.environ and WORKER_ONLY_ENV not in os.environ


def test_a_value_the_user_set_is_kept_and_passed_on(monkeypatch):
    monkeypatch.setenv("GRPC_ENABLE_FORK_SUPPORT", "true")
    monkeypatch.delenv(WORKER_ONLY_ENV, raising=False)
    set_worker_only_env("GRPC_ENABLE_FORK_SUPPORT", "false")
    assert os.environ["GRPC_ENABLE_FORK_SUPPORT"] == "true"
    assert without_secrets()["GRPC_ENABLE_FORK_SUPPORT"] == "true"
