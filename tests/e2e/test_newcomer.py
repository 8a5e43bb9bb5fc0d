"""A newcomer's first hour (issue 21): the addresses `rota up` prints, the CLI's
defects and its consistency, against a real `rota up`. Each test failed on the
main branch the issue was filed against."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.e2e

#: The API's one timestamp format (Django's JSON encoder): UTC, milliseconds, Z.
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def rota(*argv: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rota", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _job(stack, name: str, **job) -> None:  # type: ignore[no-untyped-def]
    r = stack.client.post("/jobs", json={"name": name, **job})
    assert r.status_code in (201, 409), r.text


def _finished_run(stack, job: str = "nc-greet", **params) -> dict:  # type: ignore[no-untyped-def]
    _job(
        stack,
        job,
        kind="command",
        target="echo",
        args=["hello"],
        tags=["default"],
        params_schema={"type": "object", "properties": {"name": {"type": "string"}}},
    )
    run_id = stack.client.post("/runs", json={"job": job, "params": params}).json()["run_id"]
    return wait_for(
        lambda: (r := stack.client.get(f"/runs/{run_id}").json())["state"] == "SUCCEEDED" and r,
        timeout=30,
    )


# -- 1. entry points -------------------------------------------------------------------


def test_banner_prints_the_ops_url_and_root_leads_there(stack):
    banner = stack.log.read_text()
    assert f"rota is up: {stack.url}/ops/" in banner
    anonymous = httpx.Client(base_url=stack.url, timeout=10)
    root = anonymous.get("/")
    assert root.status_code == 302 and root.headers["Location"] == "/ops/"
    landed = anonymous.get("/", follow_redirects=True)
    assert landed.status_code == 200
    assert landed.url.path == "/ops/login/" and landed.url.params["next"] == "/ops/"


def test_docs_sends_a_browser_to_log_in_and_back_and_scripts_get_401(stack):
    browser = httpx.Client(base_url=stack.url, timeout=10, headers={"Accept": "text/html,*/*"})
    first = browser.get("/docs")
    assert first.status_code == 302
    assert first.headers["Location"] == "/ops/login/?next=/docs"
    # A script (no HTML wanted, or a token) gets JSON.
    script = httpx.get(stack.url + "/docs", timeout=10)
    assert script.status_code == 401 and script.json() == {"detail": "Unauthorized"}
    assert stack.client.get("/docs").status_code == 200
    # Log in the way the form does, with the next it was sent with: back on /docs.
    browser.get("/ops/login/?next=/docs")
    password = "newcomer-password-1"
    _set_admin_password(stack, password)
    done = browser.post(
        "/ops/login/",
        data={
            "username": "admin",
            "password": password,
            "next": "/docs",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
    )
    assert done.status_code == 302 and done.headers["Location"] == "/docs"
    docs = browser.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def _set_admin_password(stack, password: str) -> None:  # type: ignore[no-untyped-def]
    from tests.ui.conftest import django_script

    django_script(
        stack,
        "from django.contrib.auth.models import User\n"
        "u = User.objects.get(username='admin')\n"
        f"u.set_password({password!r}); u.save()\n",
    )


# -- 2. CLI defects --------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["runs"], ["jobs", "list"], ["workers"]])
def test_a_table_into_a_closed_pipe_ends_quietly(stack, argv):
    _finished_run(stack)
    # The reader is gone before rota writes (as `| head` is after its lines).
    proc = subprocess.Popen(
        [sys.executable, "-m", "rota", *argv],
        env=stack.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(60) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_bad_payload_names_payload_with_line_and_column(stack):
    out = rota(
        "events", "send", "nc.evt", "--payload", "{oops", "--dedupe-key", "x", env=stack.env()
    )
    assert out.returncode == 2
    assert out.stderr.startswith("rota: --payload is not valid JSON"), out.stderr
    assert "line 1, column 2" in out.stderr and "--params" not in out.stderr


def test_a_repeated_event_says_it_was_a_duplicate(stack):
    _job(
        stack,
        "nc-billing",
        kind="command",
        target="echo",
        subscribed_events=["nc.paid"],
        params_schema={"type": "object", "properties": {"order": {"type": "integer"}}},
    )
    send = ["events", "send", "nc.paid", "--payload", '{"order": 7}', "--dedupe-key", "nc-7"]
    first = rota(*send, env=stack.env())
    again = rota(*send, env=stack.env())
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert "duplicate" not in first.stdout and "1 run(s)" in first.stdout
    assert again.stdout.startswith("duplicate: event "), again.stdout
    assert "nothing new was created" in again.stdout
    run_id = first.stdout.splitlines()[1].split()[0]
    assert run_id in again.stdout  # the first event's run, not a new one
    body = json.loads(rota(*send, "--json", env=stack.env()).stdout)
    assert body["duplicate"] is True


def test_cancel_of_a_finished_run_exits_1_saying_so(stack):
    env = stack.env()
    done = _finished_run(stack)
    out = rota("cancel", done["run_id"], env=env)
    assert out.returncode == 1
    assert "already finished (SUCCEEDED): nothing to cancel" in out.stderr
    # A run that is going: cancelled, exit 0; cancelling it again is still fine.
    _job(
        stack,
        "nc-sleep",
        kind="command",
        target=sys.executable,
        args=["-c", "import time; time.sleep(60)"],
    )
    run_id = stack.client.post("/runs", json={"job": "nc-sleep"}).json()["run_id"]
    wait_for(lambda: stack.client.get(f"/runs/{run_id}").json()["state"] == "RUNNING", timeout=30)
    assert rota("cancel", run_id, env=env).returncode == 0
    wait_for(lambda: stack.client.get(f"/runs/{run_id}").json()["state"] == "CANCELLED", timeout=30)
    again = rota("cancel", run_id, env=env)
    assert again.returncode == 0, again.stderr


def test_a_refused_token_from_the_environment_names_the_variable(stack):
    env = {**stack.env(), "ROTA_API_TOKEN": "rota_wrong"}
    out = rota("runs", env=env)
    assert out.returncode == 2 and "refused the token" in out.stderr
    assert "ROTA_API_TOKEN" in out.stderr and "unset ROTA_API_TOKEN" in out.stderr, out.stderr


def test_doctor_with_nats_down_prints_its_report_only(stack, tmp_path):
    from rota.bus.server import free_port

    dead = free_port()
    env = {**stack.env(), "ROTA_NATS_URL": f"nats://127.0.0.1:{dead}"}
    out = rota("doctor", env=env)
    assert out.returncode == 1
    assert f"cannot connect to NATS at nats://127.0.0.1:{dead}" in out.stdout
    assert "WARNING" not in out.stderr + out.stdout, out.stderr
    for line in out.stdout.splitlines():
        assert line.startswith(("ok    ", "WARN  ", "FAIL  ", "      → ", "(")), line
    verbose = rota("doctor", "--verbose", env=env)
    assert "what the checks logged:" in verbose.stdout and "rota.bus" in verbose.stdout


def test_the_worker_prints_no_grpc_fork_warning_and_jobs_see_their_own_env(stack):
    script = "import os; print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT', 'unset'), 'ROTA_WORKER_ONLY_ENV' in os.environ)"
    _job(stack, "nc-env", kind="command", target=sys.executable, args=["-c", script])
    for _ in range(3):
        run_id = stack.client.post("/runs", json={"job": "nc-env"}).json()["run_id"]
        run = wait_for(
            lambda rid=run_id: (
                (r := stack.client.get(f"/runs/{rid}").json())["state"] in ("SUCCEEDED", "FAILED")
                and r
            ),
            timeout=30,
        )
        assert run["state"] == "SUCCEEDED" and run["stdout"] == "unset False\n", run
    assert "fork_posix" not in stack.log.read_text()


# -- 3. consistency --------------------------------------------------------------------


def test_human_output_has_no_python_reprs(stack):
    env = stack.env()
    run = _finished_run(stack, name="ops")
    shown = rota("show", run["run_id"], env=env).stdout
    assert 'params: {"name": "ops"}' in shown and "{'" not in shown
    workers = rota("workers", env=env).stdout
    assert "default" in workers and "['" not in workers
    jobs = rota("jobs", "list", env=env).stdout
    assert "['" not in jobs and "[]" not in jobs


def test_one_timestamp_format_in_lists_waits_and_watches(stack):
    env = stack.env()
    _job(stack, "nc-echo", kind="command", target="echo")
    waited = json.loads(rota("submit", "nc-echo", "--wait", "--json", env=env).stdout)
    listed = json.loads(rota("runs", "--json", "--limit", "1", env=env).stdout)["items"][0]
    assert waited["run_id"] == listed["run_id"]
    for run in (waited, listed):
        for key in ("created_at", "started_at", "finished_at", "updated_at"):
            assert TIMESTAMP.match(run[key]), (key, run[key])
    assert waited["created_at"] == listed["created_at"]
    with stack.client.stream("GET", f"/runs/{waited['run_id']}/watch") as sse:
        data = next(line for line in sse.iter_lines() if line.startswith("data: "))
    assert TIMESTAMP.match(json.loads(data[6:])["created_at"])
    table = rota("runs", "--limit", "1", env=env).stdout
    assert waited["created_at"] in table


def test_show_gives_state_and_the_docs_say_what_status_is(stack):
    from pathlib import Path

    run = _finished_run(stack)
    shown = rota("show", run["run_id"], env=stack.env()).stdout
    assert "state: SUCCEEDED" in shown and "status:" not in shown and "COMPLETED" not in shown
    docs = (Path(__file__).resolve().parents[2] / "docs" / "runs-api.md").read_text()
    assert "## state and status" in docs


def test_flow_runs_show_the_flow_and_rounded_task_durations(stack):
    env = stack.env()
    out = rota("submit", "--flow", "etl", "count=2", "--wait", "--json", env=env)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    lines = rota("runs", "--flow", "etl", "--limit", "1", env=env).stdout.splitlines()
    assert lines[0].split()[:3] == ["RUN_ID", "JOB", "STATE"]
    assert lines[1].split()[:4] == [run_id, "etl", "(flow)", "SUCCEEDED"]
    tasks = rota("tasks", run_id, "--records", env=env).stdout.splitlines()
    assert tasks[0].split()[:3] == ["TASK", "STATE", "DURATION"]
    for line in tasks[1:]:
        assert re.match(r"^\w+\s+SUCCEEDED\s+\d+(\.\d+)? (ms|s)$", line.rstrip()), line


def test_schedules_table_calls_the_job_job(stack):
    env = stack.env()
    _job(stack, "nc-echo", kind="command", target="echo")
    added = rota("schedules", "add", "nc-echo", "--every", "minutes:5", env=env)
    assert added.returncode == 0, added.stderr
    header = added.stdout.splitlines()[0].split()
    assert header[:3] == ["ID", "NAME", "JOB"] and "TASK_NAME" not in header


def test_422_names_the_field_once_and_bad_json_says_where(stack):
    c = stack.client
    r = c.post("/jobs", json={"name": "nc-bad", "kind": "bogus", "target": "x", "args": [1]})
    assert r.status_code == 422
    errors = {e["field"]: e for e in r.json()["detail"]}
    assert errors["kind"]["loc"] == ["body", "kind"]
    assert errors["args[0]"]["loc"] == ["body", "args", 0]
    r = c.post("/runs", json={"job": "nc-echo", "params": []})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "params"
    r = c.post(
        "/jobs", content=b'{"name": "x",\n "kind": }', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    body = r.json()
    assert body["line"] == 2 and body["column"] == 10, body
    assert "line 2, column 10" in body["detail"]
    # The CLI says the field the same way.
    out = rota(
        "jobs",
        "create",
        "nc-bad",
        "--kind",
        "command",
        "--target",
        "x",
        "--max-attempts",
        "0",
        env=stack.env(),
    )
    assert out.returncode == 2 and "422: max_attempts: " in out.stderr, out.stderr


def test_jobs_show_edit_disable_enable_delete(stack):
    env = stack.env()
    created = rota("jobs", "create", "nc-crud", "--kind", "pyoco", "--target", "etl", env=env)
    assert created.returncode == 0, created.stderr
    edited = rota(
        "jobs",
        "edit",
        "nc-crud",
        "--subscribe",
        "nc.crud",
        "--timeout",
        "60",
        "--tag",
        "default",
        env=env,
    )
    assert edited.returncode == 0, edited.stderr
    job = json.loads(rota("jobs", "show", "nc-crud", "--json", env=env).stdout)
    assert (
        job["subscribed_events"] == ["nc.crud"]
        and job["timeout"] == 60
        and job["tags"] == ["default"]
    )
    assert "subscribed_events: nc.crud" in rota("jobs", "show", "nc-crud", env=env).stdout
    assert rota("jobs", "disable", "nc-crud", env=env).stdout.strip() == "job nc-crud is disabled"
    refused = rota("submit", "nc-crud", env=env)
    assert refused.returncode == 2 and "disabled" in refused.stderr
    assert rota("jobs", "enable", "nc-crud", env=env).returncode == 0
    assert c_get(stack, "/jobs/nc-crud")["enabled"] is True
    nothing = rota("jobs", "edit", "nc-crud", env=env)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    assert rota("jobs", "delete", "nc-crud", env=env).returncode == 0
    assert stack.client.get("/jobs/nc-crud").status_code == 404


def c_get(stack, path: str) -> dict:  # type: ignore[no-untyped-def]
    return stack.client.get(path).json()
