"""``rota schedules`` and ``rota events``: the API's schedules and events."""

from __future__ import annotations

import argparse
import json

from rota.cli.client import Api, Column, add_api_args, emit, human, parse_params

help = "list, add, preview, enable, disable or run schedules"

COLUMNS: list[Column] = [
    "id",
    "name",
    # seed 003 calls it task_name in the API; it is a job.
    ("job", "task_name"),
    "cron_expression",
    "timezone",
    "enabled",
    "execution_policy",
    "next_fire_at",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_api_args(parser)
    sub = parser.add_subparsers(dest="schedules_cmd")
    ls = sub.add_parser("list", help="schedules (the default)")
    add_api_args(ls)
    ls.add_argument("--job")
    ls.add_argument("--category")
    ls.add_argument("--tag")
    add = sub.add_parser("add", help="add a schedule to a job")
    add_api_args(add)
    add.add_argument("job")
    add.add_argument("params", nargs="*", help="key=value (values are JSON when they parse)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="5-field cron, e.g. '*/5 * * * *'")
    when.add_argument(
        "--every", help="minutes:N | hour:MM | day:HH:MM | week:mon,fri:HH:MM | month:D:HH:MM"
    )
    add.add_argument("--params", dest="params_json", help="params as JSON text or @file")
    add.add_argument("--name")
    add.add_argument("--tz", default="UTC", help="IANA time zone (default UTC)")
    add.add_argument("--policy", default="allow", choices=["allow", "skip", "queue", "replace"])
    add.add_argument("--category", default="")
    add.add_argument("--tag", action="append", default=[], dest="tags")
    add.add_argument("--catch-up", type=int, default=300, help="seconds (default 300)")
    for name in ("preview", "enable", "disable", "run", "delete"):
        op = sub.add_parser(name, help=f"{name} a schedule")
        add_api_args(op)
        op.add_argument("schedule_id", type=int)
        if name == "preview":
            op.add_argument("-n", type=int, default=10)


def structured_from_every(text: str) -> dict:
    """``--every`` shorthand → the structured form the API compiles to cron."""
    kind, _, rest = text.partition(":")
    if kind == "minutes":
        return {"every": "minutes", "n": int(rest)}
    if kind == "hour":
        return {"every": "hour", "minute": int(rest)}
    if kind == "day":
        return {"every": "day", "time": rest}
    if kind == "week":
        days, _, at = rest.partition(":")
        return {"every": "week", "days": days.split(","), "time": at}
    if kind == "month":
        day, _, at = rest.partition(":")
        return {"every": "month", "day": int(day), "time": at}
    from rota.cli.base import CommandError

    raise CommandError(
        f"--every {text!r} is not understood", hint="e.g. minutes:5, day:09:30, week:mon,fri:08:00"
    )


def handle(args: argparse.Namespace) -> int:
    api = Api(args)
    cmd = args.schedules_cmd or "list"
    if cmd == "list":
        query = {
            k: v
            for k, v in {
                "job": getattr(args, "job", None),
                "category": getattr(args, "category", None),
                "tag": getattr(args, "tag", None),
            }.items()
            if v
        }
        emit(args, api.call("GET", "/schedules", params=query)["items"], COLUMNS)
    elif cmd == "add":
        body = {
            "task_name": args.job,
            "task_params": parse_params(args.params, args.params_json),
            "timezone": args.tz,
            "execution_policy": args.policy,
            "category": args.category,
            "tags": args.tags,
            "catch_up_seconds": args.catch_up,
            "name": args.name,
        }
        if args.cron:
            body["cron_expression"] = args.cron
        else:
            body["structured"] = structured_from_every(args.every)
        emit(args, api.call("POST", "/schedules", json=body), COLUMNS)
    elif cmd == "preview":
        items = api.call("GET", f"/schedules/{args.schedule_id}/preview", params={"n": args.n})[
            "items"
        ]
        emit(args, items, ["at", "local"])
    elif cmd in ("enable", "disable"):
        emit(args, api.call("POST", f"/schedules/{args.schedule_id}/{cmd}"), COLUMNS)
    elif cmd == "run":
        emit(
            args, api.call("POST", f"/schedules/{args.schedule_id}/run"), ["run_id", "job", "state"]
        )
    elif cmd == "delete":
        api.call("DELETE", f"/schedules/{args.schedule_id}")
        print(f"deleted schedule {args.schedule_id}")
    return 0


def add_events(parser: argparse.ArgumentParser) -> None:
    add_api_args(parser)
    sub = parser.add_subparsers(dest="events_cmd", required=True)
    send = sub.add_parser("send", help="post an event")
    add_api_args(send)
    send.add_argument("name")
    send.add_argument("--payload", default="{}", help="JSON text or @file")
    send.add_argument("--dedupe-key", required=True)
    ls = sub.add_parser("list", help="events with the runs they produced")
    add_api_args(ls)
    ls.add_argument("--name")


def handle_events(args: argparse.Namespace) -> int:
    api = Api(args)
    if args.events_cmd == "send":
        payload = parse_params([], args.payload, "--payload")
        out = api.call(
            "POST",
            "/events",
            json={"name": args.name, "payload": payload, "dedupe_key": args.dedupe_key},
        )
        if args.json:
            print(json.dumps(out, indent=2))
            return 0
        if out.get("duplicate"):
            print(
                f"duplicate: event {out['id']} ({out['name']}) with dedupe key "
                f"{out['dedupe_key']!r} was received at {human(out['created_at'])}; "
                f"nothing new was created. Its {len(out['runs'])} run(s):"
            )
        else:
            print(f"event {out['id']} ({out['name']}): {len(out['runs'])} run(s)")
        for r in out["runs"]:
            print(f"  {r['run_id']}  {r['job']}  {r['state']}")
        for r in out.get("refused", []):
            print(f"  refused by {r['job']}: {r['detail']}")
        return 0
    items = api.call("GET", "/events", params={"name": args.name} if args.name else {})["items"]
    emit(
        args,
        [{**e, "runs": len(e["runs"])} for e in items],
        ["id", "name", "dedupe_key", "created_at", "runs"],
    )
    return 0
