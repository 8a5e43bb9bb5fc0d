"""rota.conf: defaults < settings.ROTA < ROTA_* environment (and *_FILE)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rota.conf import (
    RotaSettings,
    SettingsError,
    _coerce,
    build_settings,
    get_settings,
    reload_settings,
)


def build(django_dict=None, **env):
    # Never read the real os.environ: the test process has ROTA_* variables of its own.
    return build_settings(django_dict or {}, env)


def test_defaults():
    s = build()
    assert s == RotaSettings()
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert s.nats_token == ""
    assert s.grpc_port == 50051
    assert s.data_dir == Path(".rota")
    assert s.tls_dir == Path("/etc/rota/tls")
    assert s.tls_cert is None and s.tls_key is None and s.tls_ca is None
    assert s.node_id == socket.gethostname()
    assert s.nats_replicas == 0  # from the cluster
    assert s.worker_capacity == 16


def test_none_django_dict_and_empty_env_give_defaults():
    assert build_settings(None, {}) == RotaSettings()


def test_django_dict_values_are_used_and_coerced():
    s = build(
        {
            "nats_url": "nats://nats.internal:4222",
            "grpc_port": "6000",
            "data_dir": "/var/lib/rota",
            "shutdown_grace_seconds": "2.5",
            "nats_replicas": 3,
        }
    )
    assert s.nats_url == "nats://nats.internal:4222"
    assert s.grpc_port == 6000 and isinstance(s.grpc_port, int)
    assert s.data_dir == Path("/var/lib/rota") and isinstance(s.data_dir, Path)
    assert s.shutdown_grace_seconds == 2.5 and isinstance(s.shutdown_grace_seconds, float)
    assert s.nats_replicas == 3


def test_django_dict_keys_are_case_insensitive():
    assert build({"NATS_TOKEN": "t0k"}).nats_token == "t0k"


def test_env_values_are_used_and_coerced():
    s = build(ROTA_GRPC_PORT="7001", ROTA_WORKER_CAPACITY="4", ROTA_TLS_CA="/ca.pem")
    assert s.grpc_port == 7001
    assert s.worker_capacity == 4
    assert s.tls_ca == Path("/ca.pem")


def test_env_overrides_django_dict():
    s = build(
        {"nats_url": "nats://from-dict:4222", "grpc_port": 1111},
        ROTA_NATS_URL="tls://from-env:4222",
    )
    assert s.nats_url == "tls://from-env:4222"
    assert s.grpc_port == 1111  # not overridden: the dict value stays


def test_unrelated_rota_env_is_ignored():
    s = build(ROTA_SECRET_KEY="x", ROTA_DEBUG="1", ROTA_NOT_A_SETTING="y")
    assert s == RotaSettings()


def test_file_variable_reads_a_secret(tmp_path):
    secret = tmp_path / "nats-token"
    secret.write_text("s3cr3t-value\n")
    s = build({"nats_token": "from-dict"}, ROTA_NATS_TOKEN_FILE=str(secret))
    assert s.nats_token == "s3cr3t-value"


def test_file_variable_is_coerced(tmp_path):
    port = tmp_path / "port"
    port.write_text(" 8123 \n")
    assert build(ROTA_GRPC_PORT_FILE=str(port)).grpc_port == 8123


def test_direct_env_variable_beats_file_variable(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("from-file")
    s = build(ROTA_API_TOKEN="direct", ROTA_API_TOKEN_FILE=str(secret))
    assert s.api_token == "direct"


def test_missing_secret_file_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError) as info:
        build(ROTA_NATS_TOKEN_FILE=str(tmp_path / "absent"))
    assert info.value.key == "ROTA_NATS_TOKEN_FILE"
    assert "absent" in str(info.value)


def test_bad_int_in_env_names_the_variable():
    with pytest.raises(SettingsError) as info:
        build(ROTA_GRPC_PORT="fifty")
    assert info.value.key == "ROTA_GRPC_PORT"
    assert str(info.value).startswith("ROTA_GRPC_PORT:")
    assert "fifty" in str(info.value)


def test_bad_int_in_dict_names_the_setting():
    with pytest.raises(SettingsError) as info:
        build({"grpc_port": "port"})
    assert info.value.key == "ROTA_GRPC_PORT"


def test_bad_float_is_a_settings_error():
    with pytest.raises(SettingsError) as info:
        build(ROTA_SHUTDOWN_GRACE_SECONDS="soon")
    assert info.value.key == "ROTA_SHUTDOWN_GRACE_SECONDS"


def test_settings_error_is_a_value_error():
    with pytest.raises(ValueError):
        build(ROTA_NATS_REPLICAS="three")


def test_unknown_key_in_dict_is_an_error():
    with pytest.raises(SettingsError) as info:
        build({"nats_urll": "nats://x:4222"})
    assert "nats_urll" in info.value.key
    # The message lists what is known, to help with the typo.
    assert "nats_url" in str(info.value)


def test_tls_paths_default_under_tls_dir():
    s = build(ROTA_TLS_DIR="/srv/certs")
    assert s.tls_cert_path == Path("/srv/certs/tls.crt")
    assert s.tls_key_path == Path("/srv/certs/tls.key")
    assert s.tls_ca_path == Path("/srv/certs/ca.crt")
    assert RotaSettings().tls_cert_path == Path("/etc/rota/tls/tls.crt")


def test_explicit_tls_paths_win_over_tls_dir():
    s = build({"tls_cert": "/a/cert.pem"}, ROTA_TLS_DIR="/srv/certs")
    assert s.tls_cert_path == Path("/a/cert.pem")
    assert s.tls_key_path == Path("/srv/certs/tls.key")


def test_empty_path_values_fall_back():
    s = build(ROTA_DATA_DIR="", ROTA_TLS_DIR="", ROTA_TLS_CERT="")
    assert s.data_dir == Path(".rota")
    assert s.tls_dir == Path("/etc/rota/tls")
    assert s.tls_cert is None
    assert s.tls_cert_path == Path("/etc/rota/tls/tls.crt")


def test_none_in_dict_for_a_path_falls_back_to_default():
    assert build({"data_dir": None}).data_dir == Path(".rota")


def test_empty_node_id_from_env_is_kept_empty():
    # Empty is not replaced by the hostname; the system check (rota.E003) reports it.
    assert build(ROTA_NODE_ID="").node_id == ""


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " On "])
@pytest.mark.parametrize("type_", [bool, "bool"])
def test_bool_coercion_true(raw, type_):
    assert _coerce("flag", raw, type_) is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "off", ""])
@pytest.mark.parametrize("type_", [bool, "bool"])
def test_bool_coercion_false(raw, type_):
    assert _coerce("flag", raw, type_) is False


def test_bool_coercion_keeps_real_bools():
    assert _coerce("flag", True, bool) is True
    assert _coerce("flag", False, "bool") is False


def test_coerce_none_stays_none():
    assert _coerce("grpc_port", None, "int") is None


def test_settings_are_frozen():
    s = build()
    with pytest.raises(AttributeError):
        s.grpc_port = 1  # type: ignore[misc]


def test_get_settings_is_cached_until_reload(monkeypatch):
    baseline = reload_settings()
    try:
        monkeypatch.setenv("ROTA_API_URL", "http://changed.example:9000")
        assert get_settings() is baseline
        assert get_settings().api_url == baseline.api_url
        fresh = reload_settings()
        assert fresh.api_url == "http://changed.example:9000"
        assert get_settings() is fresh
    finally:
        monkeypatch.undo()
        reload_settings()
