"""Expose a ``rota`` CLI command as a Django management command: the same
arguments, the same handler (STYLE §7: define the CLI once, expose it twice)."""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

from django.core.management.base import BaseCommand, CommandError


def management_command(module: ModuleType) -> type[BaseCommand]:
    class Command(BaseCommand):
        help = module.help

        def add_arguments(self, parser: argparse.ArgumentParser) -> None:
            module.add_arguments(parser)

        def handle(self, *args: Any, **options: Any) -> None:
            from rota.errors import RotaError

            namespace = argparse.Namespace(**options)
            try:
                code = module.handle(namespace)
            except RotaError as exc:
                raise CommandError(str(exc)) from None
            if code:
                raise CommandError(f"exited with status {code}", returncode=code)

    return Command
