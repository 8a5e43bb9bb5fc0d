"""``rota pods`` and ``rota topics`` as processes, against the session's nats-server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from rota.pods.client import hosts_status, publish
from tests.conftest import eventually
from tests.pods.conftest import FIXTURES, all_idle, task_toml

ROOT = Path(__file__).resolve().parents[2]


async def rota(*args: str, stdin: bytes | None = None, timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.pods.cli_entry",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_pods_check_prints_the_seed_example() -> None:
    code, out, _ = await rota("pods", "check", str(FIXTURES / "seed_example.toml"))
    assert code == 0
    assert "worker" in out and "round_robin" in out and "work.queue,work.priority" in out


async def test_pods_check_names_file_task_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[tasks]]\ntask_name = "w"\ncommand = "x"\n[[tasks.lifecycle]]\ndesired_instances = 0\n'
    )
    code, _, err = await rota("pods", "check", str(bad))
    assert code == 2
    assert f"rota: {bad}: task 'w': lifecycle.desired_instances: must be an integer >= 1" in err


async def test_topics_publish_wait_result_and_latest(nats_server, start_host, uniq: str) -> None:
    topic = f"{uniq}.cli"
    host = await start_host(
        task_toml("cli", "echo_pod.py", topics=[topic], env={"POD_REPLY": "echo"})
    )
    await eventually(all_idle(host, "cli", 1), timeout=10)
    code, out, err = await rota("topics", "publish", topic, "hello there", "--wait-result")
    assert (code, out) == (0, "hello there\n"), err
    code, out, _ = await rota(
        "topics", "publish", topic, "-", "--wait-result", stdin=b"from stdin\n"
    )
    assert out == "from stdin\n"
    code, out, _ = await rota("topics", "latest", topic)
    assert (code, out) == (0, "from stdin\n\n")
    code, _, err = await rota("topics", "publish", f"{uniq}.nobody", "x", "--wait-result")
    assert code == 2 and "no pod task subscribes" in err


async def test_pods_run_standalone_serves_and_stops_on_sigterm(
    bus, uniq: str, tmp_path: Path
) -> None:
    topic = f"{uniq}.standalone"
    config = tmp_path / "pods.toml"
    config.write_text(
        task_toml("solo", "echo_pod.py", topics=[topic], instances=2, env={"POD_REPLY": "echo"})
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.pods.cli_entry",
        "pods",
        "run",
        str(config),
        "--status-interval",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "ROTA_NODE_ID": "cli-node"},
    )
    try:

        async def ready() -> bool:
            hosts = await hosts_status(bus, timeout=0.2)
            return any(h["node_id"] == "cli-node" and h["tasks"][0]["idle"] == 2 for h in hosts)

        await eventually(ready, timeout=15)
        assert await publish(bus, topic, "ping", wait_result=10) == "ping"
        code, out, _ = await rota("pods", "status")
        assert code == 0 and "cli-node" in out and "solo" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "SLOT" in text and "solo" in text and "stopped" in text
