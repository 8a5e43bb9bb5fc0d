"""The API client behind ``rota jobs``, ``rota submit``, ``rota runs`` and ``rota show``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from rota.cli.base import CommandError


def add_api_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        help="API base URL [env ROTA_URL or ROTA_API_URL; else `rota login`; else .rota/rota.env]",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="API token [env ROTA_TOKEN or ROTA_API_TOKEN; else `rota login`; else .rota/rota.env]",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


DEFAULT_URL = "http://127.0.0.1:8000"


def credentials_path() -> Path:
    """Where ``rota login`` keeps the URL and token (mode 0600)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rota" / "credentials.json"


def _env_file() -> dict[str, str]:
    """The ``rota.env`` that ``rota up`` writes in its data dir."""
    from rota.cli.up import ENV_FILE, _read_env_file

    return _read_env_file(Path(os.environ.get("ROTA_DATA_DIR", ".rota")) / ENV_FILE)


def resolve_api(url: str | None, token: str | None) -> tuple[str, str, str]:
    """(url, token, where they came from), first found wins: the flags, the
    environment, ``rota login``'s file, then the ``rota.env`` of ``rota up``."""
    sources: list[tuple[str, str | None, str | None]] = [
        ("flags", url, token),
        (
            "environment",
            os.environ.get("ROTA_URL") or os.environ.get("ROTA_API_URL"),
            os.environ.get("ROTA_TOKEN") or os.environ.get("ROTA_API_TOKEN"),
        ),
    ]
    path = credentials_path()
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            raise CommandError(
                f"{path} is not readable JSON", hint="run `rota login` again"
            ) from None
        sources.append((str(path), saved.get("url"), saved.get("token")))
    env = _env_file()
    sources.append(("rota.env", env.get("ROTA_API_URL"), env.get("ROTA_API_TOKEN")))
    found_url = next((u for _, u, _ in sources if u), DEFAULT_URL)
    for where, _, t in sources:
        if t:
            return found_url.rstrip("/"), t, where
    raise CommandError(
        "no API token",
        hint="run `rota login`, pass --token, set ROTA_TOKEN, or run next to `rota up`'s .rota/",
    )


