"""``rota server``: the ASGI web process (the HTTP API; the ops UI joins it under /ops/)."""

from __future__ import annotations

import argparse

from rota.cli.base import env_default, env_help, run_system_checks, setup_django

help = "run the web server (HTTP API)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=env_default("ROTA_HOST", "127.0.0.1"),
        help=env_help("bind address", "ROTA_HOST"),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=env_default("ROTA_PORT", 8000, int),
        help=env_help("port", "ROTA_PORT"),
    )


def handle(args: argparse.Namespace) -> int:
    setup_django()
    run_system_checks()
    import uvicorn

    uvicorn.run(
        "rota.standalone.asgi:application",
        host=args.host,
        port=args.port,
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    return 0
