"""``rota migrate``: apply database migrations."""

from __future__ import annotations

import argparse

from rota.cli.base import setup_django

help = "apply database migrations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def handle(args: argparse.Namespace) -> int:
    setup_django()
    from django.core.management import call_command

    call_command("migrate", interactive=False)
    return 0
