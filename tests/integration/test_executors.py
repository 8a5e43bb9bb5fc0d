"""The command and python executors against real processes (no mocks)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rota.domain.snapshot import OUTPUT_TAIL_BYTES, RunSnapshot
from rota.domain.states import RunState
from rota.worker.executors.command import CommandExecutor
from rota.worker.executors.python import PythonExecutor

JOBS = "tests.helpers_jobs"


def snap(
    kind: str, target: str, *args: str, timeout: float | None = None, **params: Any
) -> RunSnapshot:
    return RunSnapshot(
        run_id="run-1",
        job="job",
        kind=kind,
        target=target,
        args=list(args),
        params=params,
        timeout=timeout,
        attempt=2,
    )


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie counts: this container's
    init does not reap orphans). Every thread must be gone: a killed
    multi-threaded process shows its leader as a zombie while the other threads
    still exit, and its open files (our pipe's end) close only after the last."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks]
    except FileNotFoundError:
        return True
    return all(state == "Z" for state in states)


async def wait_gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        await asyncio.sleep(0.02)
    return False


async def set_later(event: asyncio.Event, delay: float) -> None:
    await asyncio.sleep(delay)
    event.set()


# --------------------------------------------------------------------------
# command
# --------------------------------------------------------------------------


@pytest.fixture
async def command():
    ex = CommandExecutor(kill_grace=0.5)
    yield ex
    await ex.close()


async def test_command_success_with_stdout_and_env(command: CommandExecutor) -> None:
    out = await command.run(
        snap("command", "sh", "-c", 'echo hello; echo "$ROTA_RUN_ID $ROTA_ATTEMPT"'),
        asyncio.Event(),
    )
    assert out.state == RunState.SUCCEEDED
    assert out.exit_code == 0
    assert out.stdout == "hello\nrun-1 2\n"
    assert out.error_summary == ""


async def test_command_params_become_options(command: CommandExecutor) -> None:
    out = await command.run(
        snap("command", "echo", "a", name="x y", flag=True, off=False, tag=["1", "2"]),
        asyncio.Event(),
    )
    assert out.stdout == "a --name=x y --flag --tag=1 --tag=2\n"


async def test_command_failure_summary_is_last_stderr_line(command: CommandExecutor) -> None:
    script = 'echo first >&2; echo "  last line  " >&2; echo >&2; exit 3'
    out = await command.run(snap("command", "sh", "-c", script), asyncio.Event())
    assert out.state == RunState.FAILED
    assert out.exit_code == 3
    assert out.error_summary == "exit status 3: last line"
    assert "first" in out.stderr


async def test_command_summary_is_capped(command: CommandExecutor) -> None:
    out = await command.run(
        snap("command", "sh", "-c", "printf 'x%.0s' $(seq 2000) >&2; exit 1"), asyncio.Event()
    )
    assert out.state == RunState.FAILED
    assert len(out.error_summary) == 500


async def test_command_killed_by_signal(command: CommandExecutor) -> None:
    out = await command.run(snap("command", "sh", "-c", "kill -9 $$"), asyncio.Event())
    assert out.state == RunState.FAILED
    assert out.error_summary == "killed by signal SIGKILL"


async def test_command_not_found_and_not_executable(
    command: CommandExecutor, tmp_path: Path
) -> None:
    out = await command.run(snap("command", "/nonexistent/rota-job"), asyncio.Event())
    assert out.state == RunState.FAILED
    assert out.error_summary == "executable not found: /nonexistent/rota-job"

    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    out = await command.run(snap("command", str(script)), asyncio.Event())
    assert out.state == RunState.FAILED
    assert out.error_summary == f"permission denied: {script}"


async def test_command_large_output_does_not_deadlock(command: CommandExecutor) -> None:
    code = "import sys; sys.stdout.write('o' * 3_000_000); sys.stderr.write('e' * 3_000_000)"
    out = await command.run(
        snap("command", sys.executable, "-c", code, timeout=20), asyncio.Event()
    )
    assert out.state == RunState.SUCCEEDED
    assert out.stdout == "o" * OUTPUT_TAIL_BYTES
    assert out.stderr == "e" * OUTPUT_TAIL_BYTES


async def test_command_timeout_kills_grandchildren(command: CommandExecutor) -> None:
    started = time.monotonic()
    out = await command.run(
        snap("command", "sh", "-c", "sleep 100 & echo $!; sleep 100", timeout=0.5), asyncio.Event()
    )
    assert out.state == RunState.TIMED_OUT
    assert out.error_summary == "timed out after 0.5s"
    assert time.monotonic() - started < 3
    grandchild = int(out.stdout.split()[0])
    assert await wait_gone(grandchild)


async def test_command_timeout_sigkills_after_grace(command: CommandExecutor) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('ready', flush=True); time.sleep(100)"
    )
    started = time.monotonic()
    out = await command.run(snap("command", sys.executable, "-c", code, timeout=1), asyncio.Event())
    assert out.state == RunState.TIMED_OUT
    assert out.exit_code == -9
    assert out.stdout == "ready\n"
    assert time.monotonic() - started < 3  # timeout 1 + grace 0.5


async def test_command_leftover_background_process_is_killed(command: CommandExecutor) -> None:
    # The background sleep holds stdout open; the run must still end promptly.
    started = time.monotonic()
    out = await command.run(snap("command", "sh", "-c", "sleep 100 & echo $!"), asyncio.Event())
    assert out.state == RunState.SUCCEEDED
    assert time.monotonic() - started < 3
    assert await wait_gone(int(out.stdout))


async def test_command_cancel(command: CommandExecutor) -> None:
    cancel = asyncio.Event()
    setter = asyncio.create_task(set_later(cancel, 0.2))
    started = time.monotonic()
    out = await command.run(snap("command", "sh", "-c", "sleep 100 & echo $!; wait"), cancel)
    await setter
    assert out.state == RunState.CANCELLED
    assert time.monotonic() - started < 2
    assert await wait_gone(int(out.stdout))


async def test_command_task_cancellation_kills_the_group(
    command: CommandExecutor, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(
        command.run(
            snap("command", "sh", "-c", f"sleep 100 & echo $! > {pidfile}; wait"), asyncio.Event()
        )
    )
    while not pidfile.exists() or not pidfile.read_text().strip():
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(int(pidfile.read_text()))


async def test_command_cancelled_before_start(command: CommandExecutor) -> None:
    cancel = asyncio.Event()
    cancel.set()
    out = await command.run(snap("command", "sleep", "100"), cancel)
    assert out.state == RunState.CANCELLED


# --------------------------------------------------------------------------
# python
# --------------------------------------------------------------------------


@pytest.fixture
async def pool():
    ex = PythonExecutor(size=2)
    await ex.start()
    yield ex
    await ex.close()


async def test_python_success_result(pool: PythonExecutor) -> None:
    out = await pool.run(snap("python", f"{JOBS}:add", a=2, b=3), asyncio.Event())
    assert out.state == RunState.SUCCEEDED
    assert out.result == 5
    assert out.error_summary == ""


async def test_python_async_function(pool: PythonExecutor) -> None:
    out = await pool.run(snap("python", f"{JOBS}:async_add", a=2, b=3), asyncio.Event())
    assert (out.state, out.result) == (RunState.SUCCEEDED, 5)


async def test_python_sees_run_env(pool: PythonExecutor) -> None:
    out = await pool.run(snap("python", f"{JOBS}:env", name="ROTA_RUN_ID"), asyncio.Event())
    assert out.result == "run-1"


async def test_python_exception_summary_is_last_line(pool: PythonExecutor) -> None:
    out = await pool.run(snap("python", f"{JOBS}:boom"), asyncio.Event())
    assert out.state == RunState.FAILED
    assert out.error_summary == "ValueError: bad"
    assert out.stderr.startswith("Traceback")
    assert 'raise ValueError("bad")' in out.stderr


async def test_python_print_is_captured(pool: PythonExecutor) -> None:
    out = await pool.run(snap("python", f"{JOBS}:echo_print", msg="hi"), asyncio.Event())
    assert out.state == RunState.SUCCEEDED
    assert (out.stdout, out.stderr, out.result) == ("hi\n", "err: hi\n", "hi")


async def test_python_result_must_be_json(pool: PythonExecutor) -> None:
    out = await pool.run(snap("python", f"{JOBS}:not_json"), asyncio.Event())
    assert out.state == RunState.FAILED
    assert out.error_summary.startswith("result is not JSON-serialisable")


@pytest.mark.parametrize(
    ("target", "summary"),
    [
        (
            "no_such_pkg.mod:fn",
            "cannot import module 'no_such_pkg.mod': ModuleNotFoundError: No module named 'no_such_pkg'",
        ),
        (f"{JOBS}:missing", f"cannot import 'missing' from module '{JOBS}'"),
        (f"{JOBS}:NOT_CALLABLE", f"'{JOBS}:NOT_CALLABLE' is not callable"),
        (JOBS, f"invalid target '{JOBS}': expected 'package.module:function'"),
    ],
)
async def test_python_import_errors(pool: PythonExecutor, target: str, summary: str) -> None:
    out = await pool.run(snap("python", target), asyncio.Event())
    assert out.state == RunState.FAILED
    assert out.error_summary == summary


async def test_python_bad_arguments_fail_the_run(pool: PythonExecutor) -> None:
    out = await pool.run(snap("python", f"{JOBS}:add", a=1), asyncio.Event())
    assert out.state == RunState.FAILED
    assert out.error_summary.startswith("TypeError: ")


async def test_python_timeout_replaces_child(pool: PythonExecutor) -> None:
    pids = {
        (await pool.run(snap("python", f"{JOBS}:pid"), asyncio.Event())).result for _ in range(4)
    }
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            pool.run(snap("python", f"{JOBS}:sleep", seconds=100, timeout=0.3), asyncio.Event())
            for _ in range(2)
        )
    )
    assert time.monotonic() - started < 2
    assert [r.state for r in results] == [RunState.TIMED_OUT] * 2
    assert results[0].error_summary == "timed out after 0.3s"
    for pid in pids:  # both children ran a sleep and were killed
        assert await wait_gone(pid)
    out = await pool.run(snap("python", f"{JOBS}:add", a=1, b=1), asyncio.Event())
    assert (out.state, out.result) == (RunState.SUCCEEDED, 2)
    new_pids = {
        (await pool.run(snap("python", f"{JOBS}:pid"), asyncio.Event())).result for _ in range(4)
    }
    assert not new_pids & pids


async def test_python_timeout_while_queued_keeps_busy_child() -> None:
    ex = PythonExecutor(size=1)
    try:
        busy = asyncio.create_task(
            ex.run(snap("python", f"{JOBS}:sleep", seconds=0.5), asyncio.Event())
        )
        await asyncio.sleep(0.1)
        queued = await ex.run(snap("python", f"{JOBS}:noop", timeout=0.1), asyncio.Event())
        assert queued.state == RunState.TIMED_OUT
        assert (await busy).state == RunState.SUCCEEDED
    finally:
        await ex.close()


async def test_python_cancel(pool: PythonExecutor) -> None:
    cancel = asyncio.Event()
    setter = asyncio.create_task(set_later(cancel, 0.2))
    started = time.monotonic()
    out = await pool.run(snap("python", f"{JOBS}:sleep", seconds=100), cancel)
    await setter
    assert out.state == RunState.CANCELLED
    assert time.monotonic() - started < 2
    out = await pool.run(snap("python", f"{JOBS}:noop"), asyncio.Event())
    assert out.state == RunState.SUCCEEDED


async def test_python_task_cancellation_replaces_child(pool: PythonExecutor) -> None:
    pids = {
        (await pool.run(snap("python", f"{JOBS}:pid"), asyncio.Event())).result for _ in range(4)
    }
    task = asyncio.create_task(
        pool.run(snap("python", f"{JOBS}:sleep", seconds=100), asyncio.Event())
    )
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    outs = await asyncio.gather(
        *(pool.run(snap("python", f"{JOBS}:pid"), asyncio.Event()) for _ in range(10))
    )
    assert {o.state for o in outs} == {RunState.SUCCEEDED}
    assert len(pids - {o.result for o in outs}) == 1  # exactly the busy child was replaced


async def test_python_child_crash(pool: PythonExecutor) -> None:
    out = await pool.run(snap("python", f"{JOBS}:exit_hard", code=3), asyncio.Event())
    assert out.state == RunState.FAILED
    assert out.exit_code == 3
    assert out.error_summary == "worker process exited with code 3"
    outs = await asyncio.gather(
        *(pool.run(snap("python", f"{JOBS}:noop"), asyncio.Event()) for _ in range(10))
    )
    assert {o.state for o in outs} == {RunState.SUCCEEDED}


async def test_python_child_killed_while_idle_is_replaced(pool: PythonExecutor) -> None:
    pid = (await pool.run(snap("python", f"{JOBS}:pid"), asyncio.Event())).result
    os.kill(pid, 9)
    assert await wait_gone(pid)
    outs = await asyncio.gather(
        *(pool.run(snap("python", f"{JOBS}:pid"), asyncio.Event()) for _ in range(10))
    )
    assert {o.state for o in outs} == {RunState.SUCCEEDED}
    assert pid not in {o.result for o in outs}


async def test_python_fresh_process() -> None:
    ex = PythonExecutor(fresh_process=True)
    try:
        outs = [await ex.run(snap("python", f"{JOBS}:bump"), asyncio.Event()) for _ in range(3)]
        assert [o.result for o in outs] == [1, 1, 1]  # no state carried between runs
        pids = [
            (await ex.run(snap("python", f"{JOBS}:pid"), asyncio.Event())).result for _ in range(2)
        ]
        assert pids[0] != pids[1]
        out = await ex.run(
            snap("python", f"{JOBS}:sleep", seconds=100, timeout=0.3), asyncio.Event()
        )
        assert out.state == RunState.TIMED_OUT
        out = await ex.run(snap("python", f"{JOBS}:exit_hard", code=4), asyncio.Event())
        assert out.error_summary == "worker process exited with code 4"
    finally:
        await ex.close()


async def test_python_pool_keeps_state_between_runs() -> None:
    ex = PythonExecutor(size=1)
    try:
        outs = [await ex.run(snap("python", f"{JOBS}:bump"), asyncio.Event()) for _ in range(3)]
        assert [o.result for o in outs] == [1, 2, 3]  # the contrast with fresh_process
    finally:
        await ex.close()


async def test_python_close_stops_children_and_is_idempotent() -> None:
    ex = PythonExecutor(size=2)
    pids = {(await ex.run(snap("python", f"{JOBS}:pid"), asyncio.Event())).result for _ in range(4)}
    await ex.close()
    await ex.close()
    for pid in pids:
        assert await wait_gone(pid)
    with pytest.raises(RuntimeError):
        await ex.run(snap("python", f"{JOBS}:noop"), asyncio.Event())


async def test_python_200_concurrent_noops(pool: PythonExecutor) -> None:
    outs = await asyncio.gather(
        *(pool.run(snap("python", f"{JOBS}:noop"), asyncio.Event()) for _ in range(200))
    )
    assert {o.state for o in outs} == {RunState.SUCCEEDED}


async def benchmark(ex: PythonExecutor, calls: int, concurrency: int = 64) -> float:
    """No-op calls per second through ``ex`` with ``concurrency`` runs in flight."""
    sem = asyncio.Semaphore(concurrency)
    noop = snap("python", f"{JOBS}:noop")

    async def one() -> None:
        async with sem:
            out = await ex.run(noop, asyncio.Event())
            assert out.state == RunState.SUCCEEDED

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return calls / (time.perf_counter() - started)


async def test_python_pool_throughput(pool: PythonExecutor) -> None:
    rate = await benchmark(pool, 5000)
    print(f"python pool: {rate:,.0f} no-op calls/s")
    assert rate > 1000


if __name__ == "__main__":

    async def _main() -> None:
        ex = PythonExecutor()
        await ex.start()
        try:
            for _ in range(3):
                print(f"{await benchmark(ex, 20_000):,.0f} no-op calls/s, pool size {ex.size}")
        finally:
            await ex.close()

    asyncio.run(_main())


async def test_jobs_do_not_see_the_workers_secrets(monkeypatch) -> None:
    monkeypatch.setenv("ROTA_API_TOKEN", "rota_secret_api")
    monkeypatch.setenv("ROTA_NATS_TOKEN", "nats-secret")
    monkeypatch.setenv("ROTA_NODE_ID", "visible-node")
    out = await CommandExecutor().run(snap("command", "env"), asyncio.Event())
    assert "visible-node" in out.stdout
    assert "rota_secret_api" not in out.stdout and "nats-secret" not in out.stdout


def test_python_pool_children_do_not_see_the_workers_secrets() -> None:
    # A fresh interpreter: the pool's forkserver copies the environment it starts with.
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from rota.worker.executors.python import PythonExecutor
from tests.integration.test_executors import snap
async def main():
    ex = PythonExecutor(size=1)
    try:
        for name in ("ROTA_API_TOKEN", "ROTA_NODE_ID"):
            out = await ex.run(snap("python", "{JOBS}:env", name=name), asyncio.Event())
            print(name, out.state, out.result)
    finally:
        await ex.close()
if __name__ == "__main__":
    asyncio.run(main())
"""
    env = {**os.environ, "ROTA_API_TOKEN": "rota_secret_api", "ROTA_NODE_ID": "visible-node"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "ROTA_API_TOKEN SUCCEEDED None" in out.stdout
    assert "ROTA_NODE_ID SUCCEEDED visible-node" in out.stdout


def test_command_run_dies_with_a_killed_worker(tmp_path) -> None:
    pidfile = tmp_path / "pid"
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from rota.worker.executors.command import CommandExecutor
from tests.integration.test_executors import snap
asyncio.run(CommandExecutor().run(snap("command", "sh", "-c", "echo $$ > {pidfile}; exec sleep 60"), asyncio.Event()))
"""
    worker = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = int(pidfile.read_text())
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 5
    while not gone(job):
        assert time.monotonic() < deadline, "the run outlived its killed worker"
        time.sleep(0.05)


async def test_python_live_output_reaches_the_stream_and_a_fork_stays_out(bus) -> None:
    """What the call prints goes to the run's live output (ROTA_LOGS); what a
    process it forked prints does not (it would break the pipe's framing and
    could land in a later run's output)."""
    from rota.domain.ids import new_run_id
    from rota.runs.logs import LiveOutput, live_output, live_tails

    ex = PythonExecutor(size=1)
    await ex.start()
    try:
        s = snap("python", "tests.helpers_jobs:fork_and_shout")
        s.run_id = new_run_id()
        out = LiveOutput(bus.nc, s.run_id, 1)
        token = live_output.set(out)
        try:
            outcome = await ex.run(s, asyncio.Event())
        finally:
            live_output.reset(token)
            await out.close()
        assert outcome.state == RunState.SUCCEEDED and outcome.result == "forked"
        # The child is still healthy for the next call.
        again = await ex.run(snap("python", "tests.helpers_jobs:add", a=1, b=2), asyncio.Event())
        assert again.result == 3
    finally:
        await ex.close()
    attempt, streamed = await live_tails(bus.js, s.run_id)
    assert attempt == 1 and streamed == {"stdout": "parent line\n"}


async def test_live_output_splits_a_huge_write_into_chunks_under_the_payload_limit(bus) -> None:
    from rota.domain.ids import new_run_id
    from rota.runs.logs import CHUNK_CHARS, LiveOutput, follow_chunks

    run_id = new_run_id()
    out = LiveOutput(bus.nc, run_id, 1)
    text = "\x00é" * (CHUNK_CHARS * 3 // 2) + "\n"  # JSON-escaped, over 1 MiB as one record
    out.write("stdout", text.encode())
    await out.close()
    chunks = []
    async for chunk in follow_chunks(bus.js, run_id, idle=1.0):
        if chunk is None or chunk.eof:
            break
        chunks.append(chunk)
    assert len(chunks) == 4 and all(len(c.data) <= CHUNK_CHARS for c in chunks)
    assert "".join(c.data for c in chunks) == text
