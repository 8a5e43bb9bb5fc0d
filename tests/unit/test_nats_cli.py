"""`rota nats` pieces that need no server: seed addresses, the node directory's
secrets, the systemd unit."""

from __future__ import annotations

import json

import pytest

from rota.cli.main import main
from rota.cli.nats import seed_route


def test_seed_addresses_become_route_urls():
    assert seed_route("pc-a") == "nats-route://pc-a:6222"
    assert seed_route("10.0.0.5:7000") == "nats-route://10.0.0.5:7000"
    assert seed_route("nats-route://x:1") == "nats-route://x:1"


def test_join_without_the_clusters_secrets_says_where_they_are(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROTA_NATS_TOKEN", "")
    monkeypatch.setenv("ROTA_NATS_CLUSTER_PASSWORD", "")
    assert main(["nats", "join", "--dir", str(tmp_path / "n1"), "--seed", "pc-a"]) == 2
    err = capsys.readouterr().err
    assert "a joining node needs the cluster's token" in err and "ROTA_NATS_TOKEN" in err


def test_service_prints_and_installs_a_unit_for_the_node(tmp_path, capsys):
    node = tmp_path / "node"
    node.mkdir()
    (node / "node.json").write_text(json.dumps({"name": "n1", "cluster": "rota"}))
    assert main(["nats", "service", "--dir", str(node), "--user", "rota"]) == 0
    unit = capsys.readouterr().out
    assert "[Service]" in unit and f"nats up --dir {node}" in unit
    assert "User=rota" in unit and "WantedBy=multi-user.target" in unit
    units = tmp_path / "units"
    units.mkdir()
    assert main(["nats", "service", "--dir", str(node), "--install", "--unit-dir", str(units)]) == 0
    assert (units / "rota-nats.service").read_text().startswith("[Unit]")


def test_service_without_a_node_says_to_start_one(tmp_path, capsys):
    assert main(["nats", "service", "--dir", str(tmp_path)]) == 2
    assert "rota nats up" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["down", "leave"])
def test_nothing_running_in_the_directory(tmp_path, capsys, action):
    code = main(["nats", action, "--dir", str(tmp_path)])
    out = capsys.readouterr()
    assert "no NATS node runs from" in out.out + out.err
    assert code == (0 if action == "down" else 2)
