"""Django system checks for rota's settings. Ids are stable: rota.E001 ...

Run by ``manage.py check``, ``rota doctor`` and at start-up of every rota process.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, Warning, register

from rota.conf import SettingsError, reload_settings


@register(Tags.compatibility, deploy=False)
def check_rota_settings(app_configs: Any = None, **kwargs: Any) -> list:
    try:
        s = reload_settings()
    except SettingsError as exc:
        return [
            Error(
                f"rota setting {exc.key} is invalid: {exc}",
                hint="fix the value in settings.ROTA or the ROTA_* environment variable",
                id="rota.E001",
            )
        ]
    found: list = []
    bad_urls = [
        u for u in s.nats_servers if not u.startswith(("nats://", "tls://", "ws://", "wss://"))
    ]
    if bad_urls or not s.nats_servers:
        found.append(
            Error(
                f"ROTA_NATS_URL {s.nats_url!r} is not a NATS URL or a comma-separated list of them",
                hint="use nats://host:4222 (or tls:// for TLS); a cluster: nats://a:4222,nats://b:4222",
                id="rota.E002",
            )
        )
    if not s.node_id:
        found.append(
            Error("ROTA_NODE_ID is empty", hint="set it to the host or pod name", id="rota.E003")
        )
    if not 0 <= s.grpc_port < 65536:
        found.append(
            Error(
                f"ROTA_GRPC_PORT {s.grpc_port} is out of range",
                hint="use 1-65535, or 0 for any free port",
                id="rota.E004",
            )
        )
    if s.worker_capacity < 1:
        found.append(
            Error("ROTA_WORKER_CAPACITY must be at least 1", hint="e.g. 16", id="rota.E005")
        )
    if s.nats_replicas not in (0, 1, 3, 5):
        found.append(
            Warning(
                f"ROTA_NATS_REPLICAS={s.nats_replicas}: JetStream clusters use 1, 3 or 5",
                hint="0 (the default) takes them from the cluster; 3 is the usual choice",
                id="rota.W001",
            )
        )
    if s.database_url and not s.database_url.startswith(
        ("sqlite:", "postgres:", "postgresql:", "pgsql:")
    ):
        found.append(
            Error(
                f"ROTA_DATABASE_URL {s.database_url!r} is neither SQLite nor PostgreSQL",
                hint="use sqlite:///path/to/rota.sqlite3 or postgres://user:pass@host/db",
                id="rota.E006",
            )
        )
    for label, path in (
        ("TLS certificate", s.tls_cert_path),
        ("TLS key", s.tls_key_path),
        ("TLS CA", s.tls_ca_path),
    ):
        if (s.tls_cert or s.tls_key or s.tls_ca) and not path.exists():
            found.append(
                Warning(
                    f"{label} {path} does not exist",
                    hint="run `rota certs init --dir DIR` or point ROTA_TLS_DIR at your certificates",
                    id="rota.W002",
                )
            )
    from django.conf import settings as django_settings

    if str(getattr(django_settings, "SECRET_KEY", "")).startswith("rota-ephemeral-"):
        found.append(
            Warning(
                "no secret key: this process made one up, so its sessions and CSRF tokens "
                "are good on no other web server and not after a restart",
                hint="set ROTA_SECRET_KEY (or ROTA_SECRET_KEY_FILE), the same on every "
                "`rota server`; `rota up` writes one to the data dir",
                id="rota.W003",
            )
        )
    return found
