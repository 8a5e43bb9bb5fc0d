"""Replica sets with real processes: restarts with growing delays, a command
that cannot start, and shutdown of a pod that ignores SIGTERM."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from tests.conftest import eventually
from tests.integration.test_executors import gone, wait_gone
from tests.pods.conftest import all_idle, task_toml


def task_of(host, name: str) -> dict:  # type: ignore[no-untyped-def]
    return next(t for t in host.status()["tasks"] if t["task"] == name)


async def test_a_pod_that_exits_at_once_is_restarted_with_growing_delays(
    start_host, tmp_path: Path
) -> None:
    starts_log = tmp_path / "starts"
    host = await start_host(task_toml("crash", "crash_pod.py", env={"START_LOG": str(starts_log)}))
    await asyncio.sleep(3.0)
    starts = [float(x) for x in starts_log.read_text().split()]
    # Backoff 0.1 s doubling: starts near 0, 0.1, 0.3, 0.7, 1.5, (3.1) s. Never
    # a tight loop: a handful of starts in three seconds.
    assert 4 <= len(starts) <= 7, starts
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(later > earlier for earlier, later in zip(gaps[1:], gaps[2:], strict=False)), gaps
    assert gaps[-1] > 0.5, gaps
    task = task_of(host, "crash")
    (inst,) = task["instances"]
    assert task["state"] == "crash_loop"
    assert inst["state"] in ("crash_loop", "starting", "busy")
    assert inst["last_exit"] == 3
    assert task["restarts"] >= len(starts) - 1 >= 3


async def test_a_missing_command_is_a_clear_error_and_keeps_being_retried(start_host) -> None:
    text = task_toml("ghost", "echo_pod.py").replace(
        f'command = "{sys.executable}"', 'command = "/nonexistent/rota-no-such-command"'
    )
    host = await start_host(text)

    async def failing() -> dict:
        inst = task_of(host, "ghost")["instances"][0]
        return inst if inst["restarts"] >= 2 else {}

    inst = await eventually(failing, timeout=5)
    assert "command not found: /nonexistent/rota-no-such-command" in inst["last_error"]
    assert inst["pod_id"] is None
    before = inst["restarts"]
    await asyncio.sleep(1.0)
    after = task_of(host, "ghost")["instances"][0]
    assert after["restarts"] > before  # still retried, never a dead slot
    assert after["state"] in ("backoff", "crash_loop", "starting")


async def test_a_missing_working_directory_is_named(start_host) -> None:
    host = await start_host(
        task_toml("nodir", "echo_pod.py", extra='working_directory = "/nonexistent/dir"\n')
    )

    async def error() -> str:
        return task_of(host, "nodir")["instances"][0]["last_error"]

    assert "working directory /nonexistent/dir does not exist" in await eventually(error, timeout=5)


async def test_stop_sends_sigterm_then_sigkill_to_the_whole_group(
    start_host, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    host = await start_host(
        task_toml("stubborn", "stubborn_pod.py", env={"PID_FILE": str(pid_file)}), stop_grace=0.5
    )
    await eventually(all_idle(host, "stubborn", 1), timeout=10)
    leader, child = (int(x) for x in pid_file.read_text().split())
    assert not gone(leader) and not gone(child)
    started = time.monotonic()
    await host.stop()
    assert time.monotonic() - started < 3
    # SIGKILL is delivered asynchronously: give the kernel a moment.
    assert await wait_gone(leader, 1.0) and await wait_gone(child, 1.0)
    assert task_of(host, "stubborn")["instances"][0]["state"] == "stopped"
