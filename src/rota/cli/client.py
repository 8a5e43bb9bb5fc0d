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
    token_var = next((v for v in ("ROTA_TOKEN", "ROTA_API_TOKEN") if os.environ.get(v)), "")
    sources: list[tuple[str, str | None, str | None]] = [
        ("--token", url, token),
        (
            # Named, so that a refused token says which variable to fix.
            f"the environment variable {token_var}" if token_var else "the environment",
            os.environ.get("ROTA_URL") or os.environ.get("ROTA_API_URL"),
            os.environ.get(token_var) if token_var else None,
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
                (d.get("field") or ".".join(str(p) for p in d.get("loc", [])[1:]))
                + ": "
                + d.get("msg", "")
                for d in detail
            )
        hint = ""
        if r.status_code == 401:
            detail = "the API refused the token"
            hint = unauthorized_hint(self.source)
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


def unauthorized_hint(source: str) -> str:
    """What to do about a refused token, by where it came from: `rota login`
    cannot override a flag or an environment variable."""
    if source.startswith("the environment variable "):
        var = source.rsplit(" ", 1)[-1]
        return (
            f"the token comes from {var}, which is wrong or revoked: set {var} to a valid "
            f"token or unset it (`unset {var}`; `rota login` does not override it)"
        )
    if source == "--token":
        return "the token given with --token is wrong or revoked"
    return f"the token from {source} is wrong or revoked: run `rota login`"


def json_arg(text: str, option: str) -> Any:
    """The JSON of an option given as JSON text or ``@file``; a CommandError naming
    ``option`` (and the line and column) when it does not parse."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise CommandError(f"{option}: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{option} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def parse_params(
    pairs: list[str], params_arg: str | None, option: str = "--params"
) -> dict[str, Any]:
    """``k=v`` pairs (values parsed as JSON when they are, else strings), or
    ``option`` (``--params``) JSON text or ``@file``."""
    params: dict[str, Any] = {}
    if params_arg:
        loaded = json_arg(params_arg, option)
        if not isinstance(loaded, dict):
            raise CommandError(f"{option} must be a JSON object")
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


#: A table column: the key of each row, or (header, key) when the header differs.
Column = str | tuple[str, str]


def human(value: Any) -> str:
    """One value as a person reads it in a table or a ``key: value`` line: no
    Python reprs (lists joined with commas, objects as JSON), whole floats
    without ``.0``, and every timestamp in the API's one format."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(human(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        return timestamp(value) or value
    return str(value)


def timestamp(text: str) -> str | None:
    """``text`` in the API's timestamp format (UTC, milliseconds, ``Z``:
    ``2026-01-02T03:04:05.678Z``) when it is an ISO 8601 instant; else None."""
    from datetime import UTC, datetime

    if len(text) < 20 or text[4:5] != "-" or text[10:11] != "T":
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{at.microsecond // 1000:03d}Z" if at.microsecond else "Z"
    )


def duration_ms(ms: float | None) -> str:
    """A duration in milliseconds, rounded for reading: ``0.233 ms``, ``41.2 ms``, ``3.20 s``."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.3g} ms"
    return f"{ms / 1000:.2f} s"


def table(rows: list[dict[str, Any]], columns: list[Column]) -> str:
    pairs = [(c, c) if isinstance(c, str) else c for c in columns]
    cells = [[human(r.get(key)) for _, key in pairs] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, (h, _) in enumerate(pairs)]
    lines = ["  ".join(h.upper().ljust(w) for (h, _), w in zip(pairs, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def emit(args: argparse.Namespace, data: Any, columns: list[Column] | None = None) -> None:
    if args.json or columns is None:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(table(data if isinstance(data, list) else [data], columns))


# -- rota jobs ---------------------------------------------------------------------


JOB_COLUMNS: list[Column] = ["name", "kind", "target", "tags", "timeout", "enabled"]


def _job_options(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    """The options of ``jobs create`` and ``jobs edit``; an edit sends only the
    options given."""
    from rota.domain.kinds import EXECUTION_POLICIES, JOB_KINDS

    if creating:
        parser.add_argument("--kind", required=True, choices=JOB_KINDS)
    parser.add_argument(
        "--target",
        required=creating,
        help="argv[0] (command), module:function (python), the task's name (celery)",
    )
    parser.add_argument(
        "--arg",
        action="append",
        default=None,
        dest="args",
        help="default argument (repeat); for celery a send option, queue=... (docs/celery.md)"
        + ("; replaces them all" if not creating else ""),
    )
    parser.add_argument("--timeout", type=float, help="seconds")
    parser.add_argument(
        "--tag", action="append", default=None, dest="tags", help="routing tag (repeat)"
    )
    parser.add_argument("--schema", help="parameter JSON Schema: JSON text or @file")
    parser.add_argument("--defaults", help="default params: a JSON object, text or @file")
    parser.add_argument("--max-attempts", type=int)
    parser.add_argument("--policy", choices=EXECUTION_POLICIES, help="execution policy")
    parser.add_argument(
        "--subscribe",
        action="append",
        default=None,
        dest="subscribed_events",
        metavar="EVENT",
        help="event name that starts a run (repeat)"
        + ("; replaces them all" if not creating else ""),
    )
    parser.add_argument("--description")
    parser.add_argument("--category")


def add_jobs(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="jobs_cmd", required=True)
    ls = sub.add_parser("list", help="list jobs")
    add_api_args(ls)
    cr = sub.add_parser("create", help="define a job")
    add_api_args(cr)
    cr.add_argument("name")
    _job_options(cr, creating=True)
    show = sub.add_parser("show", help="a job's whole definition")
    add_api_args(show)
    show.add_argument("name")
    ed = sub.add_parser("edit", help="change a job: only the options given")
    add_api_args(ed)
    ed.add_argument("name")
    _job_options(ed, creating=False)
    ed.add_argument("--no-timeout", action="store_true", help="remove the timeout")
    for name, text in (
        ("enable", "let a job run again"),
        ("disable", "stop a job from running (schedules and events skip it; history stays)"),
        ("delete", "delete a job that has no runs (disable it to keep its history)"),
    ):
        op = sub.add_parser(name, help=text)
        add_api_args(op)
        op.add_argument("name")


def _job_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The API body for the job options given on the command line."""
    body: dict[str, Any] = {}
    for option in (
        "target",
        "args",
        "timeout",
        "tags",
        "max_attempts",
        "description",
        "category",
        "subscribed_events",
    ):
        if getattr(args, option, None) is not None:
            body[option] = getattr(args, option)
    if args.policy is not None:
        body["execution_policy"] = args.policy
    if args.schema is not None:
        body["params_schema"] = json_arg(args.schema, "--schema")
    if args.defaults is not None:
        body["default_params"] = parse_params([], args.defaults, "--defaults")
    return body


def show_job(job: dict[str, Any]) -> None:
    for key in (
        "name",
        "kind",
        "target",
        "args",
        "timeout",
        "tags",
        "enabled",
        "execution_policy",
        "max_attempts",
        "subscribed_events",
        "params_schema",
        "default_params",
        "description",
        "category",
        "created_at",
        "updated_at",
    ):
        if job.get(key) not in (None, "", [], {}):
            print(f"{key:>17}: {human(job[key])}")


def handle_jobs(args: argparse.Namespace) -> int:
    api = Api(args)
    cmd = args.jobs_cmd
    if cmd == "list":
        emit(args, api.call("GET", "/jobs"), JOB_COLUMNS)
        return 0
    if cmd == "delete":
        api.call("DELETE", f"/jobs/{args.name}")
        print(f"deleted job {args.name}")
        return 0
    if cmd == "create":
        job = api.call(
            "POST", "/jobs", json={"name": args.name, "kind": args.kind, **_job_changes(args)}
        )
    elif cmd == "show":
        job = api.call("GET", f"/jobs/{args.name}")
    elif cmd == "edit":
        changes = _job_changes(args)
        if args.no_timeout:
            changes["timeout"] = None
        if not changes:
            raise CommandError(
                "nothing to change", hint="give the options to change, e.g. --timeout 60"
            )
        job = api.call("PATCH", f"/jobs/{args.name}", json=changes)
    else:  # enable, disable
        job = api.call("PATCH", f"/jobs/{args.name}", json={"enabled": cmd == "enable"})
    if args.json:
        emit(args, job)
    elif cmd in ("create", "show", "edit"):
        show_job(job)
    else:
        print(f"job {job['name']} is {'enabled' if job['enabled'] else 'disabled'}")
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


RUN_COLUMNS: list[Column] = [
    "run_id",
    ("job", "job_label"),
    "state",
    "attempt",
    "worker_id",
    "created_at",
    "error_summary",
]


def job_label(run: dict[str, Any]) -> str:
    """What a run runs, for the JOB column: the job, or ``<flow> (flow)``."""
    if run.get("job"):
        return str(run["job"])
    return f"{run['flow_name']} (flow)" if run.get("flow_name") else ""


def run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "job_label": job_label(r)} for r in runs]


