"""What every subcommand shares: env-backed option defaults, Django set-up, and
turning rota's errors into a message and an exit status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from rota.errors import RotaError


class CommandError(RotaError):
    """An error the CLI prints as ``rota: <message>`` plus its hint, exit 2."""


def env_default(name: str, default: Any = None, type_: Callable[[str], Any] = str) -> Any:
    raw = os.environ.get(name)
    return type_(raw) if raw not in (None, "") else default


def env_help(text: str, env: str) -> str:
    return f"{text} [env {env}]"


def configure_logging() -> None:
    """Logging for commands that do not load Django (which configures its own)."""
    import logging

    logging.basicConfig(
        level=os.environ.get("ROTA_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("nats").setLevel(logging.WARNING)


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rota.standalone.settings")
    import django

    django.setup()


def run_system_checks() -> None:
    """Django system checks (rota.E0xx among them); errors stop the command."""
    from django.core import checks

    messages = checks.run_checks()
    errors = [m for m in messages if m.level >= checks.ERROR]
    for m in messages:
        if checks.WARNING <= m.level < checks.ERROR:
            print(
                f"warning: {m.id}: {m.msg}" + (f" (hint: {m.hint})" if m.hint else ""),
                file=sys.stderr,
            )
    if errors:
        text = "; ".join(
            f"{m.id}: {m.msg}" + (f" (hint: {m.hint})" if m.hint else "") for m in errors
        )
        raise CommandError(f"configuration errors: {text}")


def add_common_worker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node-id",
        default=env_default("ROTA_NODE_ID"),
        help=env_help("name of this machine or pod (default: the host name)", "ROTA_NODE_ID"),
    )
