"""``GET /runs`` with a million runs in PostgreSQL: the filtered page (status and
job, newest first, following the cursor) through the real API view.

It creates a scratch database (dropped at the end unless ``--keep``), migrates
it, and loads the runs with one ``INSERT ... SELECT generate_series`` in SQL:
~50 jobs of skewed popularity (a few run every minute, most rarely), a
realistic spread of states (mostly SUCCEEDED, some FAILED, a few TIMED_OUT,
CANCELLED, SKIPPED, and some live: PENDING, ASSIGNED, RUNNING), four routing
tags, a schedule time on a third of them, timestamps over 90 days, and output
rows (RunLog) for one run in ten. Then it times requests through Django's
AsyncClient with a real API token (auth, view, ORM, JSON: everything but the
socket): each request is one page of 50 of a (status, job) filter, and a
request sequence follows ``next_cursor`` for up to ``--pages`` pages. It prints
p50/p95/p99/max per filter kind and over all, the plan of the slowest kind, and
the time of the ``/metrics`` runs-by-job-and-state GROUP BY on the same data.

    .venv/bin/python bench/runs_list.py                  # 1,000,000 runs
    .venv/bin/python bench/runs_list.py --runs 200000 --requests 200

The target (issue 6) is p95 under 100 ms. PostgreSQL: ``service postgresql
start``; the role ``rota``/``rota`` with CREATEDB (scripts/test makes it).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: (state, share in per mille): the order of the cumulative thresholds below.
STATES = [
    ("SUCCEEDED", 820),
    ("FAILED", 70),
    ("TIMED_OUT", 10),
    ("CANCELLED", 20),
    ("SKIPPED", 30),
    ("PENDING", 25),
    ("ASSIGNED", 5),
    ("RUNNING", 15),
    ("ORPHANED", 5),
]
TAGS = ["default", "gpu", "batch", "etl"]

#: Filter kinds timed: the ``status`` parameter as a client sends it.
KINDS = ["SUCCEEDED", "FAILED", "RUNNING", "COMPLETED", "PENDING", "TIMED_OUT,CANCELLED"]


def _state_case(expr: str) -> str:
    parts, upto = [], 0
    for state, share in STATES:
        upto += share
        parts.append(f"WHEN {expr} < {upto} THEN '{state}'")
    return "CASE " + " ".join(parts) + " ELSE 'SUCCEEDED' END"


def load(runs: int, jobs: int, seed: int) -> float:
    """Insert the jobs, ``runs`` runs and their output rows; returns seconds."""
    from django.db import connection

    from rota.models import JobDefinition, JobRun, RunLog

    t0 = time.perf_counter()
    JobDefinition.objects.bulk_create(
        [
            JobDefinition(name=f"job-{i:02d}", kind="command", target="true", tags=[TAGS[i % 4]])
            for i in range(jobs)
        ]
    )
    first_job = JobDefinition.objects.order_by("id").values_list("id", flat=True).first()
    # Values for every column this script does not set itself: each field's
    # default, so the load keeps working when a migration adds a column.
    own = {
        "id": "'01' || lpad(upper(to_hex(g)), 24, '0')",
        "job_id": f"{first_job} + j",
        "job_name": "'job-' || lpad(j::text, 2, '0')",
        "kind": "'command'",
        "state": "st",
        "attempt": "CASE WHEN st IN ('PENDING', 'SKIPPED') THEN 0 ELSE 1 END",
        "version": "3",
        "worker_id": "CASE WHEN st IN ('PENDING', 'SKIPPED') THEN '' "
        "ELSE 'node-' || (mod(g, 8)) || '-0000abcd' END",
        "params": """jsonb_build_object('n', mod(g, 100))""",
        "tag": "tg",
        "tags": "jsonb_build_array(tg)",
        "exit_code": "CASE WHEN st = 'SUCCEEDED' THEN 0 WHEN st = 'FAILED' THEN 1 END",
        "error_summary": "CASE WHEN st = 'FAILED' THEN 'exit status 1' ELSE '' END",
        "created_at": "at",
        "scheduled_for": "CASE WHEN mod(g, 3) = 0 THEN at END",
        "dispatched_at": "CASE WHEN st <> 'SKIPPED' THEN at + interval '3 ms' END",
        "assigned_at": "CASE WHEN st NOT IN ('PENDING', 'SKIPPED') THEN at + interval '9 ms' END",
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
        elif field.has_default() or not field.null:  # a CharField's default is ""
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
        else:
            values.append("NULL")
    # Job popularity: job j gets a share ~ 1/(j+1) (a few busy jobs, a long tail).
    sql = f"""
        INSERT INTO {JobRun._meta.db_table} ({", ".join(columns)})
        SELECT {", ".join(values)} FROM (
            SELECT g,
                   least({jobs - 1}, floor(exp(random() * ln({jobs + 1})) - 1)::int) AS j,
                   {_state_case("floor(random() * 1000)")} AS st,
                   (ARRAY{TAGS!r})[1 + floor(random() * {len(TAGS)})::int] AS tg,
                   now() - interval '90 days' + g * (interval '90 days' / {runs}) AS at
            FROM generate_series(1, {runs}) AS g
        ) AS src
    """
    with connection.cursor() as cur:
        cur.execute("SELECT setseed(%s)", [seed / 2**31])
        cur.execute(sql, params)
        cur.execute(
            f"""INSERT INTO {RunLog._meta.db_table} (run_id, attempt, stream, seq, data, created_at)
                SELECT id, 1, 'stdout', 0, 'processed ' || version || ' items', finished_at
                FROM {JobRun._meta.db_table} WHERE finished_at IS NOT NULL AND random() < 0.1"""
        )
        cur.execute("ANALYZE")
    return time.perf_counter() - t0


def token() -> str:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from rota.models import ApiToken

    user = get_user_model().objects.create(username="bench")
    user.groups.add(Group.objects.get(name="ops_view"))
    _, raw = ApiToken.issue(user)
    return raw


async def time_requests(
    raw: str, jobs: list[str], requests: int, pages: int, seed: int, kinds: list[str]
):
    from django.test import AsyncClient

    client = AsyncClient()
    auth = {"Authorization": f"Bearer {raw}"}
    rnd = random.Random(seed)
    timings: dict[str, list[float]] = {k: [] for k in kinds}
    items = 0
    # Warm-up: the token cache, Django's URL resolver, the connection.
    await client.get("/runs", {"limit": 1}, headers=auth)
    done = sequences = 0
    while done < requests:
        kind = kinds[sequences % len(kinds)]
        sequences += 1
        job = rnd.choice(jobs)
        cursor = None
        for _ in range(pages):
            query = {"status": kind, "job": job, "limit": 50}
            if cursor:
                query["cursor"] = cursor
            t0 = time.perf_counter()
            r = await client.get("/runs", query, headers=auth)
            timings[kind].append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.content
            body = r.json()
            items += len(body["items"])
            done += 1
            cursor = body["next_cursor"]
            if not cursor or done >= requests:
                break
    return timings, items


def pct(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def report(timings: dict[str, list[float]]) -> str:
    rows = [f"{'status filter':<22}{'n':>6}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  (ms)"]
    every: list[float] = []
    for kind, values in timings.items():
        if values:
            every += values
            rows.append(
                f"{kind:<22}{len(values):>6}{pct(values, 50):>9.1f}{pct(values, 95):>9.1f}"
                f"{pct(values, 99):>9.1f}{max(values):>9.1f}"
            )
    rows.append(
        f"{'all':<22}{len(every):>6}{pct(every, 50):>9.1f}{pct(every, 95):>9.1f}"
        f"{pct(every, 99):>9.1f}{max(every):>9.1f}"
    )
    return "\n".join(rows)


def explain(kind: str, job: str) -> str:
    """The plan of one first page, as the view's query runs it."""
    from django.db import connection

    from rota.api.app import _SEED003_FILTER
    from rota.models import JobRun

    states: list[str] = []
    for token_ in kind.split(","):
        states += _SEED003_FILTER.get(token_, [token_])
    qs = JobRun.objects.filter(state__in=states, job_name=job).order_by("-id")[:51]
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(r[0] for r in cur.fetchall())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--requests", type=int, default=600, help="pages requested in total")
    ap.add_argument("--pages", type=int, default=5, help="pages followed per filter")
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

    name = f"rota_bench_runs_{os.getpid()}"
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

        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT job_name, count(*) FROM rota_jobrun GROUP BY 1 ORDER BY 2 DESC")
            by_job = cur.fetchall()
        jobs = [j for j, _ in by_job]
        print(
            f"runs per job: busiest {by_job[0][1]:,}, median {by_job[len(by_job) // 2][1]:,}, "
            f"rarest {by_job[-1][1]:,}"
        )
        raw = token()
        from asgiref.sync import async_to_sync

        timings, items = async_to_sync(time_requests)(
            raw, jobs, args.requests, args.pages, args.seed, KINDS
        )
        print(f"\nGET /runs?status=...&job=...&limit=50, cursor followed up to {args.pages} pages")
        print(f"any job ({sum(map(len, timings.values()))} requests, {items:,} runs returned):\n")
        print(report(timings))
        # The hard case for an index: a rare state of the busiest job.
        busiest, items = async_to_sync(time_requests)(
            raw, jobs[:1], args.requests // 3, args.pages, args.seed, [*KINDS, "ORPHANED"]
        )
        print(f"\nthe busiest job, {jobs[0]} ({by_job[0][1]:,} runs; {items:,} returned):\n")
        print(report(busiest))
        for kind, values in busiest.items():
            timings.setdefault(kind, []).extend(values)
        slowest = max((k for k in timings if timings[k]), key=lambda k: pct(timings[k], 95))
        print(f"\nplan of a first page, status={slowest}, job={jobs[len(jobs) // 2]}:")
        print(explain(slowest, jobs[len(jobs) // 2]))

        from rota.api.metrics import runs_by_job_and_state

        t0 = time.perf_counter()
        groups = async_to_sync(runs_by_job_and_state)()
        print(
            f"\n/metrics runs by job and state (GROUP BY, cached 5 s): "
            f"{(time.perf_counter() - t0) * 1000:.0f} ms for {len(groups)} series"
        )
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
