"""The ``pod`` executor against real pods and NATS."""

from __future__ import annotations

import asyncio

from rota.domain.snapshot import RunSnapshot
from rota.domain.states import RunState
from rota.pods.executor import PodExecutor
from tests.conftest import eventually
from tests.pods.conftest import all_idle, task_toml


def snap(target: str, timeout: float | None = 5, **params: object) -> RunSnapshot:
    return RunSnapshot(
        run_id="r1", job="j", kind="pod", target=target, params=params, timeout=timeout
    )


async def test_params_go_to_the_topic_and_the_result_ends_the_run(
    bus, start_host, uniq: str
) -> None:
    topic = f"{uniq}.calc"
    host = await start_host(
        task_toml("calc", "echo_pod.py", topics=[topic], env={"POD_REPLY": "echo"})
    )
    await eventually(all_idle(host, "calc", 1), timeout=10)
    ex = PodExecutor(bus)
    out = await ex.run(snap(topic, x=1, name="ü"), asyncio.Event())
    assert out.state == RunState.SUCCEEDED
    assert out.result == '{"x":1,"name":"ü"}'
    await ex.close()
    await ex.close()  # idempotent


async def test_no_subscriber_fails_at_once(bus, uniq: str) -> None:
    out = await PodExecutor(bus).run(snap(f"{uniq}.nobody"), asyncio.Event())
    assert out.state == RunState.FAILED
    assert "no pod task subscribes" in out.error_summary


async def test_no_result_in_time_is_timed_out(bus, start_host, uniq: str) -> None:
    topic = f"{uniq}.slow"
    host = await start_host(
        task_toml("slow", "echo_pod.py", topics=[topic], env={"POD_SLEEP": "2"})
    )
    await eventually(all_idle(host, "slow", 1), timeout=10)
    out = await PodExecutor(bus).run(snap(topic, timeout=0.3), asyncio.Event())
    assert out.state == RunState.TIMED_OUT
    assert "within 0.3s" in out.error_summary


async def test_cancel(bus, start_host, uniq: str) -> None:
    topic = f"{uniq}.slow"
    host = await start_host(
        task_toml("slow", "echo_pod.py", topics=[topic], env={"POD_SLEEP": "2"})
    )
    await eventually(all_idle(host, "slow", 1), timeout=10)
    cancel = asyncio.Event()
    run = asyncio.create_task(PodExecutor(bus).run(snap(topic, timeout=None), cancel))
    await asyncio.sleep(0.2)
    cancel.set()
    out = await asyncio.wait_for(run, 2)
    assert out.state == RunState.CANCELLED


async def test_invalid_target_fails(bus) -> None:
    out = await PodExecutor(bus).run(snap(""), asyncio.Event())
    assert out.state == RunState.FAILED
