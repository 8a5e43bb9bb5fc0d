"""``rota wheels``: the wheel registry (docs/wheels.md) — upload, list, history, delete."""

from __future__ import annotations

import argparse
from pathlib import Path

from rota.cli.base import CommandError

help = "the wheel registry: upload, list, history, delete"

WHEEL_COLUMNS = ["name", "tags", "size_bytes", "sha256_hex", "mtime"]
HISTORY_COLUMNS = ["occurred", "action", "wheel_name", "tags", "actor", "source"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rota.cli.client import add_api_args

    sub = parser.add_subparsers(dest="wheels_cmd", required=True)
    up = sub.add_parser("upload", help="upload a wheel for the workers with matching tags")
    add_api_args(up)
    up.add_argument("wheel", type=Path, help="path to a .whl file")
    up.add_argument(
        "--tag",
        action="append",
        default=[],
        dest="tags",
        help="workers with this tag install it (repeat, or comma-separated); none: every worker",
    )
    ls = sub.add_parser("list", help="the wheels in the registry")
    add_api_args(ls)
    hist = sub.add_parser("history", help="uploads and deletes, newest first")
    add_api_args(hist)
    hist.add_argument("--limit", type=int, default=100)
    hist.add_argument("--wheel-name", help="only this wheel file")
    hist.add_argument("--action", choices=["upload", "delete"])
    rm = sub.add_parser("delete", help="remove a wheel; workers fall back to the previous version")
    add_api_args(rm)
    rm.add_argument("wheel_name", help="the wheel's file name")


def handle(args: argparse.Namespace) -> int:
    from rota.cli.client import Api, emit

    api = Api(args)
    if args.wheels_cmd == "upload":
        path: Path = args.wheel
        if not path.is_file():
            raise CommandError(f"{path}: no such file", hint="give the path of a built .whl")
        tags = ",".join(t.strip() for tag in args.tags for t in tag.split(",") if t.strip())
        with path.open("rb") as f:
            out = api.call(
                "POST",
                "/wheels",
                files={"wheel": (path.name, f, "application/octet-stream")},
                data={"tags": tags} if tags else {},
            )
        emit(args, out if args.json else _row(out), WHEEL_COLUMNS)
    elif args.wheels_cmd == "list":
        wheels = api.call("GET", "/wheels")
        emit(args, wheels if args.json else [_row(w) for w in wheels], WHEEL_COLUMNS)
    elif args.wheels_cmd == "history":
        params: dict[str, object] = {"limit": args.limit}
        if args.wheel_name:
            params["wheel_name"] = args.wheel_name
        if args.action:
            params["action"] = args.action
        events = api.call("GET", "/wheels/history", params=params)
        if args.json:
            emit(args, events)
        else:
            emit(args, [_event_row(e) for e in events], HISTORY_COLUMNS)
    else:
        out = api.call("DELETE", f"/wheels/{args.wheel_name}")
        print(f"deleted {out['name']}")
    return 0


def _row(w: dict) -> dict:
    return {**w, "tags": ",".join(w.get("tags") or []) or "(all)"}


def _event_row(e: dict) -> dict:
    from datetime import UTC, datetime

    source = e.get("source") or {}
    return {
        **e,
        "occurred": datetime.fromtimestamp(e["occurred_at"], UTC).isoformat(timespec="seconds"),
        "tags": ",".join(e.get("tags") or []) or "(all)",
        "actor": (e.get("actor") or {}).get("username", ""),
        "source": source.get("x_forwarded_for") or source.get("remote_addr") or "",
    }
