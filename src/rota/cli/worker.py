"""``rota worker``: execute runs (and, with the lead role, project and reconcile)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal

from rota.cli.base import (
    CommandError,
    add_common_worker_args,
    configure_logging,
    env_default,
    env_help,
    run_system_checks,
    setup_django,
)

help = "run a worker: pull runs for its tags and execute them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_worker_args(parser)
    parser.add_argument(
        "--tags",
        default=env_default("ROTA_WORKER_TAGS", "default"),
        help=env_help("comma-separated routing tags this worker serves", "ROTA_WORKER_TAGS"),
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=env_default("ROTA_WORKER_CAPACITY", None, int),
        help=env_help("concurrent runs (default 16)", "ROTA_WORKER_CAPACITY"),
    )
    parser.add_argument(
        "--roles",
        default=env_default("ROTA_WORKER_ROLES", "execute,lead"),
        help=env_help(
            "execute, lead, or both; an execute-only worker needs no database", "ROTA_WORKER_ROLES"
        ),
    )
    parser.add_argument(
        "--pods",
        default=env_default("ROTA_WORKER_PODS"),
        help=env_help("a pods config (TOML) whose tasks this worker runs", "ROTA_WORKER_PODS"),
    )


def _django_configured() -> bool:
    from django.conf import settings as django_settings

    return django_settings.configured


def handle(args: argparse.Namespace) -> int:
    _no_grpc_fork_handlers()
    pods_config = None
    if args.pods:
        from rota.pods.config import load_config

        pods_config = load_config(args.pods)  # a PodConfigError names file, task and key
    roles = {r.strip() for r in args.roles.split(",") if r.strip()}
    unknown = roles - {"execute", "lead"}
    if unknown:
        raise CommandError(
            f"unknown role(s) {', '.join(sorted(unknown))}", hint="use execute, lead or both"
        )
    if "lead" in roles:
        setup_django()  # a leader's duties (projection, scheduling) use the database
        run_system_checks()
        from rota.conf import get_settings

        settings = get_settings()
    elif _django_configured():
        # manage.py rota_worker in a host project: the host's ROTA settings apply.
        from rota.conf import get_settings

        settings = get_settings()
    else:
        # An execute-only worker needs NATS and its TLS files, no database: it
        # reads ROTA_* variables only and never loads Django.
        configure_logging()
        from rota.conf import SettingsError, build_settings

        try:
            settings = build_settings()
        except SettingsError as exc:
            raise CommandError(str(exc)) from None
    from rota.worker.daemon import Worker

    if args.node_id:
        settings = dataclasses.replace(settings, node_id=args.node_id)
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    worker = Worker(
        settings, tags=tags, capacity=args.capacity, roles=roles, pods_config=pods_config
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run_until(stop)

    logging.getLogger(__name__).info("starting worker %s", worker.worker_id)
    run_async(main())
    return 0


def _no_grpc_fork_handlers() -> None:
    """Keep gRPC from installing fork handlers in the worker.

    A command job starts with fork+exec (fork, not vfork: the child sets its
    parent-death signal before exec), and with gRPC's fork support on, every
    such fork runs gRPC's handlers, which find the control server's threads
    busy and print ``fork_posix.cc ... skipping fork() handlers``. The worker
    never forks a child that goes on using gRPC (command children exec at once;
    python children come from a forkserver started fresh), so the handlers have
    nothing to protect. Must run before grpc is imported; jobs get the variable
    as the worker found it (unset unless the user set it)."""
    import sys

    from rota.worker.executors.base import set_worker_only_env

    if "grpc" in sys.modules:  # a host project imported it first: too late to matter
        return
    set_worker_only_env("GRPC_ENABLE_FORK_SUPPORT", "false")


def run_async(coro) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)
