"""`rota up` as a user runs it: real processes, HTTP only."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import descendants, start_stack, stop_stack, wait_for

pytestmark = pytest.mark.e2e


def _define(client, name: str, **job) -> None:
    r = client.post("/jobs", json={"name": name, **job})
    assert r.status_code == 201, r.text


def _finished(client, run_id: str) -> dict:
    def check():
        page = client.get("/runs", params={"limit": 200}).json()
        for item in page["items"]:
            if item["run_id"] == run_id and item["state"] not in (
                "PENDING",
                "ASSIGNED",
                "RUNNING",
                "CANCELLING",
            ):
                return item
        return None

    return wait_for(check, timeout=30)


def test_health_is_anonymous(stack):
    import httpx

    r = httpx.get(stack.url + "/health")
    assert r.status_code == 200
    assert r.json()["database"] == "ok" and r.json()["nats"] == "ok"


def test_command_job_succeeds_with_stdout(stack):
    c = stack.client
    _define(
        c,
        "greet",
        kind="command",
        target="echo",
        args=["hello"],
        params_schema={"type": "object", "properties": {"name": {"type": "string"}}},
    )
    r = c.post("/runs", json={"job": "greet", "params": {"name": "ops"}})
    assert r.status_code == 201, r.text
    run = _finished(c, r.json()["run_id"])
    assert run["state"] == "SUCCEEDED" and run["status"] == "COMPLETED"
    assert run["stdout"].strip() == "hello --name=ops"
    assert run["exit_code"] == 0


def test_failing_command_reaches_failed_with_error_summary(stack):
    c = stack.client
    _define(c, "broken", kind="command", target="sh", args=["-c", "echo no such table >&2; exit 4"])
    run = _finished(c, c.post("/runs", json={"job": "broken"}).json()["run_id"])
    assert run["state"] == "FAILED"
    assert "exit status 4" in run["error_summary"] and "no such table" in run["error_summary"]


def test_timeout_kills_the_process(stack, tmp_path):
    c = stack.client
    pidfile = tmp_path / "pid"
    _define(
        c,
        "hang",
        kind="command",
        target="sh",
        args=["-c", f"echo $$ > {pidfile}; sleep 60"],
        timeout=1.0,
    )
    run = _finished(c, c.post("/runs", json={"job": "hang"}).json()["run_id"])
    assert run["state"] == "TIMED_OUT"
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_bad_requests_create_no_run(stack):
    c = stack.client
    _define(
        c,
        "typed",
        kind="command",
        target="true",
        params_schema={
            "type": "object",
            "properties": {"count": {"type": "integer"}},
            "required": ["count"],
        },
    )
    before = len(c.get("/runs", params={"job": "typed"}).json()["items"])
    bad = c.post("/runs", json={"job": "typed", "params": {"count": "many"}})
    assert bad.status_code == 422 and "count" in bad.json()["detail"]
    missing = c.post("/runs", json={"job": "typed", "params": {}})
    assert missing.status_code == 422 and "count" in missing.json()["detail"]
    assert c.post("/runs", json={"job": "nope"}).status_code == 404
    malformed = c.post(
        "/runs", content=b'{"job": "typed",', headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code in (400, 422)
    import httpx

    assert (
        httpx.post(stack.url + "/runs", json={"job": "typed", "params": {"count": 1}}).status_code
        == 401
    )
    assert (
        httpx.post(
            stack.url + "/runs",
            json={"job": "typed", "params": {"count": 1}},
            headers={"Authorization": "Bearer wrong"},
        ).status_code
        == 401
    )
    assert len(c.get("/runs", params={"job": "typed"}).json()["items"]) == before


def test_idempotency_key_gives_one_run(stack):
    c = stack.client
    _define(c, "once", kind="command", target="true")
    h = {"Idempotency-Key": "deploy-42"}
    first = c.post("/runs", json={"job": "once"}, headers=h)
    second = c.post("/runs", json={"job": "once"}, headers=h)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["run_id"] == second.json()["run_id"]
    assert len(c.get("/runs", params={"job": "once"}).json()["items"]) == 1


def test_cli_and_second_worker_from_rota_env(stack):
    env = stack.env()
    c = stack.client
    _define(c, "tagged", kind="command", target="echo", args=["from-n2"], tags=["n2only"])
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rota",
            "worker",
            "--node-id",
            "n2",
            "--tags",
            "n2only",
            "--roles",
            "execute",
        ],
        env=env,
    )
    try:
        out = subprocess.run(
            [sys.executable, "-m", "rota", "submit", "tagged", "--wait", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        import json

        run = json.loads(out.stdout)
        assert run["state"] == "SUCCEEDED"
        assert run["worker_id"].startswith("n2-")
        listed = subprocess.run(
            [sys.executable, "-m", "rota", "runs", "--job", "tagged"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run["run_id"] in listed.stdout
    finally:
        worker.terminate()
        worker.wait(30)


def test_sigterm_leaves_no_process_and_restart_reuses_data(tmp_path):
    import httpx

    stack = start_stack(tmp_path)
    c = stack.client
    _define(c, "kept", kind="python", target="rota.contrib.examples:add")
    run = _finished(
        c, c.post("/runs", json={"job": "kept", "params": {"a": 2, "b": 3}}).json()["run_id"]
    )
    assert run["state"] == "SUCCEEDED" and run["result"] == 5
    tree = descendants(stack.proc.pid)
    # nats-server, server, worker, and the worker's python pool (forkserver + children)
    assert len(tree) >= 5, tree
    assert stop_stack(stack) == 0
    time.sleep(0.5)
    alive = [pid for pid in tree if _alive(pid)]
    assert alive == []
    again = start_stack(tmp_path)
    try:
        names = [j["name"] for j in again.client.get("/jobs").json()]
        assert "kept" in names
        assert again.token == stack.token
        assert httpx.get(again.url + "/health").status_code == 200
    finally:
        stop_stack(again)


def _alive(pid: int) -> bool:
    """True if pid runs; a zombie (exited, not yet reaped by PID 1 here) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_doctor_says_what_is_wrong(stack, tmp_path):
    from rota.bus.server import free_port

    env = stack.env()
    ok = subprocess.run(
        [sys.executable, "-m", "rota", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "FAIL" not in ok.stdout

    dead = free_port()
    broken = {
        **env,
        "ROTA_NATS_URL": f"nats://127.0.0.1:{dead}",
        "ROTA_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
        "ROTA_API_URL": f"http://127.0.0.1:{dead}",
    }
    bad = subprocess.run(
        [sys.executable, "-m", "rota", "doctor"],
        env=broken,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert f"cannot connect to NATS at nats://127.0.0.1:{dead}" in bad.stdout
    assert "not migrated" in bad.stdout and "rota migrate" in bad.stdout
    assert f"no web server at http://127.0.0.1:{dead}" in bad.stdout


def test_http_cancel_of_a_running_command(stack, tmp_path):
    c = stack.client
    pidfile = tmp_path / "sleeper.pid"
    _define(
        c,
        "sleeper",
        kind="command",
        target="sh",
        args=["-c", f"echo $$ > {pidfile}; exec sleep 600"],
    )
    run_id = c.post("/runs", json={"job": "sleeper"}).json()["run_id"]
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    t0 = time.monotonic()
    r = c.post(f"/runs/{run_id}/cancel")
    assert r.status_code == 200 and r.json()["state"] in ("CANCELLING", "CANCELLED")
    wait_for(
        lambda: c.get(f"/runs/{run_id}").json()["state"] == "CANCELLED", timeout=2.0, interval=0.05
    )
    assert time.monotonic() - t0 < 2.0
    assert not _alive(int(pidfile.read_text()))
    again = c.post(f"/runs/{run_id}/cancel")  # idempotent: a finished run is left as it is
    assert again.status_code == 200 and again.json()["state"] == "CANCELLED"
    assert c.post("/runs/01NOSUCHRUN/cancel").status_code == 404


def test_cli_pings_a_worker_over_mtls(stack):
    env = stack.env()
    listed = subprocess.run(
        [sys.executable, "-m", "rota", "workers", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    import json

    live = [w for w in json.loads(listed.stdout) if w["state"] in ("IDLE", "RUNNING")]
    assert live and all(w["grpc_endpoint"].startswith("127.0.0.1:") for w in live)
    ping = subprocess.run(
        [sys.executable, "-m", "rota", "workers", "ping", live[0]["worker_id"], "--count", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ping.returncode == 0, ping.stderr
    assert ping.stdout.count(f"pong from {live[0]['worker_id']}") == 3 and " ms" in ping.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "rota", "workers", "ping", "nobody-1234"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no worker 'nobody-1234'" in missing.stderr


def test_certs_init_makes_a_ca_and_node_certificates(tmp_path):
    from cryptography import x509

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rota",
            "certs",
            "init",
            "--dir",
            str(tmp_path),
            "--node",
            "worker-a",
            "--node",
            "10.0.0.7",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    node = x509.load_pem_x509_certificate((tmp_path / "worker-a" / "tls.crt").read_bytes())
    node.verify_directly_issued_by(ca)
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "worker-a" in names.get_values_for_type(x509.DNSName)
    assert "rota" in names.get_values_for_type(x509.DNSName)
    shared = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    ips = [
        str(i)
        for i in shared.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.IPAddress)
    ]
    assert "10.0.0.7" in ips
    assert oct((tmp_path / "ca.key").stat().st_mode & 0o777) == "0o600"
    # A second run keeps the CA, so certificates made earlier stay valid.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rota",
            "certs",
            "init",
            "--dir",
            str(tmp_path),
            "--node",
            "worker-b",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes()) == ca


def test_openapi_and_docs_need_auth_but_health_does_not(stack):
    import httpx

    assert httpx.get(stack.url + "/health").status_code == 200
    assert httpx.get(stack.url + "/openapi.json").status_code == 401
    assert httpx.get(stack.url + "/docs").status_code == 401
    schema = stack.client.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/runs" in paths and "/runs/{run_id}/cancel" in paths and "/schedules" in paths
    assert stack.client.get("/docs").status_code == 200
