"""``rota assets``: install the ops UI's browser assets from the npm registry."""

from __future__ import annotations

import argparse

from rota.cli.base import CommandError

help = "install the ops UI's browser assets (Bootstrap, DataTables, Notyf, Swagger UI) with npm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force", action="store_true", help="install again even when the files are present"
    )


def handle(args: argparse.Namespace) -> int:
    from rota.ops.assets import VENDOR_DIR, AssetsError, ensure_assets

    try:
        installed = ensure_assets(force=args.force)
    except AssetsError as exc:
        raise CommandError(exc.message, hint=exc.hint) from None
    print(f"{'installed' if installed else 'already present'}: {VENDOR_DIR}")
    return 0
