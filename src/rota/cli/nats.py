"""``rota nats``: run and operate the NATS nodes that hold rota's data, from one
node on a laptop to a cluster of three machines (seed 003's ``nats-bootstrap``
operations: up, join, status, doctor, backup, restore, leave, down, service).

A node lives in one directory (``--dir``, default ``$ROTA_DATA_DIR/nats-node``)::

    node.json        the node's settings (name, cluster, ports, routes): a later
                     `up --dir` without options starts the same node again
    token            the client token (0600); the same on every node
    cluster.password the route password (0600); the same on every node
    nats.conf        the nats-server configuration, written at each start
    nats-server.pid  the running server's pid (nats-server writes it, rota removes it)
    nats.log         its log
    jetstream/       its JetStream store

Docs: docs/operations.md (three machines step by step) and docs/nats.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from rota.cli.base import CommandError, env_default, env_help

help = "run and operate rota's NATS nodes: up, join, status, doctor, backup, restore, leave, down"

NODE_FILE = "node.json"
PID_FILE = "nats-server.pid"
DEFAULTS: dict[str, Any] = {
    "cluster": "rota",
    "host": "127.0.0.1",
    "port": 4222,
    "cluster_host": "127.0.0.1",
    "cluster_port": 6222,
    "http_port": 8222,
    "routes": [],
    # A cluster node fsyncs every write before acknowledging it (docs/operations.md,
    # "The durability setting"): rota's leases, epochs and run snapshots must not
    # come back older after a machine crash.
    "sync_interval": "always",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="nats_command", required=True, metavar="ACTION")

    def dir_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir",
            default=env_default("ROTA_NATS_DIR"),
            help=env_help(
                "the node's directory (default: $ROTA_DATA_DIR/nats-node)", "ROTA_NATS_DIR"
            ),
        )

    def node_args(p: argparse.ArgumentParser) -> None:
        dir_arg(p)
        p.add_argument(
            "--name", help="this node's name, unique in the cluster (default: host name)"
        )
        p.add_argument(
            "--cluster", help="the cluster's name, the same on every node (default: rota)"
        )
        p.add_argument("--host", help="client address to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="client port (default 4222)")
        p.add_argument(
            "--cluster-host",
            help="address the routes between nodes listen on (default 127.0.0.1; another "
            "machine's nodes need this machine's address or 0.0.0.0)",
        )
        p.add_argument("--cluster-port", type=int, help="route port (default 6222)")
        p.add_argument(
            "--http-port", type=int, help="monitoring port, on 127.0.0.1 only (default 8222)"
        )
        p.add_argument(
            "--sync-interval",
            help="JetStream fsync policy: 'always' (rota's default for a cluster node), a "
            "duration such as 1s, or 'default' for the server's (every 2 minutes)",
        )
        p.add_argument(
            "--detach",
            action="store_true",
            help="start the server in the background and return (stop it with `down`)",
        )

    p = sub.add_parser("up", help="start this machine's node (the first node of a cluster)")
    node_args(p)
    p.add_argument(
        "--seed",
        action="append",
        help="route address of another node, host or host:port (default port 6222); "
        "repeat for more. A first node needs none: it waits for the second",
    )
    p = sub.add_parser("join", help="start a node that joins the cluster of a seed node")
    node_args(p)
    p.add_argument(
        "--seed",
        action="append",
        required=True,
        help="route address of a running node, host or host:port (default port 6222); "
        "repeat for more",
    )

    def client_args(p: argparse.ArgumentParser) -> None:
        dir_arg(p)
        p.add_argument(
            "--nats-url",
            default=None,
            help="NATS client URL(s), comma-separated (default: the node in --dir, else "
            "ROTA_NATS_URL)",
        )
        p.add_argument(
            "--monitor",
            action="append",
            default=[],
            help="monitoring URL of a node (http://127.0.0.1:8222); repeat for more "
            "(default: the node in --dir, and ROTA_NATS_MONITOR_URLS)",
        )

    for name, text in (
        ("status", "nodes, meta leader, and each rota stream's and bucket's replicas"),
        ("doctor", "what is wrong with the cluster, with a hint for each problem"),
    ):
        p = sub.add_parser(name, help=text)
        client_args(p)
        p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = sub.add_parser("backup", help="snapshot all of rota's streams, buckets and objects")
    client_args(p)
    p.add_argument("target", help="a new directory to write the backup to")
    p = sub.add_parser("restore", help="restore a backup made by `rota nats backup`")
    client_args(p)
    p.add_argument("source", help="the backup directory")
    p.add_argument(
        "--replicas", type=int, help="replica count for the restored streams (default: as saved)"
    )
    p.add_argument(
        "--replace", action="store_true", help="delete streams that exist before restoring them"
    )
    p = sub.add_parser(
        "leave", help="move this node's replicas away, then stop it in lame-duck mode"
    )
    client_args(p)
    p.add_argument(
        "--force", action="store_true", help="leave even if a stream exists only on this node"
    )
    p.add_argument(
        "--peer",
        help="instead of the node in --dir, move the replicas of this (stopped) node away; "
        "from any machine, once a new node has joined",
    )
    p = sub.add_parser(
        "scale",
        help="bring every rota stream, bucket and object store to the cluster's replica "
        "count (R3 on three or more nodes), in place",
    )
    client_args(p)
    p.add_argument(
        "--replicas", type=int, choices=(1, 3, 5), help="this count instead (may shrink)"
    )
    p = sub.add_parser("down", help="stop the node in --dir")
    dir_arg(p)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    p = sub.add_parser("service", help="print (or --install) a systemd unit for the node")
    dir_arg(p)
    p.add_argument("--install", action="store_true", help="write the unit file")
    p.add_argument(
        "--unit-dir", default="/etc/systemd/system", help="where --install writes the unit"
    )
    p.add_argument("--user", default="", help="the user the unit runs as (default: root)")


def handle(args: argparse.Namespace) -> int:
    action = args.nats_command
    return {
        "up": handle_up,
        "join": handle_up,
        "status": handle_status,
        "doctor": handle_status,
        "backup": handle_backup,
        "restore": handle_restore,
        "leave": handle_leave,
        "scale": handle_scale,
        "down": handle_down,
        "service": handle_service,
    }[action](args)


# ---------------------------------------------------------------- the node dir


def node_dir(args: argparse.Namespace) -> Path:
    if args.dir:
        return Path(args.dir).resolve()
    return (Path(env_default("ROTA_DATA_DIR", ".rota")) / "nats-node").resolve()


def load_node(directory: Path) -> dict[str, Any]:
    path = directory / NODE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def secret_file(path: Path, env: str, *, create: bool, what: str) -> str:
    """The secret from ``env``, else from ``path``, else a new one (``create``);
    what was found or made is saved in ``path`` (0600)."""
    value = os.environ.get(env, "").strip()
    if not value and path.is_file():
        value = path.read_text().strip()
    if not value:
        if not create:
            raise CommandError(
                f"a joining node needs the cluster's {what}",
                hint=f"set {env} to the content of {path.name} in the first node's directory",
            )
        value = secrets.token_urlsafe(24)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def seed_route(seed: str) -> str:
    """``host``, ``host:port`` or a route URL -> ``nats-route://host:port``."""
    seed = seed.strip()
    if "://" in seed:
        return seed
    if ":" not in seed.rsplit("]", 1)[-1]:
        seed = f"{seed}:{DEFAULTS['cluster_port']}"
    return f"nats-route://{seed}"


