"""The state of the NATS cluster that holds rota's data, in one report.

``rota nats status``, ``rota nats doctor``, ``rota doctor`` and the ops UI's
cluster page all show :func:`cluster_report`, and judge it with the pure
:func:`find_problems`.

Two sources, because no single one has everything without a system account
(rota's nodes keep token auth, which nats-server cannot combine with accounts;
see :mod:`rota.bus.server`):

- the account's JetStream API, reachable through any node: ``$JS.API.STREAM.LIST``
  gives each stream's configured replicas, its leader and every follower's
  ``current``/``offline``/``lag``. A cluster without a meta leader answers it with
  error 10008, which is how a lost quorum shows even without monitoring.
- the monitoring endpoint ``/jsz`` of the nodes given (loopback only, so usually
  the node on this machine): the meta group's leader, its size and, when read at
  the meta leader, whether each node is current.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.aio.client import Client

from rota.bus import subjects

#: JetStream's error code for "JetStream cluster not available" (no meta leader).
NO_META_LEADER = 10008

#: A follower its leader has not heard from for this long counts as offline. The
#: server's own ``offline`` flag comes only when a node says goodbye or after a
#: long while; a killed node is silent, and raft leaders hear followers every second.
OFFLINE_AFTER_SECONDS = 5.0


def _peer_state(r: dict[str, Any], *, at_leader: bool = True) -> tuple[bool | None, bool]:
    """(current, offline) of a raft peer as its group's leader reports it
    (``active``: nanoseconds since the leader last heard from it)."""
    current = bool(r.get("current"))
    silent = (r.get("active") or 0) / 1e9 > OFFLINE_AFTER_SECONDS
    offline = bool(r.get("offline")) or (at_leader and not current and silent)
    return (current if at_leader else None), offline


@dataclass(frozen=True)
class Peer:
    """One follower of a stream's raft group, or one node of the meta group."""

    name: str
    #: ``None`` when unknown: only a group's leader knows whether followers are current.
    current: bool | None = None
    offline: bool = False
    lag: int = 0


@dataclass(frozen=True)
class StreamStatus:
    stream: str  # the JetStream stream name (``KV_rota_runs``)
    kind: str  # "stream", "kv" or "objects"
    resource: str  # rota's name for it (``rota_runs``)
    exists: bool = True
    replicas: int = 0  # configured
    leader: str = ""
    followers: tuple[Peer, ...] = ()
    messages: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Node:
    name: str
    meta_leader: bool = False
    current: bool | None = None
    offline: bool = False
    lag: int = 0


#: Every problem the report can name: code -> (what, hint), English, with
#: ``{placeholders}`` from the problem's params. The ops UI translates by code.
PROBLEMS: dict[str, tuple[str, str]] = {
    "no_meta_leader": (
        "JetStream has no meta leader: the cluster lost its quorum",
        "start the stopped nodes (`rota nats up --dir ...` on their machines): a cluster "
        "of N nodes needs more than N/2 of them up",
    ),
    "node_offline": (
        "NATS node {node} is offline",
        "start it (`rota nats up` on its machine); while it is down, every replica it holds "
        "is missing",
    ),
    "node_behind": (
        "NATS node {node} is behind the meta leader (lag {lag})",
        "it catches up by itself; if it stays behind, read its log and check the network "
        "between the nodes",
    ),
    "missing": (
        "{kind} {resource} does not exist",
        "start a rota process once (workers and the web server create it), or restore a "
        "backup with `rota nats restore DIR`",
    ),
    "no_leader": (
        "{kind} {resource} has no leader",
        "most of its replicas are down: start the nodes that hold them",
    ),
    "replicas_missing": (
        "{kind} {resource} has {present} of its {replicas} replicas",
        "JetStream places a missing replica on a free node; add one with `rota nats join` "
        "if there is none",
    ),
    "replica_offline": (
        "{kind} {resource}: its replica on {node} is offline",
        "start node {node}; until then the other replicas carry on",
    ),
    "replica_behind": (
        "{kind} {resource}: its replica on {node} is behind (lag {lag})",
        "a busy replica catches up by itself; one that stays behind points at node {node}'s "
        "disk or network",
    ),
    "too_few_nodes": (
        "{kind} {resource} wants {replicas} replicas but the cluster has {nodes} node(s)",
        "add nodes (`rota nats join`) or lower ROTA_NATS_REPLICAS",
    ),
    "replicas_differ": (
        "{kind} {resource} has {replicas} replica(s), rota is set to {want}",
        "`rota nats scale` sets it in place (so does the next start of a rota process), or "
        "set ROTA_NATS_REPLICAS to what the cluster has",
    ),
}

