"""Round-robin request/reply throughput of pods.

Starts a private nats-server, then a pod host in its own process (`rota pods run`
through rota.cli.pods, as an operator runs it) with one round_robin task of 3
echo pods (tests/pods/pods/echo_pod.py: answers T with T.result, then reports
idle). This process sends N requests with `rota.pods.publish(..., wait_result=)`
keeping a window of W in flight, and counts the replies. Prints replies/s and
latency percentiles. The target is 3,000 messages/s with replies.

    python bench/pods.py --messages 20000 --window 256
    python bench/pods.py --in-process      # host and client share one event loop
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ECHO = ROOT / "tests" / "pods" / "pods" / "echo_pod.py"
TOPIC = "bench.echo"
TARGET = 3000.0

CONFIG = """
[[tasks]]
protocol = "MiclowStdIO"
task_name = "echo"
command = "{python}"
args = ["{echo}"]
subscribe_topics = ["{topic}"]
environment_vars = {{ POD_REPLY = "echo" }}

  [[tasks.lifecycle]]
  desired_instances = {instances}
  mode = "round_robin"
"""

#: `rota pods run` as cli/main.py runs it, without depending on its wiring.
RUN_HOST = (
    "import argparse, sys\n"
    "from rota.cli import pods\n"
    "p = argparse.ArgumentParser(prog='rota pods')\n"
    "pods.add_arguments(p)\n"
    "sys.exit(pods.handle(p.parse_args(sys.argv[1:])))\n"
)


async def wait_ready(bus, instances: int, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    from rota.pods.client import hosts_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for h in await hosts_status(bus, timeout=0.2):
            if h["tasks"] and h["tasks"][0]["idle"] == instances:
                return
    raise SystemExit("the pod host did not get ready")


async def drive(bus, n: int, window: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    from rota.pods.client import publish

    latencies: list[float] = []
    sem = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            data = f"m{i}"
            result = await publish(bus, TOPIC, data, wait_result=30)
            latencies.append(time.perf_counter() - t0)
            if result != data:
                raise SystemExit(f"wrong reply {result!r} for {data!r}")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started, latencies


async def main(args: argparse.Namespace) -> float:
    from rota.bus.connection import connect
    from rota.bus.server import EmbeddedNats
    from rota.conf import build_settings
    from rota.pods.config import loads_config
    from rota.pods.host import PodHost

    tmp = Path(tempfile.mkdtemp(prefix="rota-bench-pods-"))
    server = EmbeddedNats(tmp / "nats", log_file=tmp / "nats.log")
    server.start()
    settings = dataclasses.replace(build_settings(environ={}), nats_url=server.url)
    config_text = CONFIG.format(
        python=sys.executable, echo=ECHO, topic=TOPIC, instances=args.instances
    )
    config_path = tmp / "pods.toml"
    config_path.write_text(config_text)
    host_proc = None
    host = None
    bus = await connect(settings, name="bench-pods", ensure=True)
    try:
        if args.in_process:
            host = PodHost(loads_config(config_text), echo=lambda line: None)
            await host.start(bus)
        else:
            env = {**os.environ, "ROTA_NATS_URL": server.url, "ROTA_LOG_LEVEL": "WARNING"}
            env.pop("ROTA_NATS_TOKEN", None)
            host_proc = subprocess.Popen(
                [sys.executable, "-c", RUN_HOST, "run", str(config_path), "--status-interval", "0"],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        await wait_ready(bus, args.instances)
        await drive(bus, min(500, args.messages), args.window)  # warm up
        elapsed, lat = await drive(bus, args.messages, args.window)
    finally:
        if host is not None:
            await host.stop()
        if host_proc is not None:
            host_proc.send_signal(signal.SIGTERM)
            host_proc.wait(15)
        await bus.close()
        server.stop()
    rate = args.messages / elapsed
    lat.sort()
    pct = {p: lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1000 for p in (50, 90, 99)}
    where = "same process" if args.in_process else "separate process"
    print(
        f"pods round robin: {args.messages} requests to {args.instances} echo pods "
        f"(host in a {where}, window {args.window}) in {elapsed:.2f}s"
    )
    print(f"  {rate:,.0f} messages/s with replies (target {TARGET:,.0f})")
    print(f"  latency p50 {pct[50]:.1f} ms, p90 {pct[90]:.1f} ms, p99 {pct[99]:.1f} ms")
    return rate


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--window", type=int, default=256, help="requests in flight")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        rate = uvloop.run(main(args))
    except ImportError:
        rate = asyncio.run(main(args))
    return 0 if rate >= TARGET else 1


if __name__ == "__main__":
    sys.exit(cli())
