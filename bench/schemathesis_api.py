"""schemathesis against a live rota: every operation of the served OpenAPI schema,
for a time budget (default 150 s), checking that no request gets a 5xx.

It starts a real `rota up` (nats-server, SQLite, web server, one worker) in a
temporary data dir, defines two jobs so that run endpoints have something to
work on, and runs the schemathesis CLI against ``/openapi.json`` with the admin
token (so every operation, the admin ones included, is reachable). The phases
are schemathesis' defaults (examples, coverage, fuzzing, stateful), repeated
until ``--seconds`` is spent. It prints the number of test cases, the
operations covered, and every 5xx with the request that caused it (also
written as a pytest reproduction under the report dir).

    .venv/bin/python bench/schemathesis_api.py --seconds 150

Exit status: 0 when no server error was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def seed_jobs(client: httpx.Client) -> None:
    for body in (
        {"name": "st-echo", "kind": "command", "target": "echo", "args": ["hi"]},
        {
            "name": "st-typed",
            "kind": "command",
            "target": "true",
            "params_schema": {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "additionalProperties": False,
            },
        },
    ):
        r = client.post("/jobs", json=body)
        assert r.status_code in (201, 409), r.text


def st_binary() -> str:
    found = Path(sys.executable).with_name("st")
    return str(found) if found.exists() else (shutil.which("st") or "st")


def run_schemathesis(
    url: str, token: str, seconds: int, report_dir: Path, workers: int
) -> tuple[int, list[str]]:
    """Run the CLI, echoing its output; returns its exit status and output lines."""
    cmd = [
        st_binary(),
        "run",
        f"{url}/openapi.json",
        "--url",
        url,
        "-H",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error",
        "--max-time",
        str(seconds),
        "--workers",
        str(workers),
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--generation-database",
        "none",
        "--report",
        "ndjson,pytest",
        "--report-dir",
        str(report_dir),
        "--no-color",
        "--output-sanitize",
        "true",
    ]
    print("$", " ".join(c if "Bearer" not in c else "Authorization: Bearer ***" for c in cmd))
    proc = subprocess.Popen(
        cmd, cwd=report_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="")
        lines.append(line.rstrip("\n"))
    return proc.wait(), lines


def _text(value: object) -> str:
    """A recorded body: text, or ``{"$base64": ...}``."""
    if isinstance(value, dict) and "$base64" in value:
        return base64.b64decode(value["$base64"]).decode("utf-8", "replace")
    return "" if value is None else str(value)


def summarize(report_dir: Path) -> tuple[int, Counter, list[dict]]:
    """(cases, cases per operation, server errors) from the ndjson event log."""
    cases = 0
    per_op: Counter = Counter()
    errors: list[dict] = []
    for path in report_dir.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            for name, body in event.items():
                if name != "ScenarioFinished":
                    continue
                recorder = body.get("recorder") or {}
                label = recorder.get("label", "?")
                for _case in recorder.get("cases") or {}:
                    cases += 1
                    per_op[label] += 1
                for interaction in (recorder.get("interactions") or {}).values():
                    response = interaction.get("response") or {}
                    status = response.get("status_code")
                    request = interaction.get("request") or {}
                    declared = status == 504 and "/topics/" in str(request.get("uri"))
                    if isinstance(status, int) and status >= 500 and not declared:
                        # (504 of POST /topics/{topic}/messages is declared: no
                        # pod replied within wait_result.)
                        errors.append(
                            {
                                "operation": label,
                                "status": status,
                                "method": request.get("method"),
                                "uri": request.get("uri"),
                                "body": _text(request.get("body"))[:1000],
                                "response": _text(response.get("content"))[:500],
                            }
                        )
    return cases, per_op, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=150, help="schemathesis time budget")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--report-dir", default="", help="keep the reports here")
    args = ap.parse_args()

    from tests.e2e.conftest import start_stack, stop_stack

    tmp = Path(tempfile.mkdtemp(prefix="rota-schemathesis-"))
    report_dir = Path(args.report_dir).resolve() if args.report_dir else tmp / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    stack = start_stack(tmp)
    try:
        with stack.client as client:
            seed_jobs(client)
        t0 = time.monotonic()
        code, output = run_schemathesis(
            stack.url, stack.token, args.seconds, report_dir, args.workers
        )
        elapsed = time.monotonic() - t0
    finally:
        stop_stack(stack)
    cases, per_op, errors = summarize(report_dir)
    # The CLI's summary: "Test cases:" then "N generated, M found ...".
    at = next((i for i, ln in enumerate(output) if ln.strip() == "Test cases:"), -1)
    generated = output[at + 1].strip() if 0 <= at < len(output) - 1 else ""
    print(f"\nschemathesis ran {elapsed:.0f} s: {generated or f'{cases:,} test cases'}")
    print(f"recorded: {cases:,} cases over {len(per_op)} operations")
    for label, n in sorted(per_op.items()):
        print(f"  {n:>7,}  {label}")
    print(f"server errors (5xx): {len(errors)}")
    for e in errors[:50]:
        print(json.dumps(e, ensure_ascii=False))
    tracebacks = [
        line for line in stack.log.read_text(errors="replace").splitlines() if "Traceback" in line
    ]
    print(f"tracebacks in the server log: {len(tracebacks)} (log: {stack.log})")
    print(f"reports: {report_dir}")
    if not args.report_dir and not errors and code == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if not errors and code == 0 else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
