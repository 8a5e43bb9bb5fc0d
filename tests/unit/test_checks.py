"""rota's Django system checks (rota.E001..E006, rota.W001..W003).

No database is needed: the checks only read settings.
"""

from __future__ import annotations

import dataclasses

import pytest
from django.conf import settings as django_settings
from django.core import checks as django_checks
from django.test import override_settings

from rota.checks import check_rota_settings
from rota.conf import ENV_PREFIX, RotaSettings, get_settings, reload_settings

GOOD = {
    "nats_url": "nats://127.0.0.1:4222",
    "grpc_port": 50051,
    "node_id": "node-a",
    "database_url": "sqlite:///tmp/rota.sqlite3",
    "nats_replicas": 3,
    "worker_capacity": 8,
}


@pytest.fixture(autouse=True)
def clean_rota_env(monkeypatch):
    """Only settings.ROTA counts: drop ROTA_<setting> variables of the test process."""
    for f in dataclasses.fields(RotaSettings):
        monkeypatch.delenv(ENV_PREFIX + f.name.upper(), raising=False)
        monkeypatch.delenv(ENV_PREFIX + f.name.upper() + "_FILE", raising=False)
    yield
    monkeypatch.undo()
    reload_settings()


def ids(messages) -> list[str]:
    return sorted(m.id for m in messages)


def run_with(rota: dict) -> list:
    with override_settings(ROTA=rota):
        return check_rota_settings()


def test_good_settings_give_no_messages():
    assert run_with(GOOD) == []


def test_empty_rota_dict_gives_no_errors():
    messages = run_with({})
    assert [m for m in messages if m.is_serious()] == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:4222", "127.0.0.1:4222", "", "nats:/x"])
def test_bad_nats_url_is_e002(url):
    messages = run_with({**GOOD, "nats_url": url})
    assert ids(messages) == ["rota.E002"]
    assert messages[0].level == django_checks.ERROR


@pytest.mark.parametrize(
    "url",
    [
        "nats://a:4222",
        "tls://a:4222",
        "ws://a:8080",
        "wss://a:443",
        "nats://a:4222,nats://b:4222, nats://c:4222",
    ],
)
def test_nats_url_schemes_accepted(url):
    assert run_with({**GOOD, "nats_url": url}) == []


def test_a_cluster_list_with_a_bad_url_is_e002():
    assert ids(run_with({**GOOD, "nats_url": "nats://a:4222,b:4222"})) == ["rota.E002"]


def test_a_made_up_secret_key_is_w003():
    with override_settings(SECRET_KEY="rota-ephemeral-abc"):
        assert ids(run_with(GOOD)) == ["rota.W003"]


def test_empty_node_id_is_e003():
    assert ids(run_with({**GOOD, "node_id": ""})) == ["rota.E003"]


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_bad_grpc_port_is_e004(port):
    assert ids(run_with({**GOOD, "grpc_port": port})) == ["rota.E004"]


@pytest.mark.parametrize("port", [0, 1, 65535])  # 0: any free port
def test_grpc_port_bounds_accepted(port):
    assert run_with({**GOOD, "grpc_port": port}) == []


def test_zero_worker_capacity_is_e005():
    assert ids(run_with({**GOOD, "worker_capacity": 0})) == ["rota.E005"]


@pytest.mark.parametrize("url", ["mysql://u:p@db/rota", "oracle://db", "rota.sqlite3"])
def test_non_sqlite_non_postgres_database_is_e006(url):
    assert ids(run_with({**GOOD, "database_url": url})) == ["rota.E006"]


@pytest.mark.parametrize(
    "url",
    ["postgres://u:p@db/rota", "postgresql://db/rota", "pgsql://db/rota", "sqlite:///x.db", ""],
)
def test_sqlite_and_postgres_databases_accepted(url):
    assert run_with({**GOOD, "database_url": url}) == []


@pytest.mark.parametrize("replicas", [2, 4, 7])
def test_odd_replica_counts_warn_w001(replicas):
    messages = run_with({**GOOD, "nats_replicas": replicas})
    assert ids(messages) == ["rota.W001"]
    assert messages[0].level == django_checks.WARNING
    assert not messages[0].is_serious()


def test_missing_tls_file_warns_w002(tmp_path):
    (tmp_path / "tls.key").write_text("key")
    (tmp_path / "ca.crt").write_text("ca")
    messages = run_with(
        {**GOOD, "tls_dir": str(tmp_path), "tls_cert": str(tmp_path / "missing.crt")}
    )
    assert ids(messages) == ["rota.W002"]
    assert "missing.crt" in messages[0].msg


def test_present_tls_files_give_no_warning(tmp_path):
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_text(name)
    assert run_with({**GOOD, "tls_dir": str(tmp_path), "tls_ca": str(tmp_path / "ca.crt")}) == []


def test_tls_dir_alone_is_not_checked(tmp_path):
    # Without an explicit tls_cert/key/ca, TLS is off; absent files are fine.
    assert run_with({**GOOD, "tls_dir": str(tmp_path / "nothing-here")}) == []


def test_several_problems_reported_together():
    messages = run_with(
        {**GOOD, "nats_url": "http://x", "grpc_port": -1, "database_url": "mysql://db"}
    )
    assert ids(messages) == ["rota.E002", "rota.E004", "rota.E006"]


# --- E001: settings that cannot be read -----------------------------------------


def test_unknown_key_is_e001(monkeypatch):
    # Set settings.ROTA without override_settings, so no setting_changed signal fires
    # (the test below covers override_settings, which fires the signal).
    monkeypatch.setattr(django_settings, "ROTA", {**GOOD, "bogus_key": 1})
    messages = check_rota_settings()
    assert ids(messages) == ["rota.E001"]
    assert "bogus_key" in messages[0].msg


def test_bad_int_from_env_is_e001(monkeypatch):
    monkeypatch.setattr(django_settings, "ROTA", GOOD)
    monkeypatch.setenv("ROTA_GRPC_PORT", "not-a-port")
    messages = check_rota_settings()
    assert ids(messages) == ["rota.E001"]
    assert "ROTA_GRPC_PORT" in messages[0].msg


def test_env_overrides_rota_dict_in_checks(monkeypatch):
    monkeypatch.setenv("ROTA_NATS_URL", "http://from-env")
    assert ids(run_with(GOOD)) == ["rota.E002"]


def test_unknown_key_is_e001_under_override_settings():
    with override_settings(ROTA={**GOOD, "bogus_key": 1}):
        messages = check_rota_settings()
    assert ids(messages) == ["rota.E001"]


# --- integration with Django ------------------------------------------------------


def test_check_is_registered_with_django():
    assert check_rota_settings in django_checks.registry.registry.get_checks()
    with override_settings(ROTA={**GOOD, "grpc_port": -1}):
        messages = django_checks.run_checks(tags=[django_checks.Tags.compatibility])
    assert "rota.E004" in ids(messages)


def test_setting_changed_hook_reloads_settings():
    baseline = reload_settings()
    with override_settings(ROTA={**GOOD, "grpc_port": 4321, "api_token": "hooked"}):
        # No explicit reload: the app's setting_changed hook must have done it.
        assert get_settings().grpc_port == 4321
        assert get_settings().api_token == "hooked"
    restored = get_settings()
    assert restored.grpc_port == baseline.grpc_port
    assert restored.api_token == baseline.api_token


def test_check_leaves_settings_reloaded():
    with override_settings(ROTA={**GOOD, "worker_capacity": 3}):
        check_rota_settings()
        assert get_settings().worker_capacity == 3
