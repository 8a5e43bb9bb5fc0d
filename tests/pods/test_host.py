"""PodHost end to end: real pod processes, a real nats-server (no mocks)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

from rota.pods.client import publish
from rota.pods.config import Mode
from tests.conftest import eventually
from tests.pods.conftest import all_idle, read_logs, task_toml


async def test_1000_messages_round_robin_exactly_once_to_idle_instances(
    bus, start_host, uniq: str, log_dir: Path
) -> None:
    topic = f"{uniq}.work"
    host = await start_host(
        task_toml(
            "worker", "echo_pod.py", topics=[topic], instances=3, env={"POD_LOG_DIR": str(log_dir)}
        )
    )
    await eventually(all_idle(host, "worker", 3), timeout=10)
    n = 1000
    results = await asyncio.gather(
        *(publish(bus, topic, f"m{i}", wait_result=20) for i in range(n))
    )
    # Every requester got the answer to its own message.
    assert [r.split(" ", 1)[1] for r in results] == [f"m{i}" for i in range(n)]

    logs = read_logs(log_dir)
    assert len(logs) == 3
    received = [
        line.split(" ", 2)[2] for lines in logs.values() for line in lines if line.startswith("MSG")
    ]
    assert sorted(received) == sorted(f"m{i}" for i in range(n))  # exactly once each
    assert not [p for p, lines in logs.items() if "VIOLATION" in lines]  # idle ones only
    per_pod = Counter(r.split(" ", 1)[0] for r in results)
    assert len(per_pod) == 3 and min(per_pod.values()) > n / 3 * 0.5, per_pod
    status = host.status()["tasks"][0]
    assert status["queued"] == 0 and sum(i["delivered"] for i in status["instances"]) == n


async def test_slow_instances_queue_the_surplus_and_drain_it(
    bus, start_host, uniq: str, log_dir: Path
) -> None:
    topic = f"{uniq}.slow"
    host = await start_host(
        task_toml(
            "slow",
            "echo_pod.py",
            topics=[topic],
            instances=3,
            env={"POD_LOG_DIR": str(log_dir), "POD_SLEEP": "0.5"},
        )
    )
    await eventually(all_idle(host, "slow", 3), timeout=10)
    started = time.monotonic()
    requests = [asyncio.create_task(publish(bus, topic, f"s{i}", wait_result=10)) for i in range(9)]

    async def queued() -> int:
        return host.status()["tasks"][0]["queued"]

    assert await eventually(queued, timeout=2) == 6  # 3 taken, 6 wait
    results = await asyncio.gather(*requests)
    elapsed = time.monotonic() - started
    assert sorted(r.split(" ", 1)[1] for r in results) == sorted(f"s{i}" for i in range(9))
    assert 1.4 <= elapsed < 4.0, elapsed  # three rounds of 0.5 s
    assert sorted(Counter(r.split(" ", 1)[0] for r in results).values()) == [3, 3, 3]
    assert not [p for p, lines in read_logs(log_dir).items() if "VIOLATION" in lines]


async def test_two_tasks_both_get_a_topic_and_a_task_not_its_own(
    bus, start_host, uniq: str, log_dir: Path
) -> None:
    news = f"{uniq}.news"
    env = {"POD_LOG_DIR": str(log_dir), "NEWS_TOPIC": news}
    host = await start_host(
        task_toml("alpha", "publisher_pod.py", topics=[news], env=env)
        + task_toml("beta", "publisher_pod.py", topics=[news], env=env)
    )
    await eventually(all_idle(host, "alpha", 1), timeout=10)
    await eventually(all_idle(host, "beta", 1), timeout=10)
    await publish(bus, news, "from-outside")

    def by_task() -> dict[str, list[str]]:
        logs = read_logs(log_dir)
        out: dict[str, list[str]] = {}
        for t in host.status()["tasks"]:
            pod = t["instances"][0]["pod_id"]
            out[t["task"]] = sorted(line for line in logs.get(pod, []) if line.startswith("MSG"))
        return out

    async def both_got_outside() -> bool:
        return all(any("from-outside" in m for m in msgs) for msgs in by_task().values())

    await eventually(both_got_outside, timeout=5)
    await asyncio.sleep(0.2)  # time for a wrong delivery to show up
    got = by_task()
    assert got["alpha"] == [f"MSG {news} from-beta", f"MSG {news} from-outside"]
    assert got["beta"] == [f"MSG {news} from-alpha", f"MSG {news} from-outside"]


async def test_broadcast_mode_gives_every_instance_every_message(
    bus, start_host, uniq: str, log_dir: Path
) -> None:
    topic = f"{uniq}.ev"
    host = await start_host(
        task_toml(
            "fan",
            "echo_pod.py",
            topics=[topic],
            instances=3,
            mode=Mode.BROADCAST.value,
            env={"POD_LOG_DIR": str(log_dir)},
        )
    )
    await eventually(all_idle(host, "fan", 3), timeout=10)
    for i in range(5):
        await publish(bus, topic, f"e{i}")

    async def all_received() -> bool:
        logs = read_logs(log_dir)
        return len(logs) == 3 and all(
            sum(1 for x in lines if x.startswith("MSG")) == 5 for lines in logs.values()
        )

    await eventually(all_received, timeout=5)


async def test_concurrent_requesters_each_get_their_own_result(
    bus, start_host, uniq: str, log_dir: Path
) -> None:
    """Two requester pods (one task, two instances) call a two-instance service
    at the same time; every answer reaches the instance that asked."""
    svc = f"{uniq}.svc"
    host = await start_host(
        task_toml(
            "svc",
            "echo_pod.py",
            topics=[svc],
            instances=2,
            env={"POD_REPLY": "echo", "POD_SLEEP": "0.01"},
        )
        + task_toml(
            "caller",
            "requester_pod.py",
            instances=2,
            env={"POD_LOG_DIR": str(log_dir), "TARGET": svc, "REQUESTS": "20"},
        )
    )

    async def done() -> bool:
        logs = read_logs(log_dir)
        return len(logs) == 2 and all("DONE" in lines for lines in logs.values())

    await eventually(done, timeout=15)
    for lines in read_logs(log_dir).values():
        assert [x for x in lines if not x.startswith("OK")] == ["DONE"], lines
        assert len(lines) == 21
    # And from outside: concurrent requesters on one connection are not crossed.
    results = await asyncio.gather(*(publish(bus, svc, f"x{i}", wait_result=10) for i in range(50)))
    assert results == [f"x{i}" for i in range(50)]
    assert host.status()["tasks"][1]["restarts"] == 0


async def test_system_pull_and_unknown_command(bus, start_host, uniq: str) -> None:
    ask = f"{uniq}.ask"
    known = f"{uniq}.known"
    host = await start_host(task_toml("sys", "system_pod.py", topics=[ask]))
    await eventually(all_idle(host, "sys", 1), timeout=10)
    await publish(bus, known, "first")
    await publish(bus, known, "the latest")
    await bus.nc.flush()

    pull, unknown = json.loads(await publish(bus, ask, known, wait_result=5))
    assert pull == ["system.pull", ["success", "the latest"]]
    assert unknown == ["system.no-such-command.result", ["Unknown Command"]]

    missing = f"{uniq}.never"
    pull, _ = json.loads(await publish(bus, ask, missing, wait_result=5))
    assert pull == ["system.pull", ["error", f"No message found for topic '{missing}'"]]


async def test_plain_lines_blocks_and_unfinished_block_are_published(
    bus, start_host, uniq: str
) -> None:
    got: dict[str, list[str]] = {}

    async def collect(msg) -> None:  # type: ignore[no-untyped-def]
        got.setdefault(msg.subject, []).append(msg.data.decode())

    from rota.pods.subjects import topic_subject

    subs = [
        await bus.nc.subscribe(topic_subject(t), cb=collect)
        for t in (f"{uniq}.out", f"{uniq}.err", "chat.block", "chat.open")
    ]
    echoed: list[str] = []
    try:
        await start_host(
            task_toml(
                "chat",
                "chatty_pod.py",
                extra=f'stdout_topic = "{uniq}.out"\nstderr_topic = "{uniq}.err"\nview_stdout = true\nview_stderr = true\n',
            ),
            echo=echoed.append,
        )

        async def seen() -> bool:
            return len(got) == 4

        await eventually(seen, timeout=5)
    finally:
        for s in subs:
            await s.unsubscribe()
    assert got[topic_subject(f"{uniq}.out")][0] == "hello plain"
    assert got[topic_subject(f"{uniq}.err")][0] == "oops on stderr"
    assert got[topic_subject("chat.block")][0] == "line one\nline two\n"
    assert got[topic_subject("chat.open")][0] == "unfinished\n"
    assert any(e.startswith("[chat-") and e.endswith(" stdout] hello plain") for e in echoed)
    assert any(e.endswith(" stderr] oops on stderr") for e in echoed)


async def test_status_over_nats(bus, start_host, uniq: str) -> None:
    from rota.pods.client import hosts_status

    host = await start_host(task_toml("st", "echo_pod.py", topics=[f"{uniq}.st"], instances=2))
    await eventually(all_idle(host, "st", 2), timeout=10)
    hosts = await hosts_status(bus, timeout=0.3)
    mine = next(h for h in hosts if h["host_id"] == host.host_id)
    (task,) = mine["tasks"]
    assert (task["task"], task["desired"], task["idle"], task["busy"], task["queued"]) == (
        "st",
        2,
        2,
        0,
        0,
    )
    assert [i["state"] for i in task["instances"]] == ["idle", "idle"]


async def test_the_last_answer_of_an_exiting_pod_still_arrives(bus, start_host, uniq: str) -> None:
    """A pod that answers and exits: its answer reaches the requester, nothing is
    handed to it after it exited, and its replacement takes the next message."""
    topic = f"{uniq}.once"
    host = await start_host(task_toml("once", "oneshot_pod.py", topics=[topic]))
    answers = [await publish(bus, topic, f"q{i}", wait_result=10) for i in range(3)]
    assert answers == ["q0", "q1", "q2"]
    assert host.status()["tasks"][0]["restarts"] >= 2


async def test_a_flooding_pod_is_paused_not_buffered_without_bound(monkeypatch) -> None:
    """Backpressure: past PAUSE_AT waiting chunks the pod's pipes stop being read;
    reading resumes once the handler caught up."""
    from rota.pods import host as host_mod
    from rota.pods.config import loads_config

    class FakeIO:
        pid = None
        calls: list[str] = []

        def pause_reading(self) -> None:
            self.calls.append("pause")

        def resume_reading(self) -> None:
            self.calls.append("resume")

    config = loads_config('[[tasks]]\ntask_name = "flood"\ncommand = "x"\n')
    host = host_mod.PodHost(config)
    handled: list[object] = []

    async def handle(rt, stream, event) -> None:  # type: ignore[no-untyped-def]
        handled.append(event)

    monkeypatch.setattr(host, "_handle", handle)
    rt = host_mod.PodRuntime(host, config.tasks[0], "p" * 32, 0)
    rt.io = FakeIO()  # type: ignore[assignment]
    for i in range(host_mod.PAUSE_AT + 5):
        rt.on_output("stdout", f"line {i}\n".encode())
    assert FakeIO.calls == ["pause"]
    consumer = asyncio.create_task(rt.consume())
    while rt.events.qsize():
        await asyncio.sleep(0)
    rt.events.put_nowait(None)
    await consumer
    assert FakeIO.calls == ["pause", "resume"]
    assert len(handled) == host_mod.PAUSE_AT + 5
