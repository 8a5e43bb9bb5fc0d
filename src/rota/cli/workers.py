"""``rota workers``: the worker registry, and control calls to one worker."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rota.cli.base import CommandError, setup_django

help = "list workers; ping or query one over the control plane"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="workers_cmd", required=True)
    ls = sub.add_parser("list", help="workers in the registry")
    ls.add_argument("--json", action="store_true")
    ping = sub.add_parser("ping", help="Ping a worker over mTLS and print the round trip")
    ping.add_argument("worker_id")
    ping.add_argument("--count", type=int, default=1)
    st = sub.add_parser("status", help="GetStatus of a worker")
    st.add_argument("worker_id")
    dr = sub.add_parser("drain", help="tell a worker to take no new work")
    dr.add_argument("worker_id")


async def registry() -> dict[str, dict[str, Any]]:
    import orjson
    from nats.js.errors import NoKeysError

    from rota.bus import subjects
    from rota.bus.connection import connect
    from rota.conf import get_settings

    bus = await connect(get_settings(), name="rota-cli")
    try:
        kv = await bus.js.key_value(subjects.WORKERS_BUCKET)
        try:
            keys = await kv.keys()
        except NoKeysError:  # nats-py raises on an empty bucket
            return {}
        out = {}
        for key in keys:
            entry = await kv.get(key)
            if entry.value:
                out[key] = orjson.loads(entry.value)
        return out
    finally:
        await bus.close()


async def endpoint_of(worker_id: str) -> str:
    entries = await registry()
    entry = entries.get(worker_id)
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        raise CommandError(
            f"no worker {worker_id!r} in the registry", hint=f"known workers: {known}"
        )
    if not entry.get("grpc_endpoint"):
        raise CommandError(f"worker {worker_id!r} advertises no gRPC endpoint")
    return entry["grpc_endpoint"]


def control_client():  # type: ignore[no-untyped-def]
    from rota.conf import get_settings
    from rota.control.client import ControlClient
    from rota.control.tls import TlsFiles

    return ControlClient(TlsFiles.from_settings(get_settings()))


def handle(args: argparse.Namespace) -> int:
    setup_django()
    return asyncio.run(_handle(args))


async def _handle(args: argparse.Namespace) -> int:
    from rota.cli.client import table
    from rota.control.client import ControlError

    if args.workers_cmd == "list":
        entries = list((await registry()).values())
        if args.json:
            print(json.dumps(entries, indent=2))
        else:
            print(
                table(
                    entries,
                    ["worker_id", "node_id", "state", "load", "capacity", "tags", "grpc_endpoint"],
                )
            )
        return 0
    endpoint = await endpoint_of(args.worker_id)
    client = control_client()
    try:
        if args.workers_cmd == "ping":
            for _ in range(args.count):
                reply, rtt = await client.ping(endpoint)
                print(
                    f"pong from {reply.worker_id} at {endpoint}: {rtt * 1000:.2f} ms (highest epoch {reply.highest_epoch})"
                )
        elif args.workers_cmd == "status":
            from google.protobuf.json_format import MessageToDict

            print(json.dumps(MessageToDict(await client.status(endpoint)), indent=2))
        elif args.workers_cmd == "drain":
            reply = await client.drain(endpoint)
            print(f"{args.worker_id} is draining; {reply.running} run(s) still going")
    except ControlError as exc:
        raise CommandError(
            str(exc), hint="is the worker running, and are ROTA_TLS_DIR's certificates from its CA?"
        ) from None
    finally:
        await client.close()
    return 0
