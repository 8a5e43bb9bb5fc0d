"""The ops UI's runs table with a million runs in PostgreSQL: DataTables'
server-side request (search, sort, a page of 50) through the real view.

It creates a scratch database (dropped at the end unless ``--keep``), migrates
it, and loads the runs with one ``INSERT ... SELECT generate_series``: ~50 jobs
of skewed popularity, a realistic spread of states, eight worker ids, 90 days
of creation times, and real ULID run ids (their first ten characters encode
the creation time, so the table's date filter is an id range). Then it times
``GET /ops/runs/data`` through Django's test client with a logged-in ops_view
session (session, auth, the view, the ORM, JSON: everything but the socket).

Each request is what the page sends: ``draw``, ``start``, ``length=50``, one
``order`` column and direction, a search term (a job prefix, a worker prefix,
a run id prefix, a state, or nothing that matches), and sometimes a state, job
or date filter. The page asked for is page 1 to 50. It prints p50/p95/p99/max
per kind of request and over all, and the plan of the slowest kind.

    .venv/bin/python bench/ops_runs_table.py                 # 1,000,000 runs
    .venv/bin/python bench/ops_runs_table.py --runs 200000 --requests 300

The target (issue 7) is p95 under 150 ms. PostgreSQL: ``service postgresql
start``; the role ``rota``/``rota`` with CREATEDB (scripts/test makes it).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from runs_list import TAGS, _state_case, pct  # noqa: E402

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
WORKERS = 8


def _base32(expr: str, chars: int) -> str:
    """SQL for ``chars`` Crockford base32 characters of the bigint ``expr``."""
    return " || ".join(
        f"substr('{CROCKFORD}', ((({expr}) >> {5 * (chars - 1 - i)}) & 31)::int + 1, 1)"
        for i in range(chars)
    )


def load(runs: int, jobs: int, seed: int) -> float:
    """Insert the jobs and ``runs`` runs; returns seconds."""
    from django.db import connection

    from rota.models import JobDefinition, JobRun

    t0 = time.perf_counter()
    JobDefinition.objects.bulk_create(
        [
            JobDefinition(name=f"job-{i:02d}", kind="command", target="true", tags=[TAGS[i % 4]])
            for i in range(jobs)
        ]
    )
    first_job = JobDefinition.objects.order_by("id").values_list("id", flat=True).first()
    unassigned = "('PENDING', 'SKIPPED')"
    own = {
        # A ULID: 48-bit milliseconds, then 80 bits (here g and a random part).
        "id": f"{_base32('ms', 10)} || {_base32('g', 8)} || {_base32('rnd', 8)}",
        "job_id": f"{first_job} + j",
        "job_name": "'job-' || lpad(j::text, 2, '0')",
        "kind": "'command'",
        "state": "st",
        "attempt": f"CASE WHEN st IN {unassigned} THEN 0 ELSE 1 + (mod(g, 50) = 0)::int END",
        "version": "3",
        "worker_id": f"CASE WHEN st IN {unassigned} THEN '' "
        f"ELSE 'node-' || mod(g, {WORKERS}) || '-' || lpad(to_hex(mod(g, {WORKERS}) * 4099), 8, '0') END",
        "params": "jsonb_build_object('n', mod(g, 100))",
        "tag": "tg",
        "tags": "jsonb_build_array(tg)",
        "exit_code": "CASE WHEN st = 'SUCCEEDED' THEN 0 WHEN st = 'FAILED' THEN 1 END",
        "error_summary": "CASE WHEN st = 'FAILED' THEN 'exit status 1' ELSE '' END",
        "created_at": "at",
        "scheduled_for": "CASE WHEN mod(g, 3) = 0 THEN at END",
        "dispatched_at": "CASE WHEN st <> 'SKIPPED' THEN at + interval '3 ms' END",
        "assigned_at": f"CASE WHEN st NOT IN {unassigned} THEN at + interval '9 ms' END",
        "started_at": "CASE WHEN st NOT IN ('PENDING', 'SKIPPED', 'ASSIGNED') "
        "THEN at + interval '12 ms' END",
        "finished_at": "CASE WHEN st IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED') "
        "THEN at + mod(g, 600) * interval '1 s' END",
        "updated_at": "at + mod(g, 600) * interval '1 s'",
    }
    columns, values, params = [], [], []
    for field in JobRun._meta.concrete_fields:
        columns.append(connection.ops.quote_name(field.column))
        if field.name in own or field.attname in own:
            values.append(own.get(field.attname, own.get(field.name)))
        elif field.has_default() or not field.null:
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
        else:
            values.append("NULL")
    sql = f"""
        INSERT INTO {JobRun._meta.db_table} ({", ".join(columns)})
        SELECT {", ".join(values)} FROM (
            SELECT g, at,
                   (extract(epoch FROM at) * 1000)::bigint AS ms,
                   floor(random() * 1099511627776)::bigint AS rnd,
                   least({jobs - 1}, floor(exp(random() * ln({jobs + 1})) - 1)::int) AS j,
                   {_state_case("floor(random() * 1000)")} AS st,
                   (ARRAY{TAGS!r})[1 + floor(random() * {len(TAGS)})::int] AS tg
            FROM (
                SELECT g, now() - interval '90 days' + g * (interval '90 days' / {runs}) AS at
                FROM generate_series(1, {runs}) AS g
            ) AS t
        ) AS src
    """
    with connection.cursor() as cur:
        cur.execute("SELECT setseed(%s)", [seed / 2**31])
        cur.execute(sql, params)
        cur.execute("ANALYZE")
    return time.perf_counter() - t0


#: DataTables column order of the page (ops.js): index → column name.
COLUMNS = [
    "run_id",
    "job",
    "state",
    "worker_id",
    "attempt",
    "scheduled_for",
    "started_at",
    "finished_at",
    "error_summary",
]
SORTS = [
    (0, "desc"),
    (0, "asc"),
    (1, "asc"),
    (1, "desc"),
    (2, "asc"),
    (3, "asc"),
    (5, "desc"),
    (6, "desc"),
    (7, "desc"),
    (7, "asc"),
]


def request_params(rnd: random.Random, kind: str, sample_ids: list[str]) -> dict[str, str]:
    column, direction = rnd.choice(SORTS)
    page = 1 + min(49, int(rnd.expovariate(1 / 6)))
    q = {
        "draw": str(rnd.randint(1, 10**6)),
        "start": str((page - 1) * 50),
        "length": "50",
        "order[0][column]": str(column),
        "order[0][dir]": direction,
        "search[value]": "",
    }
    for i, name in enumerate(COLUMNS):
        q[f"columns[{i}][data]"] = name
    if kind == "search job":
        q["search[value]"] = f"job-{rnd.choice(['0', '1', '2', '07', '12', '3', '45'])}"
    elif kind == "search worker":
        q["search[value]"] = f"node-{rnd.randrange(WORKERS)}"
    elif kind == "search run id":
        q["search[value]"] = rnd.choice(sample_ids)[: rnd.choice([6, 8, 12])]
    elif kind == "search state":
        q["search[value]"] = rnd.choice(["failed", "running", "timed_out", "orphaned"])
    elif kind == "search, no match":
        q["search[value]"] = "zzz-nothing"
    elif kind == "filter state+job":
        q["state"] = rnd.choice(["FAILED", "RUNNING", "SUCCEEDED"])
        q["job"] = f"job-{rnd.randrange(50):02d}"
    elif kind == "filter date":
        day = rnd.randrange(1, 88)
        q["date_from"] = time.strftime("%Y-%m-%d", time.gmtime(time.time() - day * 86400))
        q["date_to"] = q["date_from"]
    return q


KINDS = [
    "no search",
    "search job",
    "search worker",
    "search run id",
    "search state",
    "search, no match",
    "filter state+job",
    "filter date",
]


def report(timings: dict[str, list[float]]) -> str:
    rows = [f"{'request':<20}{'n':>6}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  (ms)"]
    every: list[float] = []
    for kind, values in timings.items():
        if values:
            every += values
            rows.append(
                f"{kind:<20}{len(values):>6}{pct(values, 50):>9.1f}{pct(values, 95):>9.1f}"
                f"{pct(values, 99):>9.1f}{max(values):>9.1f}"
            )
    rows.append(
        f"{'all':<20}{len(every):>6}{pct(every, 50):>9.1f}{pct(every, 95):>9.1f}"
        f"{pct(every, 99):>9.1f}{max(every):>9.1f}"
    )
    return "\n".join(rows)


def explain(q: dict[str, str]) -> str:
    from django.db import connection
    from django.http import QueryDict

    from rota.ops.table import filtered, ordered, parse_request

    query = QueryDict(mutable=True)
    query.update(q)
    req = parse_request(query)
    qs = ordered(filtered(req), req)[req.start : req.start + req.length]
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(r[0] for r in cur.fetchall())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--requests", type=int, default=800)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--admin-url",
        default=os.environ.get(
            "ROTA_BENCH_POSTGRES_URL", "postgres://rota:rota@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL URL whose role may create databases",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args()

    import psycopg

    name = f"rota_bench_ops_{os.getpid()}"
    base = args.admin_url.rsplit("/", 1)[0]
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    os.environ["ROTA_DATABASE_URL"] = f"{base}/{name}"
    os.environ.setdefault("ROTA_DATA_DIR", tempfile.mkdtemp(prefix="rota-bench-"))
    os.environ.setdefault("ROTA_SECRET_KEY", "bench-only")
    os.environ["DJANGO_SETTINGS_MODULE"] = "rota.standalone.settings"
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        print(f"database {name}: loading {args.runs:,} runs of {args.jobs} jobs ...", flush=True)
        seconds = load(args.runs, args.jobs, args.seed)
        print(f"loaded in {seconds:.1f} s ({args.runs / seconds:,.0f} runs/s)")

        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.test import Client
        from django.urls import reverse

        from rota.models import JobRun

        user = get_user_model().objects.create(username="bench")
        user.groups.add(Group.objects.get(name="ops_view"))
        client = Client()
        client.force_login(user)
        url = reverse("rota-ops:runs-data")
        rnd = random.Random(args.seed)
        sample_ids = list(JobRun.objects.order_by("?").values_list("id", flat=True)[:200])
        client.get(url, request_params(rnd, "no search", sample_ids))  # warm-up
        timings: dict[str, list[float]] = {k: [] for k in KINDS}
        worst: dict[str, tuple[float, dict[str, str]]] = {}
        rows = 0
        approximate = 0
        for i in range(args.requests):
            kind = KINDS[i % len(KINDS)]
            q = request_params(rnd, kind, sample_ids)
            t0 = time.perf_counter()
            r = client.get(url, q)
            ms = (time.perf_counter() - t0) * 1000
            assert r.status_code == 200, r.content
            body = r.json()
            rows += len(body["data"])
            approximate += not body["exactFiltered"]
            timings[kind].append(ms)
            if ms > worst.get(kind, (0.0, {}))[0]:
                worst[kind] = (ms, q)
        print(
            f"\nGET {url} (DataTables server-side, 50 rows a page, pages 1-50): "
            f"{args.requests} requests, {rows:,} rows returned, "
            f"{approximate} with an estimated count\n"
        )
        print(report(timings))
        slowest = max(KINDS, key=lambda k: pct(timings[k], 95))
        print(f"\nplan of the slowest request of the slowest kind ({slowest}):")
        print(worst[slowest][1])
        print(explain(worst[slowest][1]))
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")


if __name__ == "__main__":
    main()