#: Problems that usually pass by themselves: shown as warnings, not failures.
WARNINGS = frozenset({"node_behind", "replica_behind", "replicas_differ"})

#: How a problem names each kind of resource.
KINDS = {"stream": "stream", "kv": "KV bucket", "objects": "object store"}


@dataclass(frozen=True)
class Problem:
    code: str
    params: dict[str, Any]
    what: str
    hint: str
    warning: bool = False


def problem(code: str, **params: Any) -> Problem:
    what, hint = PROBLEMS[code]
    return Problem(code, params, what.format(**params), hint.format(**params), code in WARNINGS)


@dataclass
class ClusterReport:
    #: The cluster's name, "" for a single server.
    cluster: str = ""
    #: The meta leader's name; "" when there is none or nobody could say.
    meta_leader: str = ""
    #: Whether a monitoring endpoint told us about the meta group.
    meta_known: bool = False
    meta_size: int = 0
    #: False when JetStream answered that it has no meta leader.
    jetstream_available: bool = True
    nodes: list[Node] = field(default_factory=list)
    streams: list[StreamStatus] = field(default_factory=list)
    #: Why part of the report is missing (NATS unreachable, monitoring unreachable).
    errors: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def cluster_report(
    nc: Client,
    *,
    monitor_urls: list[str] | tuple[str, ...] = (),
    want_replicas: int | None = None,
    timeout: float = 5.0,
) -> ClusterReport:
    """Read the cluster's state through ``nc`` and the monitoring endpoints given,
    and judge it (``want_replicas``: the replica count rota is set to)."""
    report = ClusterReport()
    info = getattr(nc, "_server_info", None) or {}
    standalone = "cluster" not in info  # a server without a cluster block says none
    server_name = info.get("server_name", "")
    if standalone:
        # One server: no meta group, it decides alone and holds everything.
        report.meta_known, report.meta_leader, report.meta_size = True, server_name, 1
        report.nodes = [Node(name=server_name, meta_leader=True, current=True)]
        monitor_urls = ()
    metas = await asyncio.gather(*(_read_jsz(u, timeout) for u in monitor_urls))
    _apply_meta(report, [m for m in metas if isinstance(m, dict)])
    report.errors += [m for m in metas if isinstance(m, str)]
    try:
        infos = await _stream_infos(nc, timeout)
    except JetStreamUnavailable as exc:
        report.jetstream_available = False
        report.errors.append(str(exc))
        infos = None
    except Exception as exc:  # timeouts, a closed connection: say it, report the rest
        report.errors.append(f"JetStream did not answer: {exc or type(exc).__name__}")
        infos = None
    if infos is not None:
        report.streams = [
            _stream_status(infos.get(s), s, k, r, server_name if standalone else "")
            for s, k, r in _rota_streams()
        ]
        if not report.cluster:
            report.cluster = next(
                (i["cluster"].get("name", "") for i in infos.values() if i.get("cluster")), ""
            )
        if not report.nodes:
            # No monitoring: the nodes are those that hold rota's streams.
            names = sorted({n for s in report.streams for n in _members(s) if n})
            report.nodes = [Node(name=n) for n in names]
    report.problems = find_problems(report, want_replicas=want_replicas)
    return report


def _rota_streams() -> list[tuple[str, str, str]]:
    return subjects.jetstream_streams()


def _members(s: StreamStatus) -> list[str]:
    return [s.leader, *(p.name for p in s.followers)]


class JetStreamUnavailable(Exception):
    pass


async def _stream_infos(nc: Client, timeout: float) -> dict[str, dict[str, Any]]:
    """Every stream's info in the account, by name (paged by the server at 256)."""
    out: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        msg = await nc.request(
            "$JS.API.STREAM.LIST", json.dumps({"offset": offset}).encode(), timeout=timeout
        )
        body = json.loads(msg.data)
        err = body.get("error")
        if err:
            if err.get("err_code") == NO_META_LEADER:
                raise JetStreamUnavailable(
                    "JetStream has no meta leader: " + err.get("description", "")
                )
            raise RuntimeError(err.get("description", str(err)))
        streams = body.get("streams") or []
        for info in streams:
            out[info["config"]["name"]] = info
        offset += len(streams)
        if not streams or offset >= body.get("total", 0):
            return out


