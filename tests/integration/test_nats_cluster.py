"""Three embedded nats-servers clustered on loopback: JetStream elects a meta
leader and places a stream on all three nodes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from rota.bus.server import EmbeddedNats, NatsServerError, free_port


def wait_for_meta_leader(nodes: list[EmbeddedNats], timeout: float = 60.0) -> str:
    """The meta leader's name once every node names the same one and sees all peers."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            metas = [n.monitor("jsz").get("meta_cluster") or {} for n in nodes]
        except OSError as exc:
            last = exc
        else:
            last = metas
            leaders = {m.get("leader") for m in metas}
            agreed = len(leaders) == 1 and None not in leaders and "" not in leaders
            if agreed and all(m.get("cluster_size") == len(nodes) for m in metas):
                return leaders.pop()
        time.sleep(0.2)
    raise AssertionError(f"no meta leader within {timeout}s: {last!r}")


@pytest.fixture
def cluster(tmp_path: Path):
    cluster_ports = [free_port() for _ in range(3)]
    routes = [f"nats-route://127.0.0.1:{p}" for p in cluster_ports]
    nodes = [
        EmbeddedNats(
            tmp_path / f"n{i}",
            token="cluster-test-token",
            log_file=tmp_path / f"n{i}.log",
            server_name=f"n{i}",
            cluster_name="rota-test",
            cluster_port=cluster_ports[i],
            routes=routes,
            cluster_password="route secret/with:odd@chars",
            http_port=0,
        )
        for i in range(3)
    ]
    try:
        for n in nodes:
            n.start()
    except NatsServerError as exc:
        for n in nodes:
            n.stop()
        pytest.skip(f"nats-server unavailable: {exc}")
    yield nodes
    for n in nodes:
        n.stop()


def test_single_node_configuration_is_unchanged(tmp_path: Path):
    node = EmbeddedNats(tmp_path, port=4222, token="t", sync_interval="always")
    assert node.config_text() == (
        "host: 127.0.0.1\nport: 4222\nmax_payload: 8MB\njetstream {\n"
        f'  store_dir: "{tmp_path.resolve()}"\n  sync_interval: always\n}}\n'
        'authorization {\n  token: "t"\n}\n'
    )
    assert not node.cluster_url and not node.monitor_url


def test_routes_off_loopback_need_a_password(tmp_path: Path):
    with pytest.raises(NatsServerError, match="password"):
        EmbeddedNats(tmp_path, server_name="a", cluster_name="c", cluster_host="0.0.0.0")
    with pytest.raises(NatsServerError, match="server name"):
        EmbeddedNats(tmp_path, cluster_name="c")


async def test_three_nodes_elect_a_meta_leader_and_hold_an_r3_stream(cluster):
    leader = await asyncio.to_thread(wait_for_meta_leader, cluster)
    assert leader in {"n0", "n1", "n2"}
    nc = await nats.connect(
        servers=[n.url for n in cluster], token="cluster-test-token", connect_timeout=5
    )
    try:
        js = nc.jetstream(timeout=10)
        await js.add_stream(StreamConfig(name="R3TEST", subjects=["r3.>"], num_replicas=3))
        ack = await js.publish("r3.a", b"hello")
        assert ack.seq == 1

        async def placed() -> object:
            info = await js.stream_info("R3TEST")
            c = info.cluster
            full = c and c.leader and c.replicas and len(c.replicas) == 2
            return c if full and all(r.current for r in c.replicas) else None

        deadline = time.monotonic() + 30
        c = None
        while c is None and time.monotonic() < deadline:
            c = await placed()
            await asyncio.sleep(0.2)
        assert c is not None, "the R3 stream did not get a leader and two current replicas"
        assert {c.leader, *(r.name for r in c.replicas)} == {"n0", "n1", "n2"}
        assert (await js.stream_info("R3TEST")).state.messages == 1
    finally:
        await nc.close()
