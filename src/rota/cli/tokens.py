"""``rota tokens create``: an API token for a user, made where the database is.

``rota up`` makes the admin and its token on first start; a deployment of
several machines (or Kubernetes) runs this once after ``rota migrate`` instead.
"""

from __future__ import annotations

import argparse
import secrets
import sys

from rota.cli.base import CommandError, setup_django

help = "create an API token for a user (and the user, with --create-admin)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="print a new API token for USER")
    create.add_argument("user", help="the user the token acts as")
    create.add_argument("--name", default="cli", help="what the token is for (shown in lists)")
    create.add_argument(
        "--create-admin",
        action="store_true",
        help="create USER as a superuser if missing (its password is printed on stderr)",
    )


def handle(args: argparse.Namespace) -> int:
    setup_django()
    from django.contrib.auth import get_user_model

    from rota.models import ApiToken

    User = get_user_model()
    user = User.objects.filter(username=args.user).first()
    if user is None:
        if not args.create_admin:
            raise CommandError(
                f"no user {args.user!r}",
                hint="pass --create-admin to create it as a superuser, or create it in the ops UI",
            )
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(args.user, "", password)
        print(f"created superuser {args.user} with password {password}", file=sys.stderr)
    _, raw = ApiToken.issue(user, name=args.name)
    print(raw)
    return 0
