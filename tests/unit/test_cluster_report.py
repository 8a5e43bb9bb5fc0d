"""find_problems judges a cluster report: fed reports, no network."""

from __future__ import annotations

from rota.bus.cluster import PROBLEMS, ClusterReport, Node, Peer, StreamStatus, find_problems


def healthy() -> ClusterReport:
    nodes = [Node("n0", meta_leader=True, current=True), Node("n1", current=True), Node("n2")]
    stream = StreamStatus(
        stream="ROTA_WORK",
        kind="stream",
        resource="ROTA_WORK",
        replicas=3,
        leader="n0",
        followers=(Peer("n1", current=True), Peer("n2", current=True)),
    )
    return ClusterReport(
        cluster="rota", meta_leader="n0", meta_known=True, meta_size=3, nodes=nodes,
        streams=[stream],
    )  # fmt: skip


def codes(report: ClusterReport, **kw) -> list[str]:
    return [p.code for p in find_problems(report, **kw)]


def test_a_healthy_cluster_has_no_problems():
    assert codes(healthy()) == []
    assert codes(healthy(), want_replicas=3) == []


def test_no_meta_leader_from_monitoring_or_from_jetstream():
    r = healthy()
    r.meta_leader = ""
    assert codes(r) == ["no_meta_leader"]
    r = healthy()
    r.jetstream_available = False
    assert codes(r) == ["no_meta_leader"]


def test_offline_node_and_its_replica():
    r = healthy()
    r.nodes[2] = Node("n2", offline=True)
    r.streams[0] = StreamStatus(
        stream="KV_rota_runs", kind="kv", resource="rota_runs", replicas=3, leader="n0",
        followers=(Peer("n1", current=True), Peer("n2", current=False, offline=True)),
    )  # fmt: skip
    problems = find_problems(r)
    assert [p.code for p in problems] == ["node_offline", "replica_offline"]
    assert problems[1].what == "KV bucket rota_runs: its replica on n2 is offline"
    assert "start node n2" in problems[1].hint


def test_behind_missing_and_too_few_nodes():
    r = healthy()
    r.nodes = r.nodes[:2]
    r.meta_size = 2
    r.streams = [
        StreamStatus(
            stream="OBJ_rota_logs",
            kind="objects",
            resource="rota_logs",
            replicas=3,
            leader="n0",
            followers=(Peer("n1", current=False, lag=7),),
        ),  # fmt: skip
        StreamStatus(stream="ROTA_DLQ", kind="stream", resource="ROTA_DLQ", exists=False),
        StreamStatus(stream="ROTA_LOGS", kind="stream", resource="ROTA_LOGS", replicas=1),
    ]
    problems = find_problems(r, want_replicas=3)
    assert [p.code for p in problems] == [
        "replicas_missing",
        "replica_behind",
        "too_few_nodes",
        "missing",
        "no_leader",
        "replicas_differ",
    ]
    assert problems[1].what == "object store rota_logs: its replica on n1 is behind (lag 7)"
    assert (
        problems[2].what == "object store rota_logs wants 3 replicas but the cluster has 2 node(s)"
    )


def test_every_problem_text_formats_with_its_params():
    assert set(PROBLEMS) >= {"no_meta_leader", "replica_behind", "missing"}


def test_the_ops_page_translates_every_problem_from_the_same_english():
    from django.utils import translation

    from rota.bus.cluster import KINDS
    from rota.ops.nats import KIND_TEXT, PROBLEM_TEXT

    assert set(PROBLEM_TEXT) == set(PROBLEMS) and set(KIND_TEXT) == set(KINDS)
    with translation.override("en"):
        for code, (what, hint) in PROBLEMS.items():
            assert (str(PROBLEM_TEXT[code][0]), str(PROBLEM_TEXT[code][1])) == (what, hint)
        assert {k: str(v) for k, v in KIND_TEXT.items()} == KINDS
