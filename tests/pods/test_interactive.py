"""The Interactive protocol: the host's stdin (here a pipe) is the pod's output,
and messages to the task are printed."""

from __future__ import annotations

import os

from rota.pods.client import publish
from rota.pods.subjects import topic_subject
from tests.conftest import eventually


def console_toml(uniq: str) -> str:
    return f"""
[[tasks]]
protocol = "Interactive"
task_name = "console"
stdout_topic = "{uniq}.typed"
subscribe_topics = ["{uniq}.show"]
"""


async def test_typed_lines_are_published_and_messages_printed(bus, start_host, uniq: str) -> None:
    got: list[tuple[str, str]] = []

    async def collect(msg) -> None:  # type: ignore[no-untyped-def]
        got.append((msg.subject, msg.data.decode()))

    sub = await bus.nc.subscribe(f"rota.topic.{uniq}.>", cb=collect)
    r, w = os.pipe()
    shown: list[str] = []
    try:
        host = await start_host(
            console_toml(uniq),
            interactive=True,
            terminal_stdin=os.fdopen(r, "rb"),
            echo=shown.append,
        )
        os.write(w, f'"{uniq}.cmd": do it\njust typing\n'.encode())

        async def published() -> bool:
            return len(got) >= 2

        await eventually(published, timeout=5)
        assert (topic_subject(f"{uniq}.cmd"), "do it") in got
        assert (topic_subject(f"{uniq}.typed"), "just typing") in got

        for i in range(3):  # a terminal is always ready: nothing queues
            await publish(bus, f"{uniq}.show", f"news {i}")

        async def printed() -> bool:
            return len(shown) == 3

        await eventually(printed, timeout=5)
        assert shown[0].startswith("[console-") and shown[0].endswith(f"] {uniq}.show: news 0")
        os.close(w)
        w = -1

        async def finished() -> bool:
            return host.status()["tasks"][0]["instances"][0]["state"] == "finished"

        await eventually(finished, timeout=5)
    finally:
        await sub.unsubscribe()
        if w >= 0:
            os.close(w)


async def test_interactive_tasks_are_skipped_without_a_terminal(start_host, uniq: str) -> None:
    host = await start_host(console_toml(uniq), interactive=False)
    (task,) = host.status()["tasks"]
    assert task["state"] == "disabled" and task["instances"] == []
