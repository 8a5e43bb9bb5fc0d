"""``rota doctor``: say in plain words what is wrong with this installation."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rota.cli.base import setup_django

help = "check NATS, the database, the web server and the settings, and explain problems"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def diagnose() -> list[tuple[bool | None, str, str]]:
    """(ok, what, hint) for each check, in the order a person would fix them;
    ok is None for a warning."""
    results: list[tuple[bool | None, str, str]] = []
    setup_django()
    from django.core import checks

    from rota.bus.server import NatsServerError, find_nats_server
    from rota.conf import get_settings

    settings = get_settings()
    problems = [m for m in checks.run_checks() if m.level >= checks.WARNING]
    results.append(
        (
            not problems,
            "settings are valid"
            if not problems
            else "settings have problems: " + "; ".join(f"{m.id} {m.msg}" for m in problems),
            "; ".join(m.hint or "" for m in problems),
        )
    )
    try:
        results.append((True, f"nats-server binary found at {find_nats_server()}", ""))
    except NatsServerError as exc:
        results.append((False, exc.message, exc.hint))

    async def nats_check() -> list[tuple[bool | None, str, str]]:
        from rota.bus.connection import connect
        from rota.errors import BackendUnavailable

        try:
            bus = await asyncio.wait_for(connect(settings, name="rota-doctor"), 8)
        except BackendUnavailable as exc:
            return [(False, exc.message, exc.hint)]
        except Exception as exc:
            return [
                (
                    False,
                    f"NATS at {settings.nats_url} answered but rota's buckets are missing ({exc})",
                    "start `rota up` or a worker once: they create streams and buckets",
                )
            ]
        try:
            reached = f"NATS reachable at {settings.nats_url}, rota's streams and buckets exist"
            return [(True, reached, ""), *await cluster_lines(bus, settings)]
        finally:
            await bus.close()

    results += asyncio.run(nats_check())

    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            results.append(
                (
                    False,
                    f"the database is not migrated ({len(plan)} migration(s) pending)",
                    "run `rota migrate` (or `python manage.py migrate` in a host project)",
                )
            )
        else:
            results.append((True, f"database reachable and migrated ({connection.vendor})", ""))
    except Exception as exc:
        results.append(
            (
                False,
                f"database unreachable: {exc}",
                "check ROTA_DATABASE_URL and that the server runs",
            )
        )

    import httpx

    try:
        r = httpx.get(settings.api_url.rstrip("/") + "/health", timeout=3)
        ok = r.status_code == 200
        results.append(
            (
                ok,
                f"web server at {settings.api_url} answers /health with {r.status_code}",
                "" if ok else f"it reports {r.text[:200]}",
            )
        )
    except httpx.HTTPError:
        from urllib.parse import urlparse

        from rota.bus.server import port_in_use

        u = urlparse(settings.api_url)
        port = u.port or 80
        if port_in_use(port, u.hostname or "127.0.0.1"):
            results.append(
                (
                    False,
                    f"port {port} is taken by something that is not rota's web server",
                    "stop it, or start rota on another --port",
                )
            )
        else:
            results.append(
                (
                    False,
                    f"no web server at {settings.api_url}",
                    "start `rota up` or `rota server`, or set ROTA_API_URL",
                )
            )
    return results


async def cluster_lines(bus: Any, settings: Any) -> list[tuple[bool | None, str, str]]:
    """The NATS cluster: its nodes and meta leader, each rota stream's replicas and
    lag, then its problems (see rota.bus.cluster)."""
    from rota.bus.cluster import cluster_report

    report = await cluster_report(bus.nc, monitor_urls=settings.nats_monitor_urls)
    leader = report.meta_leader or (
        "unknown (set ROTA_NATS_MONITOR_URLS to see it)" if not report.meta_known else "none"
    )
    where = f"cluster {report.cluster}" if report.cluster else "single server"
    names = ", ".join(n.name for n in report.nodes) or "?"
    lines: list[tuple[bool | None, str, str]] = [
        (True, f"NATS {where}: {len(report.nodes)} node(s) ({names}), meta leader {leader}", "")
    ]
    for s in report.streams:
        if s.exists:
            followers = ", ".join(
                f"{p.name} {'offline' if p.offline else f'lag {p.lag}'}" for p in s.followers
            )
            lines.append(
                (
                    True,
                    f"NATS {s.kind} {s.resource}: {s.replicas} replica(s), leader "
                    f"{s.leader or 'none'}" + (f", followers {followers}" if followers else ""),
                    "",
                )
            )
    for p in report.problems:
        lines.append((None if p.warning else False, f"NATS: {p.what}", p.hint))
    return lines


def handle(args: argparse.Namespace) -> int:
    bad = 0
    for ok, what, hint in diagnose():
        print({True: "ok    ", None: "WARN  ", False: "FAIL  "}[ok] + what)
        if not ok:
            bad += ok is False
            if hint:
                print("      → " + hint)
    return 1 if bad else 0
