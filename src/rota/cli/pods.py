"""``rota pods`` (run a pods config, see pod hosts' status, check a config) and
``rota topics`` (publish to a topic, read a topic's latest message).

Neither loads Django: they need NATS only (``ROTA_NATS_URL``, ``ROTA_NATS_TOKEN``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from typing import Any

from rota.cli.base import CommandError, configure_logging, env_default, env_help

help = (
    "run pods (long-running processes that exchange topic messages on stdin/stdout, "
    "the MiclowStdIO line protocol) from a config file; show their status"
)
topics_help = "publish to a topic (and wait for its .result); read a topic's latest message"


# -- rota pods --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pods_cmd", required=True)
    run = sub.add_parser("run", help="run the tasks of a pods config on this machine")
    run.add_argument("config", help="the pods TOML file")
    run.add_argument(
        "--node-id",
        default=env_default("ROTA_NODE_ID"),
        help=env_help(
            "name of this machine in the status (default: the host name)", "ROTA_NODE_ID"
        ),
    )
    run.add_argument(
        "--embedded-nats",
        action="store_true",
        help="start a private nats-server on a free port instead of using ROTA_NATS_URL",
    )
    run.add_argument(
        "--status-interval",
        type=float,
        default=env_default("ROTA_PODS_STATUS_INTERVAL", 10.0, float),
        help=env_help(
            "print the status every this many seconds (0: only at start and exit)",
            "ROTA_PODS_STATUS_INTERVAL",
        ),
    )
    run.add_argument(
        "--stop-grace",
        type=float,
        default=env_default("ROTA_PODS_STOP_GRACE", 5.0, float),
        help=env_help("seconds between SIGTERM and SIGKILL at shutdown", "ROTA_PODS_STOP_GRACE"),
    )
    run.add_argument(
        "--no-interactive",
        action="store_true",
        help="do not run Interactive tasks (leave this terminal's stdin alone)",
    )
    st = sub.add_parser("status", help="the status of every pod host (asked over NATS)")
    st.add_argument("--json", action="store_true")
    st.add_argument("--timeout", type=float, default=1.0, help="seconds to collect answers")
    chk = sub.add_parser("check", help="load a pods config and print its tasks, or its error")
    chk.add_argument("config")


def handle(args: argparse.Namespace) -> int:
    configure_logging()
    if args.pods_cmd == "check":
        return _check(args)
    if args.pods_cmd == "run":
        return _run_sync(_run(args))
    return _run_sync(_status(args))


def _run_sync(coro: Any) -> int:
    try:
        import uvloop

        return int(uvloop.run(coro) or 0)
    except ImportError:
        return int(asyncio.run(coro) or 0)


def _settings() -> Any:
    from rota.conf import SettingsError, build_settings

    try:
        return build_settings()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


async def _connect(settings: Any, name: str, *, ensure: bool = False) -> Any:
    from nats.js.errors import NotFoundError

    from rota.bus.connection import connect

    try:
        return await connect(settings, name=name, ensure=ensure)
    except NotFoundError:
        # A fresh NATS without rota's streams and buckets: create them once.
        return await connect(settings, name=name, ensure=True)


def _check(args: argparse.Namespace) -> int:
    from rota.pods.config import load_config

    config = load_config(args.config)
    rows = [
        {
            "task": t.name,
            "protocol": t.protocol.value,
            "instances": t.desired_instances,
            "mode": t.mode.value,
            "command": " ".join([t.command, *t.args]).strip(),
            "topics": ",".join(t.subscribe_topics),
        }
        for t in config.tasks
    ]
    from rota.cli.client import table

    print(table(rows, ["task", "protocol", "instances", "mode", "command", "topics"]))
    return 0


def status_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per instance of a host's :meth:`PodHost.status`, for a table."""
    rows = []
    for t in status["tasks"]:
        for inst in t["instances"] or [{"slot": "-", "state": t["state"]}]:
            rows.append(
                {
                    "host": status["host_id"],
                    "task": t["task"],
                    "mode": t["mode"],
                    "slot": inst.get("slot"),
                    "state": inst.get("state"),
                    "pod": (inst.get("pod_id") or "")[:8],
                    "pid": inst.get("pid"),
                    "delivered": inst.get("delivered"),
                    "restarts": inst.get("restarts"),
                    "queued": t["queued"],
                    "next_start_in": inst.get("next_start_in"),
                    "error": inst.get("last_error"),
                }
            )
    return rows


