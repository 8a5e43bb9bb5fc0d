"""rota's one typed settings object.

Values come, in order of precedence, from ``ROTA_*`` environment variables, then
from Django's ``settings.ROTA`` dict, then from the defaults below. A value may
also be read from a file: ``ROTA_NATS_TOKEN_FILE=/run/secrets/nats`` sets
``nats_token`` to that file's content (the way secrets are mounted in Kubernetes).

``get_settings()`` is what the rest of rota calls; it is cached and rebuilt by
``reload_settings()`` (tests, and Django's ``setting_changed`` signal).
System checks in ``rota.checks`` validate the result at start-up.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

ENV_PREFIX = "ROTA_"


@dataclass(frozen=True)
class RotaSettings:
    #: Where NATS is: one URL, or the URLs of a cluster's nodes separated by commas
    #: (a client connects to any and moves to another when its node goes away).
    #: ``rota up`` starts an embedded server and writes its URL here.
    nats_url: str = "nats://127.0.0.1:4222"
    #: Auth token for NATS (the embedded server is started with one).
    nats_token: str = ""
    #: Stable name of this machine/pod; worker ids are derived from it per process.
    node_id: str = field(default_factory=socket.gethostname)
    #: Local state: the embedded NATS store, the SQLite file, certificates, tokens.
    data_dir: Path = Path(".rota")
    #: Database URL (``sqlite:///path`` or ``postgres://...``); used by rota.standalone.
    database_url: str = ""
    #: gRPC control plane of a worker: the port it listens on (0: any free port),
    #: the address it binds, and the ``host:port`` others reach it at (default:
    #: this host's name, or 127.0.0.1 when bound to loopback).
    grpc_port: int = 50051
    grpc_host: str = "0.0.0.0"
    grpc_advertise: str = ""
    tls_dir: Path = Path("/etc/rota/tls")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    #: Base URL of the HTTP API, for the CLI.
    api_url: str = "http://127.0.0.1:8000"
    #: API token for the CLI (``Authorization: Bearer``).
    api_token: str = ""
    #: Replicas of every stream, bucket and object store: 0 (the default) takes
    #: them from the cluster (3 when it has three or more nodes, else 1, never
    #: fewer than a resource already has); 1, 3 or 5 sets them.
    nats_replicas: int = 0
    #: Monitoring addresses of NATS nodes (``http://127.0.0.1:8222``, comma-separated)
    #: that ``rota doctor`` and the ops cluster page read the meta group from.
    nats_monitor_urls: list[str] = field(default_factory=list)
    #: How long a terminal run's live snapshot stays in KV (SQL keeps the history).
    snapshot_max_age_seconds: float = 7 * 24 * 3600
    #: A worker that gets SIGTERM lets its runs finish for this long, then hands them back.
    shutdown_grace_seconds: float = 30.0
    #: Concurrent runs per worker process.
    worker_capacity: int = 16
    #: Warm Python child processes per worker for the ``python`` executor (0: cores).
    python_pool_size: int = 0
    #: The host project's manage.py for ``django`` jobs (default: the manage.py
    #: the worker was started with, ``python manage.py rota_worker``).
    manage_py: Path | None = None
    #: Modules whose Pyoco flows and tasks the ``pyoco`` executor knows, besides
    #: the ``rota.flows`` entry points (``ROTA_FLOW_MODULES``: comma-separated).
    flow_modules: list[str] = field(default_factory=list)
    #: Server-Sent Event streams (watches, log tails) one token or session may
    #: hold open at once in one web process; one more is answered 429.
    sse_streams_per_token: int = 20
    #: NATS consumers at which /health reports pressure (degraded at the
    #: account's own limit when it has one, else at this).
    nats_consumers_limit: int = 1000
    #: Warm child processes kept for the ``pyoco`` executor.
    pyoco_pool_size: int = 2
    #: After a cancel, how long a flow gets to stop through ``Engine.cancel``
    #: before its process is killed.
    pyoco_cancel_grace_seconds: float = 5.0
    #: Largest wheel the registry accepts (bytes); a larger upload is a 413.
    wheel_max_bytes: int = 100 * 1024 * 1024
    #: How often a worker checks the wheel registry (it also syncs at once when
    #: a wheel is uploaded or deleted); the first retry after a failed install.
    wheel_sync_seconds: float = 10.0
    #: Where workers keep their synced wheels and environments (default:
    #: ``<data_dir>/wheels``); each worker uses a directory of its own below it.
    wheels_dir: Path | None = None
    #: How long one ``pip install`` of a worker's wheel set may take.
    wheel_install_timeout_seconds: float = 300.0

    #: The Celery app ``celery`` jobs are sent through, as ``module:attribute``
    #: (``proj.celery:app``); without it, an app made from the two URLs below.
    celery_app: str = ""
    celery_broker_url: str = ""
    celery_result_backend: str = ""
    #: A celery run whose task reports nothing (still PENDING: no Celery worker
    #: took it, there is no result backend, it was lost) this long after it was
    #: sent is revoked and ends FAILED (a job overrides it: ``start_timeout=``).
    celery_start_timeout_seconds: float = 3600.0
    #: A celery run of a job without a timeout is revoked and ends TIMED_OUT
    #: after this long, so no run stays RUNNING forever.
    celery_max_runtime_seconds: float = 86400.0
    #: How often the one result-backend poller of a worker reads its tasks' states.
    celery_poll_seconds: float = 0.25

    @property
    def wheels_path(self) -> Path:
        return self.wheels_dir or self.data_dir / "wheels"

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` as a list: the cluster's seed URLs, in the order given."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @property
    def tls_cert_path(self) -> Path:
        return self.tls_cert or self.tls_dir / "tls.crt"

    @property
    def tls_key_path(self) -> Path:
        return self.tls_key or self.tls_dir / "tls.key"

    @property
    def tls_ca_path(self) -> Path:
        return self.tls_ca or self.tls_dir / "ca.crt"


class SettingsError(ValueError):
    """A ROTA setting has a value rota cannot use."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _coerce(name: str, raw: Any, type_: Any) -> Any:
    if raw is None:
        return None
    kind = type_ if isinstance(type_, type) else None
    text_type = str(type_)
    try:
        if kind is bool or text_type == "bool":
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in {"1", "true", "yes", "on"}
        if kind is int or text_type == "int":
            return int(raw)
        if kind is float or text_type == "float":
            return float(raw)
        if text_type.startswith("list"):
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return [str(i).strip() for i in items if str(i).strip()]
        if "Path" in text_type:
            return Path(raw) if raw not in ("", None) else None
    except (TypeError, ValueError) as exc:
        raise SettingsError(ENV_PREFIX + name.upper(), f"cannot read {raw!r}: {exc}") from None
    return str(raw)


