"""A real multi-process rota deployment on this machine's loopback, for the
scale-out tests and benchmarks: N clustered nats-servers, a database (SQLite
file or a fresh PostgreSQL database), web servers and workers, each its own
process that a test can SIGKILL and start again.

    with Deployment(tmp, nats_nodes=3, database="postgres") as d:
        d.add_server(); d.add_server()
        d.add_worker("n1", roles="lead,execute")
        ...
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx

from rota.bus.server import EmbeddedNats, free_port

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("ROTA_TEST_POSTGRES_URL", "postgres://rota:rota@127.0.0.1:5432/rota")


def postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(_with_db(POSTGRES_URL, "postgres"), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def create_postgres_database() -> str:
    """A new, empty database on the test PostgreSQL; returns its URL."""
    import psycopg

    name = f"rota_deploy_{secrets.token_hex(4)}"
    with psycopg.connect(_with_db(POSTGRES_URL, "postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return _with_db(POSTGRES_URL, name)


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[-1]
    with psycopg.connect(_with_db(POSTGRES_URL, "postgres"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class NatsCluster:
    """``size`` nats-servers clustered on loopback (one alone is not clustered)."""

    def __init__(self, tmp: Path, size: int, token: str, sync_interval: str = "") -> None:
        self.nodes: dict[str, EmbeddedNats] = {}
        names = [f"n{i + 1}" for i in range(size)]
        cluster_ports = {name: free_port() for name in names}
        for name in names:
            self.nodes[name] = EmbeddedNats(
                tmp / f"nats-{name}",
                token=token,
                sync_interval=sync_interval,
                log_file=tmp / f"nats-{name}.log",
                server_name=name,
                http_port=0,
                **(
                    dict(
                        cluster_name="rota",
                        cluster_port=cluster_ports[name],
                        routes=[f"nats-route://127.0.0.1:{p}" for p in cluster_ports.values()],
                    )
                    if size > 1
                    else {}
                ),
            )

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes.values())

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()
        self.wait_for_meta_leader()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def kill(self, name: str) -> None:
        proc = self.nodes[name].process
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.nodes[name].process = None

    def restart(self, name: str) -> None:
        self.nodes[name].start()

    def jsz(self, name: str | None = None) -> dict[str, Any]:
        for node_name, node in self.nodes.items():
            if (name is None or name == node_name) and node.process is not None:
                try:
                    with urllib.request.urlopen(node.monitor_url + "/jsz", timeout=2) as r:
                        return json.loads(r.read())
                except OSError:
                    if name is not None:
                        raise
        raise RuntimeError("no NATS node answers")

    def varz(self, name: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.nodes[name].monitor_url + "/varz", timeout=2) as r:
            return json.loads(r.read())

    def meta_leader(self) -> str | None:
        if len(self.nodes) == 1:
            return next(iter(self.nodes))
        return (self.jsz().get("meta_cluster") or {}).get("leader")

    def wait_for_meta_leader(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                leader = self.meta_leader()
            except (OSError, RuntimeError):
                leader = None
            if leader:
                return leader
            time.sleep(0.2)
        raise AssertionError("the NATS cluster elected no meta leader")

    def stream_info(self, stream: str, token: str) -> Any:
        async def go() -> Any:
            import nats

            nc = await nats.connect(self.url.split(","), token=token, connect_timeout=2)
            try:
                return await nc.jetstream(timeout=5).stream_info(stream)
            finally:
                await nc.close()

        return asyncio.run(go())


class Deployment:
    def __init__(
        self,
        tmp: Path,
        *,
        nats_nodes: int = 1,
        database: str = "sqlite",
        sync_interval: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.token = secrets.token_urlsafe(16)
        self.nats = NatsCluster(tmp, nats_nodes, self.token, sync_interval)
        self.database = database
        self.database_url = ""
        self.extra_env = env or {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.servers: list[str] = []
        self.api_token = ""
        self.admin_password = ""
        self._n = 0

    # -- engines ---------------------------------------------------------------------

    def start(self) -> Deployment:
        from rota.control.certs import init_certs

        init_certs(self.data_dir / "tls", ["localhost"])
        # One secret key for every web server: a session made on one is good on all.
        (self.data_dir / "secret_key").write_text(secrets.token_urlsafe(32))
        self.nats.start()
        if self.database == "postgres":
            self.database_url = create_postgres_database()
        else:
            self.database_url = f"sqlite:///{self.data_dir / 'rota.sqlite3'}"
        self.rota("migrate")
        out = self._rota("tokens", "create", "admin", "--create-admin")
        self.api_token = out.stdout.strip()
        self.admin_password = out.stderr.rsplit(" ", 1)[-1].strip()
        return self

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.nats.stop()
        if self.database == "postgres" and self.database_url:
            drop_postgres_database(self.database_url)

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- rota processes --------------------------------------------------------------

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ROTA_", "DJANGO_"))}
        return {
            **base,
            "PYTHONPATH": str(ROOT),
            "ROTA_DATA_DIR": str(self.data_dir),
            "ROTA_NATS_URL": self.nats.url,
            "ROTA_NATS_TOKEN": self.token,
            "ROTA_DATABASE_URL": self.database_url,
            "ROTA_TLS_DIR": str(self.data_dir / "tls"),
            "ROTA_GRPC_HOST": "127.0.0.1",
            "ROTA_GRPC_PORT": "0",
            **self.extra_env,
        }

    def rota(self, *argv: str) -> str:
        return self._rota(*argv).stdout

    def _rota(self, *argv: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [sys.executable, "-m", "rota", *argv],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise AssertionError(f"rota {' '.join(argv)} failed: {out.stderr}")
        return out

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rota", *argv],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.tmp,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def add_server(self) -> str:
        port = free_port()
        self.spawn(f"server-{port}", ["server", "--host", "127.0.0.1", "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        self.servers.append(url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"rota server at {url} did not become healthy")

    def add_worker(
        self,
        node: str,
        *,
        roles: str = "execute",
        capacity: int = 4,
        tags: str = "default",
        name: str = "",
    ) -> str:
        self._n += 1
        name = name or f"worker-{node}-{self._n}"
        self.spawn(
            name,
            [
                "worker",
                "--node-id",
                node,
                "--roles",
                roles,
                "--capacity",
                str(capacity),
                "--tags",
                tags,
            ],
        )
        return name

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def client(self, index: int = 0) -> httpx.Client:
        return httpx.Client(
            base_url=self.servers[index],
            headers={"Authorization": f"Bearer {self.api_token}"},
            timeout=30,
        )

    def pid_of(self, name: str) -> int:
        return self.procs[name].pid

    def name_of_pid(self, pid: int) -> str | None:
        return next((n for n, p in self.procs.items() if p.pid == pid), None)
