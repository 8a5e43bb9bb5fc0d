"""The API client behind ``rota jobs``, ``rota submit``, ``rota runs`` and ``rota show``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from rota.cli.base import CommandError, env_default, env_help


def add_api_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=env_default("ROTA_API_URL", "http://127.0.0.1:8000"),
        help=env_help("API base URL", "ROTA_API_URL"),
    )
    parser.add_argument(
        "--token",
        default=env_default("ROTA_API_TOKEN", ""),
        help=env_help("API token", "ROTA_API_TOKEN"),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


class Api:
    def __init__(self, args: argparse.Namespace) -> None:
        token = args.token
        if not token:
            data_dir = Path(os.environ.get("ROTA_DATA_DIR", ".rota"))
            path = data_dir / "admin.token"
            if path.exists():
                token = path.read_text().strip()
        if not token:
            raise CommandError(
                "no API token", hint="pass --token, set ROTA_API_TOKEN, or load .rota/rota.env"
            )
        self.client = httpx.Client(
            base_url=args.url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.url = args.url

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CommandError(
                f"cannot reach the rota API at {self.url}: {exc}",
                hint="is `rota up` running? see `rota doctor`",
            ) from None
        if r.status_code >= 400:
            try:
                body = r.json()
                detail = body.get("detail", body)
            except ValueError:
                detail = r.text
            if isinstance(detail, list):  # request validation errors
                detail = "; ".join(
                    ".".join(str(p) for p in d.get("loc", [])[1:]) + ": " + d.get("msg", "")
                    for d in detail
                )
            raise CommandError(f"{r.status_code}: {detail}")
        return r.json()


def parse_params(pairs: list[str], params_arg: str | None) -> dict[str, Any]:
    """``k=v`` pairs (values parsed as JSON when they are, else strings), or
    ``--params`` JSON text or ``@file``."""
    params: dict[str, Any] = {}
    if params_arg:
        text = Path(params_arg[1:]).read_text() if params_arg.startswith("@") else params_arg
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise CommandError("--params must be a JSON object")
        params.update(loaded)
    for pair in pairs:
        if "=" not in pair:
            raise CommandError(f"parameter {pair!r} is not key=value")
        k, v = pair.split("=", 1)
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    return params


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: Any, columns: list[str] | None = None) -> None:
    if args.json or columns is None:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(table(data if isinstance(data, list) else [data], columns))


# -- rota jobs ---------------------------------------------------------------------


def add_jobs(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="jobs_cmd", required=True)
    ls = sub.add_parser("list", help="list jobs")
    add_api_args(ls)
    cr = sub.add_parser("create", help="define a job")
    add_api_args(cr)
    cr.add_argument("name")
    cr.add_argument("--kind", required=True, choices=["command", "python", "django", "pod"])
    cr.add_argument("--target", required=True, help="argv[0] (command), module:function (python)")
    cr.add_argument(
        "--arg", action="append", default=[], dest="args", help="default argument (repeat)"
    )
    cr.add_argument("--timeout", type=float)
    cr.add_argument("--tag", action="append", default=[], dest="tags", help="routing tag (repeat)")
    cr.add_argument("--schema", help="parameter JSON Schema: JSON text or @file")
    cr.add_argument("--max-attempts", type=int, default=3)


def handle_jobs(args: argparse.Namespace) -> int:
    api = Api(args)
    if args.jobs_cmd == "list":
        emit(args, api.call("GET", "/jobs"), ["name", "kind", "target", "tags", "timeout"])
        return 0
    schema = {}
    if args.schema:
        text = Path(args.schema[1:]).read_text() if args.schema.startswith("@") else args.schema
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--schema is not valid JSON: {exc}") from None
    body = {
        "name": args.name,
        "kind": args.kind,
        "target": args.target,
        "args": args.args,
        "timeout": args.timeout,
        "tags": args.tags,
        "params_schema": schema,
        "max_attempts": args.max_attempts,
    }
    emit(args, api.call("POST", "/jobs", json=body), ["name", "kind", "target", "tags"])
    return 0


# -- rota submit / runs / show --------------------------------------------------------


def add_submit(parser: argparse.ArgumentParser) -> None:
    add_api_args(parser)
    parser.add_argument("job")
    parser.add_argument("params", nargs="*", help="key=value (values are JSON when they parse)")
    parser.add_argument("--params", dest="params_json", help="params as JSON text or @file")
    parser.add_argument("--tag")
    parser.add_argument("--idempotency-key")
    parser.add_argument(
        "--wait", action="store_true", help="wait until the run ends; exit 1 unless it succeeded"
    )


RUN_COLUMNS = ["run_id", "job", "state", "attempt", "worker_id", "created_at", "error_summary"]


def handle_submit(args: argparse.Namespace) -> int:
    api = Api(args)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    run = api.call(
        "POST",
        "/runs",
        json={
            "job": args.job,
            "params": parse_params(args.params, args.params_json),
            "tag": args.tag,
        },
        headers=headers,
    )
    if args.wait:
        import time

        from rota.domain.states import is_terminal

        while not is_terminal(run["state"]):
            time.sleep(0.3)
            run = api.call("GET", f"/runs/{run['run_id']}")
    emit(args, run, RUN_COLUMNS)
    return 0 if not args.wait or run["state"] == "SUCCEEDED" else 1


def add_runs(parser: argparse.ArgumentParser) -> None:
    add_api_args(parser)
    parser.add_argument("--status")
    parser.add_argument("--job")
    parser.add_argument("--tag")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--cursor")


def handle_runs(args: argparse.Namespace) -> int:
    api = Api(args)
    query = {
        k: v
        for k, v in {
            "status": args.status,
            "job": args.job,
            "tag": args.tag,
            "limit": args.limit,
            "cursor": args.cursor,
        }.items()
        if v
    }
    page = api.call("GET", "/runs", params=query)
    if args.json:
        emit(args, page)
    else:
        emit(args, page["items"], RUN_COLUMNS)
        if page.get("next_cursor"):
            print(f"\nmore: rota runs --cursor {page['next_cursor']}", file=sys.stderr)
    return 0


def add_show(parser: argparse.ArgumentParser) -> None:
    add_api_args(parser)
    parser.add_argument("run_id")


def handle_show(args: argparse.Namespace) -> int:
    run = Api(args).call("GET", f"/runs/{args.run_id}")
    if args.json:
        emit(args, run)
        return 0
    for key in (
        "run_id",
        "job",
        "state",
        "status",
        "attempt",
        "worker_id",
        "params",
        "result",
        "exit_code",
        "error_summary",
        "created_at",
        "started_at",
        "finished_at",
    ):
        print(f"{key:>14}: {run.get(key)}")
    for stream in ("stdout", "stderr"):
        if run.get(stream):
            print(f"--- {stream} ---\n{run[stream].rstrip()}")
    return 0


def handle_cancel(args: argparse.Namespace) -> int:
    run = Api(args).call("POST", f"/runs/{args.run_id}/cancel")
    emit(args, run, RUN_COLUMNS)
    return 0