def _stream_status(
    info: dict[str, Any] | None, stream: str, kind: str, res: str, server: str
) -> StreamStatus:
    """One stream's status; ``server`` names the single server of an unclustered
    setup, whose stream infos carry no cluster part."""
    if info is None:
        return StreamStatus(stream=stream, kind=kind, resource=res, exists=False)
    cluster = info.get("cluster") or ({"leader": server} if server else {})
    state = info.get("state") or {}
    return StreamStatus(
        stream=stream,
        kind=kind,
        resource=res,
        replicas=int(info["config"].get("num_replicas") or 1),
        leader=cluster.get("leader") or "",
        followers=tuple(
            Peer(r.get("name", ""), *_peer_state(r), lag=int(r.get("lag") or 0))
            for r in cluster.get("replicas") or []
        ),
        messages=int(state.get("messages") or 0),
        bytes=int(state.get("bytes") or 0),
    )


async def _read_jsz(url: str, timeout: float) -> dict[str, Any] | str:
    """A node's ``/jsz`` with its server name added, or why it could not be read."""
    from rota.bus.server import read_monitor

    def read() -> dict[str, Any]:
        jsz = read_monitor(url, "jsz", timeout)
        if not jsz.get("server_name"):
            jsz["server_name"] = read_monitor(url, "varz", timeout).get("server_name", "")
        return jsz

    try:
        return await asyncio.to_thread(read)
    except Exception as exc:
        return f"monitoring endpoint {url} did not answer: {exc}"


def _apply_meta(report: ClusterReport, jszs: list[dict[str, Any]]) -> None:
    """Fill the meta group from the ``/jsz`` answers, preferring the meta leader's
    own (only the leader knows whether the others are current)."""
    if not jszs:
        return
    report.meta_known = True
    metas = [(j.get("server_name", ""), j.get("meta_cluster")) for j in jszs]
    if all(m is None for _, m in metas):
        # A single server (no cluster block): it is the whole "cluster".
        name = metas[0][0]
        report.meta_leader = name
        report.meta_size = 1
        report.nodes = [Node(name=name, meta_leader=True, current=True)]
        return
    views = [(n, m) for n, m in metas if m]
    own, meta = next(((n, m) for n, m in views if m.get("leader") == n), views[0])
    at_leader = meta.get("leader") == own
    report.cluster = meta.get("name", "")
    report.meta_leader = meta.get("leader") or ""
    report.meta_size = int(meta.get("cluster_size") or 0)
    nodes = {own: Node(name=own, meta_leader=own == report.meta_leader, current=True)}
    for r in meta.get("replicas") or []:
        name = r.get("name", "")
        current, offline = _peer_state(r, at_leader=at_leader)
        nodes[name] = Node(
            name=name,
            meta_leader=name == report.meta_leader,
            current=current,
            offline=offline,
            lag=int(r.get("lag") or 0),
        )
    report.nodes = sorted(nodes.values(), key=lambda n: n.name)


def find_problems(report: ClusterReport, *, want_replicas: int | None = None) -> list[Problem]:
    """What is wrong, each with what to do about it, most basic first."""
    out: list[Problem] = []
    if not report.jetstream_available or (report.meta_known and not report.meta_leader):
        out.append(problem("no_meta_leader"))
    for n in report.nodes:
        if n.offline:
            out.append(problem("node_offline", node=n.name))
        elif n.current is False:
            out.append(problem("node_behind", node=n.name, lag=n.lag))
    node_count = max(len(report.nodes), report.meta_size)
    for s in report.streams:
        about = {"kind": KINDS[s.kind], "resource": s.resource}
        if not s.exists:
            out.append(problem("missing", **about))
            continue
        if not s.leader:
            out.append(problem("no_leader", **about))
        present = 1 + len(s.followers)
        if s.leader and s.replicas > present:
            out.append(problem("replicas_missing", present=present, replicas=s.replicas, **about))
        for p in s.followers:
            if p.offline:
                out.append(problem("replica_offline", node=p.name, **about))
            elif not p.current:
                out.append(problem("replica_behind", node=p.name, lag=p.lag, **about))
        if node_count and s.replicas > node_count:
            out.append(problem("too_few_nodes", replicas=s.replicas, nodes=node_count, **about))
        if want_replicas and s.replicas != want_replicas:
            out.append(problem("replicas_differ", replicas=s.replicas, want=want_replicas, **about))
    return out