def build_settings(
    django_dict: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> RotaSettings:
    """Merge defaults, ``settings.ROTA`` and ``ROTA_*`` variables into one object."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(RotaSettings)}
    for key, value in (django_dict or {}).items():
        name = key.lower()
        if name not in fields:
            raise SettingsError(
                f"ROTA[{key!r}]", f"unknown setting; known: {', '.join(sorted(fields))}"
            )
        values[name] = _coerce(name, value, fields[name].type)
    for name, f in fields.items():
        env_key = ENV_PREFIX + name.upper()
        if env_key in environ:
            values[name] = _coerce(name, environ[env_key], f.type)
        elif env_key + "_FILE" in environ:
            path = Path(environ[env_key + "_FILE"])
            try:
                values[name] = _coerce(name, path.read_text().strip(), f.type)
            except OSError as exc:
                raise SettingsError(env_key + "_FILE", f"cannot read {path}: {exc}") from None
    # A missing Path value falls back to the default rather than None.
    for name in ("data_dir", "tls_dir"):
        if values.get(name, ...) is None:
            values.pop(name)
    return RotaSettings(**values)


@lru_cache(maxsize=1)
def get_settings() -> RotaSettings:
    from django.conf import settings as django_settings

    django_dict = getattr(django_settings, "ROTA", None) if django_settings.configured else None
    return build_settings(django_dict)


def reload_settings() -> RotaSettings:
    get_settings.cache_clear()
    return get_settings()
