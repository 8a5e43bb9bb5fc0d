"""``rota up``: the whole stack on one machine.

Starts an embedded nats-server (JetStream store under the data dir), migrates
SQLite, creates an admin and an API token on first start, then runs ``rota
server`` and ``rota worker`` as child processes. Ctrl-C or SIGTERM stops every
child (the worker first, so it can hand back runs while NATS is still up) and
leaves nothing behind; children also die with this process (PR_SET_PDEATHSIG).
A second start reuses the data dir: same NATS port and token, same database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import httpx

from rota.cli.base import CommandError, env_default, env_help

if TYPE_CHECKING:
    from rota.bus.server import EmbeddedNats

help = "start NATS, the database, the web server and a worker on this machine"

ENV_FILE = "rota.env"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=env_default("ROTA_DATA_DIR", ".rota"),
        help=env_help(
            "where NATS data, the SQLite file, certificates and tokens live", "ROTA_DATA_DIR"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the web server binds")
    parser.add_argument("--port", type=int, default=8000, help="web server port")
    parser.add_argument(
        "--nats-port",
        type=int,
        default=0,
        help="NATS port (default: the last one used, else a free one)",
    )
    parser.add_argument(
        "--nats-url",
        default="",
        help="use this NATS (a cluster: its URLs, comma-separated) instead of starting one; "
        "its token from ROTA_NATS_TOKEN (ROTA_NATS_URL alone does not do this: the "
        "rota.env of an earlier start sets it)",
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="use this database (postgres://user:pass@host/db) instead of SQLite in the data dir",
    )
    parser.add_argument("--no-worker", action="store_true", help="start no worker")
    parser.add_argument(
        "--sync-interval",
        default=env_default("ROTA_NATS_SYNC_INTERVAL", ""),
        help=env_help(
            "JetStream fsync interval (e.g. always, 1s; default: the server's)",
            "ROTA_NATS_SYNC_INTERVAL",
        ),
    )


def _read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip().strip("'\"")
    return out


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    _write_private(path, value + "\n")
    return value


def _bootstrap_admin(data_dir: Path) -> tuple[str | None, str]:
    """Create the admin user and its API token on first start.

    Returns (password or None if the admin existed, raw token)."""
    from django.contrib.auth import get_user_model

    from rota.models import ApiToken

    token_file = data_dir / "admin.token"
    User = get_user_model()
    user = User.objects.filter(username="admin").first()
    password = None
    if user is None:
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser("admin", "", password)
    if token_file.exists():
        return password, token_file.read_text().strip()
    _, raw = ApiToken.issue(user, name="rota up admin")
    _write_private(token_file, raw + "\n")
    return password, raw


class Stack:
    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.nats: EmbeddedNats | None = None

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        from rota.bus.server import die_with_parent

        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        self.children.append((name, proc))

    def stop(self) -> None:
        # Worker first (it hands back runs through NATS), then the server, then NATS.
        for _, proc in sorted(self.children, key=lambda c: c[0] != "worker"):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = (
            time.monotonic() + float(os.environ.get("ROTA_SHUTDOWN_GRACE_SECONDS", "30")) + 10
        )
        for name, proc in self.children:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"rota: {name} did not stop in time; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()
        self.children.clear()
        if self.nats is not None:
            self.nats.stop()
            self.nats = None


def handle(args: argparse.Namespace) -> int:
    from rota.private import NotPrivate, make_private, private_umask

    data_dir = Path(args.data_dir).resolve()
    # Private at every start, and what the children create (SQLite and its WAL,
    # the NATS store, logs) private from birth.
    private_umask()
    try:
        fixed = make_private(data_dir)
    except NotPrivate as exc:
        raise CommandError(exc.message, hint=exc.hint) from None
    if fixed:
        print(f"rota: made {len(fixed)} path(s) in {data_dir} private (0700/0600)", file=sys.stderr)
    previous = _read_env_file(data_dir / ENV_FILE)

    from rota.bus.server import EmbeddedNats, NatsServerError, port_in_use

    if port_in_use(args.port, args.host if args.host != "0.0.0.0" else "127.0.0.1"):
        raise CommandError(
            f"port {args.port} is already in use",
            hint="stop what listens there (another `rota up`?) or pass --port",
        )
    external_nats = bool(args.nats_url)
    nats_port = args.nats_port
    if not external_nats and not nats_port and previous.get("ROTA_NATS_URL"):
        with contextlib.suppress(ValueError):
            old = int(previous["ROTA_NATS_URL"].rsplit(":", 1)[-1])
            nats_port = 0 if port_in_use(old) else old
    nats_token = (
        os.environ.get("ROTA_NATS_TOKEN", "") if external_nats else _secret(data_dir / "nats.token")
    )
    _secret(data_dir / "secret_key")
    tls_dir = data_dir / "tls"
    if not (tls_dir / "tls.crt").exists():
        from rota.control.certs import init_certs

        init_certs(tls_dir, ["localhost"])

    stack = Stack()
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if external_nats:
        nats_url = args.nats_url
    else:
        nats = stack.nats = EmbeddedNats(
            data_dir / "nats",
            port=nats_port,
            token=nats_token,
            sync_interval=args.sync_interval,
            log_file=data_dir / "nats.log",
        )
        try:
            nats.start()
        except NatsServerError as exc:
            raise CommandError(exc.message, hint=exc.hint) from None
        nats_url = nats.url

    api_url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    env = {
        "ROTA_DATA_DIR": str(data_dir),
        "ROTA_NATS_URL": nats_url,
        "ROTA_NATS_TOKEN": nats_token,
        "ROTA_DATABASE_URL": args.database_url or f"sqlite:///{data_dir / 'rota.sqlite3'}",
        "ROTA_TLS_DIR": str(tls_dir),
        # Workers of a one-machine stack listen on loopback, each on a free port
        # it advertises in the registry.
        "ROTA_GRPC_HOST": "127.0.0.1",
        "ROTA_GRPC_PORT": "0",
        "ROTA_API_URL": api_url,
        # The example flows (rota.contrib.example_flows), unless you name your own.
        "ROTA_FLOW_MODULES": os.environ.get("ROTA_FLOW_MODULES", "rota.contrib.example_flows"),
    }
    os.environ.update(env)
    try:
        from rota.cli.base import run_system_checks, setup_django

        setup_django()
        run_system_checks()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        password, token = _bootstrap_admin(data_dir)
        _ensure_ops_assets()
        _ensure_nats_resources()
        env["ROTA_API_TOKEN"] = token
        _write_private(
            data_dir / ENV_FILE,
            "# written by `rota up`; load with: set -a; . "
            + str(data_dir / ENV_FILE)
            + "; set +a\n"
            + "".join(f"{k}={v}\n" for k, v in sorted(env.items())),
        )
        child_env = {**os.environ, **env}
        cli = [sys.executable, "-m", "rota"]
        stack.spawn(
            "server", cli + ["server", "--host", args.host, "--port", str(args.port)], child_env
        )
        if not args.no_worker:
            stack.spawn("worker", cli + ["worker"], child_env)
        _wait_healthy(api_url, stack, timeout=30)
        print(f"rota is up: {api_url}/ops/  (the ops UI: log in as admin)")
        if password:
            print(f"  admin user: admin  password: {password}  (shown once)")
        else:
            print("  admin user: admin  (its password was shown on the first start)")
        print(f"  API:        {api_url}  (docs {api_url}/docs, after logging in)")
        print(f"  API token:  {token}  (also in {data_dir / 'admin.token'})")
        print(f"  NATS:       {nats_url}")
        print(f"  database:   {_without_password(env['ROTA_DATABASE_URL'])}")
        print(f"  more workers: set -a; . {data_dir / ENV_FILE}; set +a; rota worker --node-id n2")
        sys.stdout.flush()
        crashed = False
        while not stopping:
            for name, proc in stack.children:
                if proc.poll() is not None:
                    print(
                        f"rota: {name} exited with status {proc.returncode}; stopping",
                        file=sys.stderr,
                    )
                    stopping = crashed = True
            time.sleep(0.2)
        return 1 if crashed else 0
    finally:
        stack.stop()


def _without_password(url: str) -> str:
    """A database URL fit to print: the password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _ensure_ops_assets() -> None:
    """The ops UI's browser assets, fetched with npm the first time. Without
    them the API and the workers still run: say so and go on."""
    from rota.ops.assets import AssetsError, assets_present, ensure_assets

    if assets_present():
        return
    print("rota: installing the ops UI's assets with npm (once)", file=sys.stderr)
    try:
        ensure_assets()
    except AssetsError as exc:
        print(f"rota: warning: the ops UI has no styles or scripts: {exc}", file=sys.stderr)


def _ensure_nats_resources() -> None:
    import asyncio

    from rota.bus.connection import connect
    from rota.conf import reload_settings

    async def go() -> None:
        bus = await connect(reload_settings(), name="rota-up", ensure=True)
        await bus.close()

    asyncio.run(go())


def _wait_healthy(url: str, stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in stack.children:
            if proc.poll() is not None:
                raise CommandError(f"{name} exited with status {proc.returncode} during start-up")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise CommandError(f"the web server did not become healthy at {url} within {timeout:.0f}s")