def node_settings(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """node.json's settings, overridden by the options given, defaults for the rest."""
    node = {**DEFAULTS, "name": socket.gethostname(), **load_node(directory)}
    for key in ("name", "cluster", "host", "port", "cluster_host", "cluster_port", "http_port"):
        value = getattr(args, key, None)
        if value is not None:
            node[key] = value
    if args.sync_interval is not None:
        node["sync_interval"] = args.sync_interval
    if getattr(args, "seed", None):
        node["routes"] = [seed_route(s) for s in args.seed]
    if not node["routes"]:
        # A first node routes to itself: JetStream refuses to start a cluster node
        # without a route, and the server skips a route to itself; the nodes that
        # join later are gossiped to it.
        own = "127.0.0.1" if node["cluster_host"] in ("0.0.0.0", "::") else node["cluster_host"]
        node["routes"] = [f"nats-route://{own}:{node['cluster_port']}"]
    return node


def make_server(directory: Path, node: dict[str, Any], *, joining: bool) -> Any:
    from rota.bus.server import EmbeddedNats, NatsServerError

    token = secret_file(directory / "token", "ROTA_NATS_TOKEN", create=not joining, what="token")
    password = secret_file(
        directory / "cluster.password",
        "ROTA_NATS_CLUSTER_PASSWORD",
        create=not joining,
        what="route password",
    )
    try:
        return EmbeddedNats(
            directory,
            host=node["host"],
            port=node["port"],
            token=token,
            sync_interval=node["sync_interval"],
            log_file=directory / "nats.log",
            server_name=node["name"],
            cluster_name=node["cluster"],
            cluster_host=node["cluster_host"],
            cluster_port=node["cluster_port"],
            routes=node["routes"],
            cluster_password=password,
            http_port=node["http_port"],
            pid_file=directory / PID_FILE,
        )
    except NatsServerError as exc:
        raise CommandError(exc.message, hint=exc.hint) from None


def running_pid(directory: Path) -> int | None:
    """The pid in the node's pid file if that process is a live nats-server."""
    try:
        pid = int((directory / PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"nats-server" in cmdline else None


def handle_up(args: argparse.Namespace) -> int:
    from rota.bus.server import NatsServerError

    directory = node_dir(args)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pid = running_pid(directory)
    if pid:
        raise CommandError(
            f"the node in {directory} already runs (pid {pid})",
            hint="`rota nats down --dir ...` stops it",
        )
    node = node_settings(args, directory)
    joining = args.nats_command == "join"
    if joining and not node["routes"]:
        raise CommandError("join needs --seed", hint="give the route address of a running node")
    server = make_server(directory, node, joining=joining)
    (directory / NODE_FILE).write_text(json.dumps(node, indent=2) + "\n")
    try:
        server.start(detach=args.detach)
    except NatsServerError as exc:
        raise CommandError(exc.message, hint=exc.hint) from None
    print(
        f"NATS node {node['name']} of cluster {node['cluster']}: clients {server.url}, "
        f"routes {server.cluster_url}, monitoring {server.monitor_url}",
        flush=True,
    )
    print(
        f"  ROTA_NATS_TOKEN is in {directory / 'token'}; others join with "
        f"`rota nats join --seed <this host>:{node['cluster_port']}` and "
        f"ROTA_NATS_CLUSTER_PASSWORD from {directory / 'cluster.password'}",
        flush=True,
    )
    if args.detach:
        server.process = None  # it is on its own now; `down` stops it
        return 0
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop and server.process and server.process.poll() is None:
            time.sleep(0.2)
    finally:
        code = server.process.poll() if server.process else 0
        server.stop()
    return 0 if stop or not code else 1


def handle_down(args: argparse.Namespace) -> int:
    directory = node_dir(args)
    pid = running_pid(directory)
    if pid is None:
        print(f"no NATS node runs from {directory}")
        return 0
    os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, args.timeout):
        raise CommandError(
            f"nats-server (pid {pid}) did not stop within {args.timeout}s",
            hint=f"see {directory / 'nats.log'}; `kill -9 {pid}` ends it at once",
        )
    # nats-server leaves its pid file behind.
    (directory / PID_FILE).unlink(missing_ok=True)
    print(f"stopped NATS node in {directory} (pid {pid})")
    return 0


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # reap it when it is our own child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------- clients


def client_target(args: argparse.Namespace) -> tuple[list[str], str, list[str]]:
    """(NATS URLs, token, monitoring URLs) for the operation: the options, then
    the node in --dir, then rota's settings."""
    directory = node_dir(args)
    node = load_node(directory)
    urls = [u.strip() for u in (args.nats_url or "").split(",") if u.strip()]
    monitors = list(args.monitor)
    if node:
        host = "127.0.0.1" if node["host"] in ("0.0.0.0", "::") else node["host"]
        urls = urls or [f"nats://{host}:{node['port']}"]
        if not monitors and node.get("http_port"):
            monitors = [f"http://127.0.0.1:{node['http_port']}"]
    token = os.environ.get("ROTA_NATS_TOKEN", "")
    if not token and (directory / "token").is_file():
        token = (directory / "token").read_text().strip()
    if not urls or not monitors or not token:
        from rota.conf import get_settings

        settings = get_settings()
        urls = urls or [u.strip() for u in settings.nats_url.split(",") if u.strip()]
        monitors = monitors or list(settings.nats_monitor_urls)
        token = token or settings.nats_token
    return urls, token, monitors


async def connect(urls: list[str], token: str) -> Any:
    import nats

    from rota.errors import BackendUnavailable

    try:
        return await nats.connect(
            servers=urls,
            token=token or None,
            name="rota-nats",
            connect_timeout=5,
            max_reconnect_attempts=2,
            allow_reconnect=True,
            error_cb=quiet,
        )
    except Exception as exc:
        raise BackendUnavailable(
            f"cannot connect to NATS at {', '.join(urls)}: {exc or type(exc).__name__}",
            hint="is the node up (`rota nats status --dir ...`), and is ROTA_NATS_TOKEN right?",
        ) from exc


async def quiet(exc: Exception) -> None:
    """nats-py prints every connection error with a traceback unless told otherwise;
    the command reports the one that matters."""


def with_connection(args: argparse.Namespace, work: Any) -> Any:
    urls, token, monitors = client_target(args)

    async def main() -> Any:
        nc = await connect(urls, token)
        try:
            return await work(nc, monitors)
        finally:
            await nc.close()

    return asyncio.run(main())


def handle_status(args: argparse.Namespace) -> int:
    from rota.bus.cluster import cluster_report

    report = with_connection(args, lambda nc, mon: cluster_report(nc, monitor_urls=mon))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif args.nats_command == "status":
        print(format_report(report))
    if args.nats_command == "doctor":
        if not args.json:
            print(format_problems(report))
        return 1 if any(not p.warning for p in report.problems) else 0
    return 0


def format_report(report: Any) -> str:
    lines = []
    leader = report.meta_leader or ("unknown" if not report.meta_known else "NONE")
    name = f"cluster {report.cluster}" if report.cluster else "single server"
    lines.append(f"{name}: {len(report.nodes)} node(s), meta leader {leader}")
    for n in report.nodes:
        state = (
            "offline"
            if n.offline
            else "current"
            if n.current
            else "behind"
            if n.current is False
            else "online"
        )
        role = "meta leader" if n.meta_leader else "follower"
        lines.append(f"  node {n.name:<20} {role:<12} {state}" + (f" lag {n.lag}" if n.lag else ""))
    lines.append("")
    lines.append(f"  {'resource':<30} {'replicas':>8}  leader           followers")
    for s in report.streams:
        label = f"{s.kind} {s.resource}"
        if not s.exists:
            lines.append(f"  {label:<30} {'-':>8}  MISSING")
            continue
        followers = ", ".join(
            f"{p.name} ({'offline' if p.offline else 'current' if p.current else f'lag {p.lag}'})"
            for p in s.followers
        )
        lines.append(f"  {label:<30} {s.replicas:>8}  {s.leader or 'NONE':<16} {followers or '-'}")
    for e in report.errors:
        lines.append(f"note: {e}")
    return "\n".join(lines)


def format_problems(report: Any) -> str:
    if not report.problems:
        return "ok: no problems found"
    return "\n".join(
        f"{'WARN ' if p.warning else 'FAIL '}  {p.what}\n        → {p.hint}"
        for p in report.problems
    )


def handle_backup(args: argparse.Namespace) -> int:
    from rota.bus.backup import backup

    entries = with_connection(args, lambda nc, _: backup(nc, Path(args.target)))
    for e in entries:
        print(
            f"{e.stream:<24} {e.messages:>8} messages  seq {e.first_seq}..{e.last_seq}  {e.bytes} bytes"
        )
    print(f"backup of {len(entries)} stream(s) written to {Path(args.target).resolve()}")
    return 0


def handle_restore(args: argparse.Namespace) -> int:
    from rota.bus.backup import restore

    infos = with_connection(
        args,
        lambda nc, _: restore(nc, Path(args.source), replicas=args.replicas, replace=args.replace),
    )
    for info in infos:
        state = info.get("state", {})
        print(
            f"{info['config']['name']:<24} {state.get('messages', 0):>8} messages  "
            f"R{info['config'].get('num_replicas', 1)}"
        )
    print(f"restored {len(infos)} stream(s) from {Path(args.source).resolve()}")
    return 0


# ------------------------------------------------------------------- leaving


def handle_leave(args: argparse.Namespace) -> int:
    if args.peer:
        moved, stays = with_connection(args, lambda nc, _: move_replicas(nc, args.peer, True))
        for stream in moved:
            print(f"moved {stream}'s replica off {args.peer}")
        for stream, why in stays:
            print(f"warning: {stream} keeps its replica on {args.peer}: {why}")
        return 1 if stays else 0
    directory = node_dir(args)
    node = load_node(directory)
    pid = running_pid(directory)
    if not node or pid is None:
        raise CommandError(
            f"no NATS node runs from {directory}",
            hint="run `leave` on the machine of the node that leaves, with its --dir",
        )
    moved, stays = with_connection(args, lambda nc, _: move_replicas(nc, node["name"], args.force))
    for stream in moved:
        print(f"moved {stream}'s replica off {node['name']}")
    for stream, why in stays:
        print(f"warning: {stream} keeps its replica on {node['name']}: {why}")
    # Lame duck: the server stops accepting clients, hands its stream and consumer
    # leaderships over, lets clients reconnect elsewhere, then exits.
    os.kill(pid, signal.SIGUSR2)
    if not wait_gone(pid, 120):
        raise CommandError(f"nats-server (pid {pid}) is still in lame-duck mode after 120 s")
    (directory / PID_FILE).unlink(missing_ok=True)
    print(f"node {node['name']} left: lame-duck mode ended, server stopped")
    if stays:
        print(
            "  no free node took the streams above: they miss a replica until it comes back, "
            f"or until a new node has joined and `rota nats leave --peer {node['name']}` moved "
            "them there; the meta group lists it as offline (see docs/nats.md, 'Leaving')"
        )
    return 0


async def move_replicas(nc: Any, name: str, force: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """Peer-remove ``name`` from every stream that has a replica there; JetStream
    places a new replica on a free node if there is one."""
    from rota.bus.cluster import _stream_infos

    infos = await _stream_infos(nc, 10)
    members = {
        s: [c.get("leader"), *(r.get("name") for r in c.get("replicas") or [])]
        for s, info in infos.items()
        if (c := info.get("cluster") or {})
    }
    alone = [s for s, m in members.items() if m == [name]]
    if alone and not force:
        raise CommandError(
            f"{', '.join(alone)} exist(s) only on {name}: leaving would take them away",
            hint="raise their replicas first (ROTA_NATS_REPLICAS=3 and restart a rota process), "
            "back them up (`rota nats backup`), or pass --force",
        )
    moved: list[str] = []
    stays: list[tuple[str, str]] = []
    for stream, m in sorted(members.items()):
        if name not in m or m == [name]:
            continue
        msg = await nc.request(
            f"$JS.API.STREAM.PEER.REMOVE.{stream}", json.dumps({"peer": name}).encode(), timeout=10
        )
        answer = json.loads(msg.data)
        if answer.get("error"):
            stays.append((stream, answer["error"].get("description", "")))
        else:
            moved.append(stream)
    return moved, stays


# ------------------------------------------------------------------- systemd


def unit_text(directory: Path, node: dict[str, Any], user: str) -> str:
    rota = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else Path("rota")
    if rota.name != "rota":
        rota = Path(sys.executable).parent / "rota"
    lines = [
        "[Unit]",
        f"Description=NATS node {node.get('name', '')} for rota (cluster {node.get('cluster', '')})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={rota} nats up --dir {directory}",
        # `rota nats up` passes SIGTERM on as a graceful shutdown; the server's own
        # lame-duck exit is `rota nats leave`.
        "KillSignal=SIGTERM",
        "TimeoutStopSec=60",
        "Restart=on-failure",
        "RestartSec=2",
        "LimitNOFILE=65536",
    ]
    if user:
        lines.append(f"User={user}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def handle_service(args: argparse.Namespace) -> int:
    directory = node_dir(args)
    node = load_node(directory)
    if not node:
        raise CommandError(
            f"no node configured in {directory}",
            hint="run `rota nats up` (or join) there once first; the unit starts that node",
        )
    text = unit_text(directory, node, args.user)
    if not args.install:
        print(text, end="")
        return 0
    unit = Path(args.unit_dir) / "rota-nats.service"
    try:
        unit.write_text(text)
    except OSError as exc:
        raise CommandError(f"cannot write {unit}: {exc}", hint="run it as root") from None
    print(f"wrote {unit}; now: systemctl daemon-reload && systemctl enable --now rota-nats")
    return 0


def handle_scale(args: argparse.Namespace) -> int:
    """Grow (or, with --replicas, set) the replicas of rota's resources. JetStream
    adds the replicas and catches them up while every stream keeps serving."""
    from rota.bus.resources import ensure_resources
    from rota.conf import get_settings

    async def work(nc: Any, monitors: list[str]) -> dict[str, str]:
        return await ensure_resources(
            nc.jetstream(timeout=30), get_settings(), replicas=args.replicas
        )

    from nats.js.errors import BadRequestError

    try:
        done = with_connection(args, work)
    except BadRequestError as exc:
        raise CommandError(
            f"JetStream refused the replica count: {exc.description}",
            hint="a node that has just joined is placed on once the meta group knows it: "
            "wait until `rota nats status` lists every node, then run this again",
        ) from None
    for name, outcome in done.items():
        print(f"{name}: {outcome}")
    return 0