STATUS_COLUMNS = [
    "host",
    "task",
    "mode",
    "slot",
    "state",
    "pod",
    "pid",
    "delivered",
    "restarts",
    "queued",
    "next_start_in",
    "error",
]


def _print_status(status: dict[str, Any]) -> None:
    from rota.cli.client import table

    print(table(status_rows(status), STATUS_COLUMNS), flush=True)


async def _run(args: argparse.Namespace) -> int:
    from rota.pods.config import load_config
    from rota.pods.host import PodHost

    config = load_config(args.config)  # a PodConfigError names file, task and key
    settings = _settings()
    server = None
    if args.embedded_nats:
        import tempfile
        from pathlib import Path

        from rota.bus.server import EmbeddedNats

        server = EmbeddedNats(
            Path(tempfile.mkdtemp(prefix="rota-pods-nats-")), token=settings.nats_token
        )
        server.start()
        settings = dataclasses.replace(settings, nats_url=server.url)
        print(
            f"embedded nats-server at {server.url}: export ROTA_NATS_URL={server.url}", flush=True
        )
    try:
        bus = await _connect(settings, "rota-pods", ensure=True)
        host = PodHost(
            config,
            node_id=args.node_id or settings.node_id,
            stop_grace=args.stop_grace,
            interactive=not args.no_interactive,
            latest_replicas=settings.nats_replicas,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await host.start(bus)
        try:
            # First status once the pods had a moment to start and report idle.
            with _suppress_timeout():
                await asyncio.wait_for(stop.wait(), 1.0)
            _print_status(host.status())
            while not stop.is_set():
                timeout = args.status_interval if args.status_interval > 0 else None
                with _suppress_timeout():
                    await asyncio.wait_for(stop.wait(), timeout)
                if not stop.is_set():
                    _print_status(host.status())
        finally:
            await host.stop()
            _print_status(host.status())
            await bus.close()
    finally:
        if server is not None:
            server.stop()
    return 0


def _suppress_timeout() -> Any:
    import contextlib

    return contextlib.suppress(TimeoutError)


async def _status(args: argparse.Namespace) -> int:
    from rota.pods.client import hosts_status

    bus = await _connect(_settings(), "rota-cli")
    try:
        hosts = await hosts_status(bus, timeout=args.timeout)
    finally:
        await bus.close()
    if args.json:
        print(json.dumps(hosts, indent=2, ensure_ascii=False))
        return 0
    if not hosts:
        print("no pod hosts answered", file=sys.stderr)
        return 1
    from rota.cli.client import table

    rows = [r for h in hosts for r in status_rows(h)]
    print(table(rows, STATUS_COLUMNS))
    return 0


# -- rota topics ------------------------------------------------------------------


def topics_add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="topics_cmd", required=True)
    pub = sub.add_parser("publish", help="publish DATA on TOPIC")
    pub.add_argument("topic")
    pub.add_argument("data", help="the message; '-' reads it from stdin")
    pub.add_argument(
        "--wait-result",
        action="store_true",
        help="wait for TOPIC.result from the pod that takes the message, and print it",
    )
    pub.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the result (default 30)"
    )
    lt = sub.add_parser("latest", help="print the latest message published on TOPIC")
    lt.add_argument("topic")


def topics_handle(args: argparse.Namespace) -> int:
    configure_logging()
    return _run_sync(_topics(args))


async def _topics(args: argparse.Namespace) -> int:
    from rota.pods.client import latest, publish

    bus = await _connect(_settings(), "rota-topics")
    try:
        if args.topics_cmd == "latest":
            value = await latest(bus, args.topic)
            if value is None:
                print(f"no message on topic {args.topic!r}", file=sys.stderr)
                return 1
            print(value)
            return 0
        data = sys.stdin.read() if args.data == "-" else args.data
        result = await publish(
            bus, args.topic, data, wait_result=args.timeout if args.wait_result else None
        )
        if result is not None:
            print(result)
        return 0
    finally:
        await bus.close()
