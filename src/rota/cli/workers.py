"""``rota workers``: the worker registry, and control calls to one worker."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rota.cli.base import CommandError, setup_django

help = "list workers; ping or query one over the control plane"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rota.cli.client import add_api_args

    add_api_args(parser)
    parser.add_argument("--all", action="store_true", help="also stopped and lost workers")
    parser.add_argument("--include-hidden", action="store_true")
    sub = parser.add_subparsers(dest="workers_cmd")
    ls = sub.add_parser("list", help="workers and their states (the default)")
    add_api_args(ls)
    ls.add_argument("--all", action="store_true", help="also stopped and lost workers")
    ls.add_argument("--include-hidden", action="store_true")
    for name, text in (
        ("drain", "finish current runs, take no more"),
        ("detach", "cut a worker off; its runs go through supervision"),
        ("undock", "clear the detach mark; the worker rejoins under a new id"),
        ("hide", "hide a worker from lists"),
        ("show", "list a hidden worker again"),
    ):
        op = sub.add_parser(name, help=text)
        add_api_args(op)
        op.add_argument("worker_id")
    ping = sub.add_parser("ping", help="Ping a worker over mTLS and print the round trip")
    ping.add_argument("worker_id", nargs="?", help="a worker id from the registry")
    ping.add_argument(
        "--local",
        action="store_true",
        help="ping the worker of this machine or pod at its ROTA_GRPC_PORT, reading only "
        "ROTA_* variables (no NATS, no database): a liveness/readiness probe",
    )
    ping.add_argument("--count", type=int, default=1)
    ping.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for each answer (default 2)"
    )
    st = sub.add_parser("status", help="GetStatus of a worker over mTLS")
    st.add_argument("worker_id")


WORKER_COLUMNS = [
    "worker_id",
    "node_id",
    "state",
    "load",
    "capacity",
    "tags",
    "leader",
    "grpc_endpoint",
]


def _api_command(args: argparse.Namespace) -> int:
    from rota.cli.client import Api, emit

    api = Api(args)
    cmd = args.workers_cmd or "list"
    if cmd == "list":
        params = {
            "scope": "all" if args.all else "active",
            "include_hidden": str(args.include_hidden).lower(),
        }
        emit(args, api.call("GET", "/workers", params=params)["items"], WORKER_COLUMNS)
    elif cmd in ("hide", "show"):
        emit(
            args,
            api.call("PATCH", f"/workers/{args.worker_id}", json={"hidden": cmd == "hide"}),
            WORKER_COLUMNS,
        )
    elif cmd == "drain":
        r = api.call("POST", f"/workers/{args.worker_id}/drain")
        print(f"{args.worker_id} is draining; {r['running']} run(s) still going")
    else:
        emit(args, api.call("POST", f"/workers/{args.worker_id}/{cmd}"), WORKER_COLUMNS)
    return 0


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
    if args.workers_cmd not in ("ping", "status"):
        return _api_command(args)
    if args.workers_cmd == "ping" and args.local:
        if args.worker_id:
            raise CommandError("give a worker id or --local, not both")
        return asyncio.run(_ping_local(args))
    if args.workers_cmd == "ping" and not args.worker_id:
        raise CommandError("which worker?", hint="give a worker id (`rota workers`), or --local")
    setup_django()
    return asyncio.run(_control(args))


def local_endpoint(settings) -> str:  # type: ignore[no-untyped-def]
    """Where this machine's worker listens, seen from the same machine or pod."""
    if settings.grpc_port == 0:
        raise CommandError(
            "ROTA_GRPC_PORT is 0 (any free port): there is no known port to ping",
            hint="give the worker a fixed ROTA_GRPC_PORT, and the probe the same",
        )
    host = settings.grpc_host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    return f"{host}:{settings.grpc_port}"


async def _ping_local(args: argparse.Namespace) -> int:
    """Ping the local worker over mutual TLS with this node's own certificate.

    Built for an exec probe: it reads ROTA_* variables only (never Django or
    NATS), makes one attempt per ping, and exits 2 when the worker does not
    answer in time or refuses the certificate. An answer means the worker's
    event loop runs and its control plane serves with the current certificates.
    """
    from rota.conf import SettingsError, build_settings
    from rota.control.client import ControlClient, ControlError
    from rota.control.tls import TlsError, TlsFiles

    try:
        settings = build_settings()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    endpoint = local_endpoint(settings)
    client = ControlClient(TlsFiles.from_settings(settings), timeout=args.timeout, retries=0)
    try:
        for _ in range(args.count):
            reply, rtt = await client.ping(endpoint)
            print(f"pong from {reply.worker_id} at {endpoint}: {rtt * 1000:.2f} ms")
    except (ControlError, TlsError) as exc:
        raise CommandError(
            f"no answer from the local worker: {exc}",
            hint="is `rota worker` running here with this ROTA_GRPC_PORT, and are "
            "ROTA_TLS_DIR's certificates from its CA?",
        ) from None
    finally:
        await client.close()
    return 0


async def _control(args: argparse.Namespace) -> int:
    from rota.control.client import ControlError

    endpoint = await endpoint_of(args.worker_id)
    client = control_client()
    try:
        if args.workers_cmd == "ping":
            for _ in range(args.count):
                reply, rtt = await client.ping(endpoint)
                print(
                    f"pong from {reply.worker_id} at {endpoint}: {rtt * 1000:.2f} ms"
                    f" (highest epoch {reply.highest_epoch})"
                )
        else:
            from google.protobuf.json_format import MessageToDict

            print(
                json.dumps(
                    MessageToDict(await client.status(endpoint), preserving_proto_field_name=True),
                    indent=2,
                )
            )
    except ControlError as exc:
        raise CommandError(
            str(exc), hint="is the worker running, and are ROTA_TLS_DIR's certificates from its CA?"
        ) from None
    finally:
        await client.close()
    return 0