def emit_runs(args: argparse.Namespace, data: Any) -> None:
    """A run or runs, as JSON or as the runs table."""
    if args.json:
        emit(args, data)
    else:
        emit(args, run_rows(data if isinstance(data, list) else [data]), RUN_COLUMNS)


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
    emit_runs(args, run)
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
        emit_runs(args, page["items"])
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
    # `state` only: the API's `status` is the same state in seed 003's words
    # (COMPLETED for SUCCEEDED, ...), kept for its clients (docs/runs-api.md).
    for key in (
        "run_id",
        "job",
        "flow_name",
        "state",
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
            print(f"{key:>14}: {human(run.get(key))}")
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


TASK_COLUMNS: list[Column] = ["task", "state", "duration", "error"]


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
            "duration": duration_ms((records.get(name) or {}).get("duration_ms")),
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
    """Cancel a run. Exit 0 when it is cancelled or being cancelled (again is
    fine: cancel is idempotent); exit 1, saying so, when it had finished
    otherwise and there was nothing to cancel."""
    from rota.domain.states import is_terminal

    run = Api(args).call("POST", f"/runs/{args.run_id}/cancel")
    emit_runs(args, run)
    if is_terminal(run["state"]) and run["state"] != "CANCELLED":
        print(
            f"rota: run {run['run_id']} had already finished ({run['state']}): nothing to cancel",
            file=sys.stderr,
        )
        return 1
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