class Api:
    def __init__(self, args: argparse.Namespace) -> None:
        self.url, token, self.source = resolve_api(args.url, args.token)
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None
        if r.status_code >= 400:
            raise self.refused(r)
        return r.json() if r.content else None

    def unreachable(self, exc: Exception) -> CommandError:
        return CommandError(
            f"cannot reach the rota API at {self.url}: {exc}",
            hint="is `rota up` (or `rota server`) running there? check --url / ROTA_URL; "
            "`rota doctor` checks the rest",
        )

    def refused(self, r: httpx.Response) -> CommandError:
        try:
            body = r.json()
            detail = body.get("detail", body) if isinstance(body, dict) else body
        except ValueError:
            detail = r.text.strip() or r.reason_phrase
        if isinstance(detail, list):  # request validation errors
            detail = "; ".join(
                ".".join(str(p) for p in d.get("loc", [])[1:]) + ": " + d.get("msg", "")
                for d in detail
            )
        hint = ""
        if r.status_code == 401:
            detail = "the API refused the token"
            hint = f"the token from {self.source} is wrong or revoked: run `rota login`"
        elif r.status_code == 403:
            hint = "ask an admin to add your user to the ops group named above"
        elif r.status_code == 404 and "job" in str(detail):
            hint = "`rota jobs list` shows the jobs there are"
        return CommandError(f"{r.status_code}: {detail}", hint=hint)

    def events(self, path: str, **params: Any) -> Iterator[Any]:
        """The Server-Sent Events of ``path``, as they come."""
        from httpx_sse import connect_sse

        try:
            with connect_sse(
                self.client, "GET", path, params=params, timeout=httpx.Timeout(30, read=None)
            ) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise self.refused(source.response)
                yield from source.iter_sse()
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None


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
    cr.add_argument(
        "--kind", required=True, choices=["command", "python", "django", "pod", "celery"]
    )
    cr.add_argument(
        "--target",
        required=True,
        help="argv[0] (command), module:function (python), the task's name (celery)",
    )
    cr.add_argument(
        "--arg",
        action="append",
        default=[],
        dest="args",
        help="default argument (repeat); for celery a send option, queue=... (docs/celery.md)",
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


# -- rota submit / runs / show / watch / tasks / logs / cancel -------------------------


def add_submit(parser: argparse.ArgumentParser) -> None:
    add_api_args(parser)
    parser.add_argument("job", nargs="?", help="the job to run (or use --flow / --yaml)")
    parser.add_argument("params", nargs="*", help="key=value (values are JSON when they parse)")
    parser.add_argument("--flow", help="run the Pyoco flow registered under this name")
    parser.add_argument("--yaml", help="run the Pyoco flow described by this flow.yaml")
    parser.add_argument("--params", dest="params_json", help="params as JSON text or @file")
    parser.add_argument("--tag")
    parser.add_argument("--idempotency-key")
    parser.add_argument(
        "--wait", action="store_true", help="wait until the run ends; exit 1 unless it succeeded"
    )


RUN_COLUMNS = ["run_id", "job", "state", "attempt", "worker_id", "created_at", "error_summary"]


def handle_submit(args: argparse.Namespace) -> int:
    if (args.flow or args.yaml) and args.job and "=" in args.job:
        # `rota submit --flow etl k=v`: the first pair landed in `job`.
        args.params, args.job = [args.job, *args.params], None
    if sum(1 for x in (args.job, args.flow, args.yaml) if x) != 1:
        raise CommandError(
            "say what to run: a job name, --flow NAME or --yaml FILE (one of them)",
            hint="`rota jobs list` shows the jobs",
        )
    api = Api(args)
    params = parse_params(args.params, args.params_json)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    if args.yaml:
        path = Path(args.yaml)
        if not path.is_file():
            raise CommandError(f"no file {path}")
        data = {"params": json.dumps(params)}
        if args.tag:
            data["tag"] = args.tag
        run = api.call(
            "POST",
            "/runs/yaml",
            files={"flow": (path.name, path.read_bytes(), "application/yaml")},
            data=data,
            headers=headers,
        )
    else:
        body: dict[str, Any] = {"params": params, "tag": args.tag}
        body["flow_name" if args.flow else "job"] = args.flow or args.job
        run = api.call("POST", "/runs", json=body, headers=headers)
    if args.wait:
        run = follow(api, run, quiet=args.json)
    emit(args, run, RUN_COLUMNS)
    return 0 if not args.wait or run["state"] == "SUCCEEDED" else 1


def follow(api: Api, run: dict[str, Any], *, quiet: bool = False) -> dict[str, Any]:
    """Follow the run's snapshots until it ends, showing its progress on stderr
    (a status line on a terminal, a line per change otherwise)."""
    from rota.domain.states import is_terminal

    progress = Progress(enabled=not quiet)
    if is_terminal(run["state"]):
        return run
    try:
        for event in api.events(f"/runs/{run['run_id']}/watch"):
            if event.event == "snapshot":
                run = json.loads(event.data)
                progress.show(describe(run))
    finally:
        progress.done()
    return run


def describe(run: dict[str, Any]) -> str:
    text = f"{run['run_id']} {run['state']}"
    if run.get("attempt"):
        text += f" attempt {run['attempt']}"
    if run.get("worker_id"):
        text += f" on {run['worker_id']}"
    tasks = run.get("tasks") or {}
    if tasks:
        finished = sum(1 for s in tasks.values() if str(s).lower() in ("succeeded", "failed"))
        text += f" — tasks {finished}/{len(tasks)}: " + ", ".join(
            f"{name}={state}" for name, state in tasks.items()
        )
    return text


class Progress:
    """One status line rewritten in place on a terminal; plain lines elsewhere."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = ""

    def show(self, text: str) -> None:
        if not self.enabled or text == self.last:
            return
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
        self.last = text

    def done(self) -> None:
        if self.enabled and self.tty and self.last:
            sys.stderr.write("\n")


def add_runs(parser: argparse.ArgumentParser) -> None:
    add_api_args(parser)
    parser.add_argument("--status", help="state(s), comma-separated (rota's or seed 003's)")
    parser.add_argument("--job")
    parser.add_argument("--flow")
    parser.add_argument("--tag")
    parser.add_argument("--schedule", type=int, help="schedule id")
    parser.add_argument("--updated-after", help="ISO 8601 instant")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--cursor")


def handle_runs(args: argparse.Namespace) -> int:
    api = Api(args)
    query = {
        k: v
        for k, v in {
            "status": args.status,
            "job": args.job,
            "flow": args.flow,
            "tag": args.tag,
            "schedule": args.schedule,
            "updated_after": args.updated_after,
            "limit": args.limit,
            "cursor": args.cursor,
        }.items()
        if v is not None
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
        "flow_name",
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
        if run.get(key) not in (None, ""):
            print(f"{key:>14}: {run.get(key)}")
    for name, state in (run.get("tasks") or {}).items():
        print(f"{'task':>14}: {name} {state}")
    for stream in ("stdout", "stderr"):
        if run.get(stream):
            print(f"--- {stream} ---\n{run[stream].rstrip()}")
    return 0


def add_watch(parser: argparse.ArgumentParser) -> None:
    add_show(parser)


def handle_watch(args: argparse.Namespace) -> int:
    """Follow a run until it ends; exit 0 when it succeeded, 1 otherwise."""
    api = Api(args)
    run = follow(api, api.call("GET", f"/runs/{args.run_id}"), quiet=args.json)
    if args.json:
        emit(args, run)
    else:
        print(describe(run))
        if run.get("error_summary"):
            print(f"error: {run['error_summary']}")
    return 0 if run["state"] == "SUCCEEDED" else 1


def add_tasks(parser: argparse.ArgumentParser) -> None:
    add_show(parser)
    parser.add_argument("--records", action="store_true", help="include each task's record")


TASK_COLUMNS = ["task", "state", "duration_ms", "error"]


def handle_tasks(args: argparse.Namespace) -> int:
    api = Api(args)
    body = api.call(
        "GET", f"/runs/{args.run_id}/tasks", params={"include": "records"} if args.records else {}
    )
    if args.json:
        emit(args, body)
        return 0
    records = body.get("task_records") or {}
    rows = [
        {
            "task": name,
            "state": state,
            "duration_ms": (records.get(name) or {}).get("duration_ms"),
            "error": (records.get(name) or {}).get("error"),
        }
        for name, state in (body.get("tasks") or {}).items()
    ]
    if not rows:
        print("this run has no tasks (only Pyoco flow runs have)", file=sys.stderr)
        return 0
    emit(args, rows, TASK_COLUMNS if args.records else ["task", "state"])
    if body.get("task_records_truncated"):
        print("(some task records were dropped: they passed the size limit)", file=sys.stderr)
    return 0


def add_logs(parser: argparse.ArgumentParser) -> None:
    add_show(parser)
    parser.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    parser.add_argument("--attempt", type=int, help="an earlier attempt (default: the newest)")


def handle_logs(args: argparse.Namespace) -> int:
    api = Api(args)
    if not args.follow:
        params = {"attempt": args.attempt} if args.attempt else {}
        out = api.call("GET", f"/runs/{args.run_id}/logs", params=params)
        if args.json:
            emit(args, out)
            return 0
        sys.stdout.write(out["stdout"])
        sys.stderr.write(out["stderr"])
        if out["source"] == "none":
            print(f"(run {args.run_id} has no captured output)", file=sys.stderr)
        return 0
    for event in api.events(f"/runs/{args.run_id}/logs/tail"):
        if event.event == "log":
            chunk = json.loads(event.data)
            target = sys.stdout if chunk["stream"] == "stdout" else sys.stderr
            target.write(chunk["data"])
            target.flush()
        elif event.event == "end":
            break
    return 0


def handle_cancel(args: argparse.Namespace) -> int:
    run = Api(args).call("POST", f"/runs/{args.run_id}/cancel")
    emit(args, run, RUN_COLUMNS)
    return 0


# -- rota login ------------------------------------------------------------------------


def add_login(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help=f"API base URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--token", default=None, help="API token (default: read from the terminal, unechoed)"
    )


def handle_login(args: argparse.Namespace) -> int:
    """Check a URL and token against the API and keep them for later commands."""
    import getpass

    url = (args.url or os.environ.get("ROTA_URL") or DEFAULT_URL).rstrip("/")
    token = args.token or os.environ.get("ROTA_TOKEN") or getpass.getpass("API token: ").strip()
    if not token:
        raise CommandError("no token given")
    api = Api(argparse.Namespace(url=url, token=token))
    api.source = "the token given"
    api.call("GET", "/runs", params={"limit": 1})
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f)
    print(f"logged in to {url}; saved in {path}")
    return 0
