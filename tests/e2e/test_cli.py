"""The `rota` CLI against a running `rota up`, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def rota(*argv: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rota", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def jobs(stack):
    c = stack.client
    schema = {
        "type": "object",
        "properties": {"count": {"type": "integer", "minimum": 1}},
        "required": ["count"],
    }
    script = (
        "import sys, time\n"
        "n = int([a for a in sys.argv if a.startswith('--count=')][0].split('=')[1])\n"
        "for i in range(n):\n"
        "    print('line', i, flush=True)\n"
        "    time.sleep(0.2)\n"
    )
    r = c.post(
        "/jobs",
        json={
            "name": "counter",
            "kind": "command",
            "target": sys.executable,
            "args": ["-c", script],
            "params_schema": schema,
        },
    )
    assert r.status_code == 201, r.text
    return stack


def test_submit_params_from_pairs_json_and_file_then_watch_and_logs(jobs, tmp_path):
    env = jobs.env()
    out = rota("submit", "counter", "count=3", "--json", env=env)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]

    watched = rota("watch", run_id, env=env)
    assert watched.returncode == 0, watched.stderr
    assert f"{run_id} SUCCEEDED" in watched.stdout
    # Progress went to stderr while it ran (plain lines: not a terminal).
    assert "RUNNING" in watched.stderr

    logs = rota("logs", run_id, env=env)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "line 0\nline 1\nline 2\n"

    params = tmp_path / "params.json"
    params.write_text('{"count": 2}')
    for how in (["--params", "@" + str(params)], ["--params", '{"count": 2}']):
        out = rota("submit", "counter", *how, "--wait", "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["params"] == {"count": 2}


def test_logs_follow_prints_output_as_it_comes_until_the_end(jobs):
    env = jobs.env()
    run_id = json.loads(rota("submit", "counter", "count=4", "--json", env=env).stdout)["run_id"]
    followed = rota("logs", "-f", run_id, env=env)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "".join(f"line {i}\n" for i in range(4))


def test_runs_table_and_json_and_show(jobs):
    env = jobs.env()
    run_id = json.loads(rota("submit", "counter", "count=1", "--wait", "--json", env=env).stdout)[
        "run_id"
    ]
    table = rota("runs", "--job", "counter", env=env)
    assert table.returncode == 0 and run_id in table.stdout and "STATE" in table.stdout
    page = json.loads(rota("runs", "--job", "counter", "--json", env=env).stdout)
    assert run_id in [i["run_id"] for i in page["items"]]
    shown = rota("show", run_id, env=env)
    assert "SUCCEEDED" in shown.stdout and "line 0" in shown.stdout


def test_errors_say_what_to_do(jobs, tmp_path):
    env = jobs.env()
    bad = rota("submit", "counter", "count=zero", env=env)
    assert bad.returncode == 2
    assert "count" in bad.stderr and "integer" in bad.stderr

    unknown = rota("submit", "no-such-job", env=env)
    assert unknown.returncode == 2
    assert "no job named 'no-such-job'" in unknown.stderr and "rota jobs list" in unknown.stderr

    wrong = rota("runs", env={**env, "ROTA_TOKEN": "rota_wrong"})
    assert wrong.returncode == 2
    assert "refused the token" in wrong.stderr and "rota login" in wrong.stderr

    down = rota("runs", env={**env, "ROTA_URL": "http://127.0.0.1:9"})
    assert down.returncode == 2 and "cannot reach the rota API" in down.stderr

    nothing = rota("submit", env=env)
    assert nothing.returncode == 2 and "--flow" in nothing.stderr


def test_login_saves_a_checked_token_for_later_commands(jobs, tmp_path):
    env = jobs.env()
    token, url = env["ROTA_API_TOKEN"], env["ROTA_API_URL"]
    bare = {
        k: v for k, v in os.environ.items() if not k.startswith("ROTA_") or k in ("ROTA_LOG_LEVEL",)
    }
    # Away from `rota up`'s data dir, with only the login file to go by.
    bare.update(XDG_CONFIG_HOME=str(tmp_path / "config"), ROTA_DATA_DIR=str(tmp_path / "none"))
    refused = rota("login", "--url", url, "--token", "rota_wrong", env=bare)
    assert refused.returncode == 2 and not (tmp_path / "config/rota/credentials.json").exists()
    ok = rota("login", "--url", url, "--token", token, env=bare)
    assert ok.returncode == 0, ok.stderr
    saved = Path(tmp_path / "config/rota/credentials.json")
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    listed = rota("runs", "--job", "counter", env=bare)
    assert listed.returncode == 0, listed.stderr


def test_flows_by_name_and_as_yaml_with_task_progress(jobs, tmp_path):
    env = jobs.env()
    out = rota("submit", "--flow", "etl", "count=4", "--wait", env=env)
    assert out.returncode == 0, out.stderr
    assert "SUCCEEDED" in out.stdout
    # --wait showed the tasks as they went (on stderr; --json keeps quiet).
    assert "tasks 3/3: extract=" in out.stderr, out.stderr
    run_id = out.stderr.split()[0]
    run = json.loads(rota("show", run_id, "--json", env=env).stdout)
    assert run["state"] == "SUCCEEDED" and run["flow_name"] == "etl"
    tasks = rota("tasks", run["run_id"], "--records", env=env)
    assert tasks.returncode == 0, tasks.stderr
    lines = tasks.stdout.splitlines()
    assert lines[0].split()[:2] == ["TASK", "STATE"]
    assert [line.split()[0] for line in lines[1:]] == ["extract", "transform", "load"]

    flow = tmp_path / "flow.yaml"
    flow.write_text("version: 1\nflow:\n  graph: |\n    prepare >> explode >> never\n")
    failed = rota("submit", "--yaml", str(flow), "--wait", "--json", env=env)
    assert failed.returncode == 1
    body = json.loads(failed.stdout)
    assert body["state"] == "FAILED" and "explode" in body["error_summary"]
    tasks = json.loads(rota("tasks", body["run_id"], "--records", "--json", env=env).stdout)
    assert "boom" in tasks["task_records"]["explode"]["error"]

    unknown = rota("submit", "--flow", "nope", env=env)
    assert unknown.returncode == 2 and "nope" in unknown.stderr
