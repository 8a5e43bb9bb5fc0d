"""Round trip of the control plane's Ping over mutual TLS on loopback.

Starts a real nats-server and a real `rota worker --roles execute` process (its
gRPC server with TLS files made by `rota certs init`'s code), finds the worker's
endpoint in the registry, then pings it N times from this process over one
reused channel and prints p50, p90, p99 and max in milliseconds.

    python bench/grpc_ping.py --count 5000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def run(count: int, warmup: int) -> list[float]:
    import orjson

    from rota.bus.connection import connect
    from rota.bus.server import EmbeddedNats
    from rota.conf import build_settings
    from rota.control.certs import init_certs
    from rota.control.client import ControlClient
    from rota.control.tls import TlsFiles

    tmp = Path(tempfile.mkdtemp(prefix="rota-ping-"))
    init_certs(tmp / "tls", ["bench"])
    nats = EmbeddedNats(tmp / "nats", token="bench")
    nats.start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ROTA_", "DJANGO_"))},
        "ROTA_NATS_URL": nats.url,
        "ROTA_NATS_TOKEN": "bench",
        "ROTA_TLS_DIR": str(tmp / "tls"),
        "ROTA_GRPC_HOST": "127.0.0.1",
        "ROTA_GRPC_PORT": "0",
        "ROTA_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "rota", "worker", "--roles", "execute", "--node-id", "ping"], env=env
    )
    settings = build_settings(environ=env)
    bus = await connect(settings, name="rota-bench", ensure=True)
    client = ControlClient(TlsFiles.from_settings(settings), epoch=1)
    try:
        kv = await bus.js.key_value("rota_workers")
        endpoint = ""
        for _ in range(200):
            try:
                for key in await kv.keys():
                    entry = orjson.loads((await kv.get(key)).value)
                    if entry.get("pid") == worker.pid and entry.get("grpc_endpoint"):
                        endpoint = entry["grpc_endpoint"]
            except Exception:
                pass
            if endpoint:
                break
            await asyncio.sleep(0.1)
        assert endpoint, "the worker did not register"
        for _ in range(warmup):
            await client.ping(endpoint)
        samples = []
        for _ in range(count):
            _, rtt = await client.ping(endpoint)
            samples.append(rtt * 1000)
        return samples
    finally:
        await client.close()
        await bus.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        nats.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    samples = asyncio.run(run(args.count, args.warmup))
    q = statistics.quantiles(samples, n=100)
    print(
        f"Ping over mTLS on loopback, one reused channel, {args.count} calls to a worker process:"
    )
    print(
        f"  p50 {q[49]:.3f} ms   p90 {q[89]:.3f} ms   p99 {q[98]:.3f} ms   max {max(samples):.3f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
