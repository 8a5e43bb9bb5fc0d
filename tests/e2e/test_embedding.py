"""rota embedded in an existing Django project: examples/django_host run the way
docs/embedding.md tells a host team to run it.

Real processes only: a nats-server, ``manage.py migrate``, ``rota_certs``,
``rota_doctor``, ``manage.py rota_worker`` and the host's own ASGI application
under uvicorn. Everything is reached over HTTP through the host's ``/jobs/``
prefix, authenticated as the host's users.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rota.bus.server import EmbeddedNats, NatsServerError, free_port
from tests.e2e.conftest import clean_env, descendants, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "django_host"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: What examples/django_host/hostproject/settings.py declares; rota adds nothing.
HOST_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "DEAD_LETTER"}
ALICE_PASSWORD = "alice-" + secrets.token_hex(8)


@dataclass
class Host:
    dir: Path
    env: dict[str, str]
    url: str
    token: str
    worker: subprocess.Popen
    web: subprocess.Popen
    logs: Path
    doctor_before_migrate: subprocess.CompletedProcess
    migrate: subprocess.CompletedProcess

    @property
    def api(self) -> str:
        return self.url + "/jobs"

    @property
    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )

    def manage(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return manage(self.dir, self.env, *args, **kw)

    def log_text(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


def manage(
    project: Path, env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _start(argv: list[str], project: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("django-host")
    # A fresh checkout of the example: no database, no certificates, no caches.
    project = tmp / "shop"
    shutil.copytree(
        EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3*", "tls")
    )
    logs = tmp / "logs"
    logs.mkdir()
    nats_token = secrets.token_hex(16)
    nats = EmbeddedNats(tmp / "nats", token=nats_token, log_file=logs / "nats.log")
    try:
        nats.start()
    except NatsServerError as exc:
        if CI:
            raise
        pytest.skip(f"nats-server unavailable: {exc}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The host's own variables feed its settings.ROTA; the secret and two more
    # values come as ROTA_* variables, which rota reads in a host too.
    env = clean_env(
        SHOP_DB_PATH=str(tmp / "shop.sqlite3"),
        SHOP_NATS_URL=nats.url,
        SHOP_TLS_DIR=str(tmp / "tls"),
        SHOP_API_URL=url + "/jobs",
        SHOP_NODE_ID="shop-e2e",
        ROTA_NATS_TOKEN=nats_token,
        ROTA_GRPC_PORT="0",
        ROTA_SHUTDOWN_GRACE_SECONDS="3",
        PYTHONUNBUFFERED="1",
    )
    procs: list[subprocess.Popen] = []
    try:
        doctor = manage(project, env, "rota_doctor")
        migrate = manage(project, env, "migrate", "--no-input")
        assert migrate.returncode == 0, migrate.stderr
        certs = manage(project, env, "rota_certs", "init", "--dir", str(tmp / "tls"))
        assert certs.returncode == 0, certs.stderr
        check = manage(project, env, "check")
        assert check.returncode == 0, check.stderr
        users = manage(
            project,
            env,
            "shell",
            "--no-imports",
            "-c",
            "from django.contrib.auth.models import Group, User\n"
            "from rota.models import ApiToken\n"
            # rota's ops groups are ordinary groups of the host's users.
            "ops = User.objects.create_user('ops')\n"
            "ops.groups.add(Group.objects.get(name='ops_admin'))\n"
            f"alice = User.objects.create_user('alice', password={ALICE_PASSWORD!r}, is_staff=True)\n"
            "alice.groups.add(Group.objects.get(name='ops_operator'))\n"
            "print('TOKEN', ApiToken.issue(ops, name='e2e')[1])\n",
        )
        assert users.returncode == 0, users.stderr
        token = re.search(r"^TOKEN (\S+)$", users.stdout, re.M).group(1)

        worker = _start(
            [sys.executable, "manage.py", "rota_worker", "--roles", "execute,lead"],
            project,
            env,
            logs / "worker.log",
        )
        procs.append(worker)
        web = _start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "hostproject.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            project,
            env,
            logs / "web.log",
        )
        procs.append(web)
        h = Host(project, env, url, token, worker, web, logs, doctor, migrate)

        def ready() -> bool:
            for p in procs:
                if p.poll() is not None:
                    raise AssertionError(f"{p.args} exited with {p.returncode}:\n{h.log_text()}")
            try:
                if httpx.get(h.api + "/health", timeout=2).status_code != 200:
                    return False
                items = h.client.get("/workers").json()["items"]
            except httpx.HTTPError:
                return False
            return any(w["worker_id"].startswith("shop-e2e-") for w in items)

        try:
            wait_for(ready, timeout=45, interval=0.2)
        except AssertionError:
            raise AssertionError(f"the host did not come up:\n{h.log_text()}") from None
        yield h
    finally:
        for p in reversed(procs):
            _stop(p)
        nats.stop()


def _define(client: httpx.Client, name: str, **job) -> None:
    r = client.post("/jobs", json={"name": name, **job})
    assert r.status_code == 201, r.text


def _submit(client: httpx.Client, job: str, **params) -> str:
    r = client.post("/runs", json={"job": job, "params": params})
    assert r.status_code == 201, r.text
    return r.json()["run_id"]


def _finished(host: Host, run_id: str, timeout: float = 30) -> dict:
    c = host.client

    def check():
        run = c.get(f"/runs/{run_id}").json()
        return run if run["state"] in TERMINAL else None

    try:
        return wait_for(check, timeout=timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"run {run_id} did not finish:\n{host.log_text()}") from None


def _processes_running(host: Host, command: str) -> list[int]:
    """Processes below the worker whose command line runs ``manage.py <command>``."""
    found = []
    for pid in descendants(host.worker.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command.encode() in argv and any(a.endswith(b"manage.py") for a in argv):
            found.append(pid)
    return found


# -- the steps of docs/embedding.md ---------------------------------------------------


def test_host_migrate_applies_rota_and_host_migrations(host):
    assert "Applying rota.0001_initial... OK" in host.migrate.stdout
    assert "Applying shop.0001_initial... OK" in host.migrate.stdout
    # Before migrate, rota_doctor said so, with the host's command as the fix.
    before = host.doctor_before_migrate
    assert before.returncode != 0
    assert "FAIL  the database is not migrated" in before.stdout
    assert "python manage.py migrate" in before.stdout


def test_doctor_passes_once_the_host_runs(host):
    out = host.manage("rota_doctor")
    lines = [line for line in out.stdout.splitlines() if not line.startswith(" ")]
    assert out.returncode == 0, out.stdout + out.stderr
    assert lines and all(line.startswith("ok ") for line in lines), out.stdout
    assert any("NATS reachable at " + host.env["SHOP_NATS_URL"] in line for line in lines)
    assert any("database reachable and migrated (sqlite)" in line for line in lines)
    assert any(f"web server at {host.api} answers /health with 200" in line for line in lines)


def test_rota_commands_are_the_cli_commands(host):
    listed = host.manage("help").stdout
    rota_section = listed.split("[rota]")[1].split("[")[0].split()
    assert rota_section == ["rota_celery", "rota_certs", "rota_doctor", "rota_worker"]
    for cli, command in (
        (["worker"], "rota_worker"),
        (["certs", "init"], "rota_certs"),
        (["doctor"], "rota_doctor"),
        (["celery", "import"], "rota_celery"),
    ):
        cli_help = subprocess.run(
            [sys.executable, "-m", "rota", *cli, "--help"],
            env=host.env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        manage_help = host.manage(command, *cli[1:], "--help").stdout
        cli_options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", cli_help)) - {"--help"}
        assert cli_options <= set(re.findall(r"--[a-z][a-z-]+", manage_help)), (cli, command)


def test_rota_adds_no_middleware_and_checks_explain_bad_settings(host):
    out = host.manage(
        "shell",
        "--no-imports",
        "-c",
        "import json; from django.conf import settings; print(json.dumps(settings.MIDDLEWARE))",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == HOST_MIDDLEWARE
    # A wrong value in the host's ROTA settings stops `manage.py check` with an explanation.
    bad = manage(host.dir, {**host.env, "SHOP_NATS_URL": "http://127.0.0.1:4222"}, "check")
    assert bad.returncode != 0
    assert "rota.E002" in bad.stderr and "nats://" in bad.stderr


# -- django jobs through the host's prefix --------------------------------------------


def test_django_job_runs_the_host_command_with_args_and_params(host):
    c = host.client
    _define(
        c,
        "greet",
        kind="django",
        target="greet",
        args=["hello", "big world"],
        default_params={"name": "world"},
        params_schema={
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "times": {"type": "integer"},
                "shout": {"type": "boolean"},
            },
        },
    )
    hostile = "ops; echo $(id) 'quoted'"
    run = _finished(host, _submit(c, "greet", name=hostile, times=2, shout=True))
    assert run["state"] == "SUCCEEDED", run
    assert run["kind"] == "django" and run["exit_code"] == 0
    assert run["worker_id"].startswith("shop-e2e-")
    out = run["stdout"].splitlines()
    # Job args are positional arguments, params are --key=value options, every
    # value one argv item (no shell ever saw the name).
    assert out[:2] == [f"HELLO {hostile.upper()}"] * 2
    assert "words: ['hello', 'big world']" in out
    assert f"name: {hostile!r}" in out
    # In the host's directory, with the run's identity.
    assert f"cwd: {host.dir}" in out
    assert f"run: {run['run_id']}" in out

    # Without params, the job's default params apply.
    run = _finished(host, _submit(c, "greet"))
    assert run["state"] == "SUCCEEDED"
    assert "hello world" in run["stdout"] and "name: 'world'" in run["stdout"]


def test_jobs_on_the_host_worker_do_not_see_the_nats_token(host):
    c = host.client
    _define(c, "environment", kind="command", target="env")
    run = _finished(host, _submit(c, "environment"))
    assert run["state"] == "SUCCEEDED"
    assert "SHOP_NATS_URL=" in run["stdout"]  # the host's own variables are there
    assert "ROTA_NATS_TOKEN" not in run["stdout"]
    assert host.env["ROTA_NATS_TOKEN"] not in run["stdout"]


def test_failing_command_reaches_failed(host):
    c = host.client
    _define(c, "explode", kind="django", target="explode", max_attempts=1)
    run = _finished(host, _submit(c, "explode"))
    assert run["state"] == "FAILED" and run["exit_code"] == 3
    assert run["error_summary"] == "exit status 3: CommandError: the stock table is on fire"
    assert "checking the stock" in run["stderr"]

    _define(c, "typo", kind="django", target="no_such_command", max_attempts=1)
    run = _finished(host, _submit(c, "typo"))
    assert run["state"] == "FAILED" and run["error_summary"].startswith("exit status 1")
    assert "Unknown command: 'no_such_command'" in run["stderr"]


def test_long_command_can_be_cancelled(host):
    c = host.client
    _define(
        c,
        "crunch",
        kind="django",
        target="crunch",
        params_schema={"type": "object", "properties": {"seconds": {"type": "number"}}},
    )
    run_id = _submit(c, "crunch", seconds=300)
    wait_for(lambda: c.get(f"/runs/{run_id}").json()["state"] == "RUNNING", timeout=30)
    pids = wait_for(lambda: _processes_running(host, "crunch"), timeout=15)
    r = c.post(f"/runs/{run_id}/cancel")
    assert r.status_code == 200 and r.json()["state"] in ("CANCELLING", "CANCELLED"), r.text
    run = _finished(host, run_id)
    assert run["state"] == "CANCELLED", run
    assert run["exit_code"] in (-signal.SIGTERM, -signal.SIGKILL)
    time.sleep(0.5)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert alive == [] and _processes_running(host, "crunch") == []


def test_timeout_stops_the_command(host):
    c = host.client
    _define(
        c,
        "crunch-briefly",
        kind="django",
        target="crunch",
        timeout=1.0,
        max_attempts=1,
        params_schema={"type": "object", "properties": {"seconds": {"type": "number"}}},
    )
    run = _finished(host, _submit(c, "crunch-briefly", seconds=60))
    assert run["state"] == "TIMED_OUT", run
    assert _processes_running(host, "crunch") == []


# -- the host's users -------------------------------------------------------------------


def test_api_under_the_prefix_authenticates_host_users(host):
    assert httpx.get(host.api + "/health").status_code == 200  # the one anonymous endpoint
    for path in ("/jobs", "/runs", "/workers"):
        assert httpx.get(host.api + path).status_code == 401, path
    bad = httpx.get(host.api + "/jobs", headers={"Authorization": "Bearer rota_not-a-token"})
    assert bad.status_code == 401
    assert httpx.post(host.api + "/runs", json={"job": "greet"}).status_code == 401
    # The token of host user "ops", in either header.
    assert host.client.get("/jobs").status_code == 200
    assert httpx.get(host.api + "/jobs", headers={"X-API-Key": host.token}).status_code == 200
    # rota's URLs live only under the prefix; the host's own pages are untouched.
    assert httpx.get(host.url + "/runs").status_code == 404
    assert httpx.get(host.url + "/").text == "the shop is open\n"


def _login(host: Host, username: str, password: str) -> httpx.Client:
    """Log in through the host's own login view (Django admin's)."""
    browser = httpx.Client(base_url=host.url, timeout=10)
    page = browser.get("/admin/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    r = browser.post(
        "/admin/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": csrf},
    )
    assert r.status_code == 302, r.text[:500]
    assert "sessionid" in browser.cookies
    return browser


def test_session_of_a_logged_in_host_user_is_accepted(host):
    browser = _login(host, "alice", ALICE_PASSWORD)
    assert browser.get("/jobs/runs").status_code == 200
    assert browser.get("/jobs/jobs").status_code == 200
    r = browser.post(
        "/jobs/runs",
        json={"job": "greet", "params": {"name": "alice"}},
        headers={"X-CSRFToken": browser.cookies["csrftoken"]},
    )
    assert r.status_code == 201, r.text
    run = _finished(host, r.json()["run_id"])
    assert run["state"] == "SUCCEEDED" and "hello alice" in run["stdout"]
    # After logging out, the same browser is anonymous again.
    page = browser.get("/admin/")
    csrf = browser.cookies["csrftoken"]
    assert page.status_code == 200
    browser.post("/admin/logout/", data={"csrfmiddlewaretoken": csrf})
    assert browser.get("/jobs/runs").status_code == 401


def test_session_post_without_csrf_token_is_refused(host):
    browser = _login(host, "alice", ALICE_PASSWORD)
    r = browser.post("/jobs/runs", json={"job": "greet"})
    assert r.status_code == 403


def test_host_user_outside_the_ops_groups_cannot_define_jobs(host):
    out = host.manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.contrib.auth.models import User\n"
        "from rota.models import ApiToken\n"
        "u = User.objects.create_user('customer')\n"
        "print('TOKEN', ApiToken.issue(u)[1])\n",
    )
    raw = re.search(r"^TOKEN (\S+)$", out.stdout, re.M).group(1)
    r = httpx.post(
        host.api + "/jobs",
        json={"name": "customer-shell", "kind": "command", "target": "sh"},
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert r.status_code in (401, 403)
