"""Entry point of the ``rota`` command."""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

from rota.cli import (
    assets,
    certs,
    client,
    doctor,
    leader,
    migrate,
    nats,
    pods,
    schedules,
    server,
    tokens,
    up,
    worker,
    workers,
)
from rota.cli.base import CommandError
from rota.errors import RotaError

COMMANDS = {
    "up": up,
    "server": server,
    "worker": worker,
    "migrate": migrate,
    "tokens": tokens,
    "certs": certs,
    "workers": workers,
    "leader": leader,
    "schedules": schedules,
    "pods": pods,
    "topics": SimpleNamespace(
        help=pods.topics_help, add_arguments=pods.topics_add_arguments, handle=pods.topics_handle
    ),
    "events": SimpleNamespace(
        help="send and list events",
        add_arguments=schedules.add_events,
        handle=schedules.handle_events,
    ),
    "doctor": doctor,
    "nats": nats,
    "assets": assets,
    "jobs": SimpleNamespace(
        help="define and list jobs", add_arguments=client.add_jobs, handle=client.handle_jobs
    ),
    "submit": SimpleNamespace(
        help="submit a run of a job or a flow",
        add_arguments=client.add_submit,
        handle=client.handle_submit,
    ),
    "runs": SimpleNamespace(
        help="list runs", add_arguments=client.add_runs, handle=client.handle_runs
    ),
    "cancel": SimpleNamespace(
        help="cancel a run", add_arguments=client.add_show, handle=client.handle_cancel
    ),
    "show": SimpleNamespace(
        help="show one run", add_arguments=client.add_show, handle=client.handle_show
    ),
    "watch": SimpleNamespace(
        help="follow a run (and its tasks) until it ends",
        add_arguments=client.add_watch,
        handle=client.handle_watch,
    ),
    "tasks": SimpleNamespace(
        help="the tasks of a flow run", add_arguments=client.add_tasks, handle=client.handle_tasks
    ),
    "logs": SimpleNamespace(
        help="a run's output; -f follows it live",
        add_arguments=client.add_logs,
        handle=client.handle_logs,
    ),
    "login": SimpleNamespace(
        help="check and save the API URL and token for later commands",
        add_arguments=client.add_login,
        handle=client.handle_login,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rota", description="rota: distributed job scheduling and execution"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, mod in COMMANDS.items():
        p = sub.add_parser(name, help=mod.help, description=mod.help)
        mod.add_arguments(p)
        p.set_defaults(handle=mod.handle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handle(args) or 0)
    except CommandError as exc:
        print(f"rota: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except RotaError as exc:
        print(f"rota: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
