"""A scratch PostgreSQL database with a million runs, for the list benchmarks
(bench/runs_list.py, bench/ops_runs_table.py).

:func:`scratch_database` creates a database (dropped at the end unless
``--keep``), points Django at it and migrates it. :func:`load` fills it with
one ``INSERT ... SELECT generate_series``: ~50 jobs of skewed popularity (a few
run every minute, most rarely), a realistic spread of states, four routing
tags, eight worker ids, a schedule time on a third of the runs, 90 days of
creation times, and real ULID run ids (their first ten characters encode the
creation time, so an id range is a date range); optionally output rows
(RunLog) for one run in ten.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
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
WORKERS = 8
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def add_database_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--admin-url",
        default=os.environ.get(
            "ROTA_BENCH_POSTGRES_URL", "postgres://rota:rota@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL URL whose role may create databases",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")


@contextlib.contextmanager
def scratch_database(args: argparse.Namespace, prefix: str) -> Iterator[str]:
    """Create, migrate and (unless ``--keep``) drop a database named after ``prefix``."""
    import psycopg

    name = f"{prefix}_{os.getpid()}"
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
        yield name
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")


def _state_case(expr: str) -> str:
    parts, upto = [], 0
    for state, share in STATES:
        upto += share
        parts.append(f"WHEN {expr} < {upto} THEN '{state}'")
    return "CASE " + " ".join(parts) + " ELSE 'SUCCEEDED' END"


def _base32(expr: str, chars: int) -> str:
    """SQL for ``chars`` Crockford base32 characters of the bigint ``expr``."""
    return " || ".join(
        f"substr('{CROCKFORD}', ((({expr}) >> {5 * (chars - 1 - i)}) & 31)::int + 1, 1)"
        for i in range(chars)
    )


def load(runs: int, jobs: int, seed: int, *, with_logs: bool = False) -> float:
    """Insert the jobs and ``runs`` runs (and output rows); returns seconds."""
    from django.db import connection

    from rota.models import JobDefinition, JobRun, RunLog

    print(f"loading {runs:,} runs of {jobs} jobs ...", flush=True)
    t0 = time.perf_counter()
    JobDefinition.objects.bulk_create(
        [
            JobDefinition(name=f"job-{i:02d}", kind="command", target="true", tags=[TAGS[i % 4]])
            for i in range(jobs)
        ]
    )
    first_job = JobDefinition.objects.order_by("id").values_list("id", flat=True).first()
    unassigned = "('PENDING', 'SKIPPED')"
    # Values for every column this script does not set itself: each field's
    # default, so the load keeps working when a migration adds a column.
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
        elif field.has_default() or not field.null:  # a CharField's default is ""
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
        else:
            values.append("NULL")
    # Job popularity: job j gets a share ~ 1/(j+1) (a few busy jobs, a long tail).
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
        if with_logs:
            cur.execute(
                f"""INSERT INTO {RunLog._meta.db_table}
                        (run_id, attempt, stream, seq, data, created_at)
                    SELECT id, 1, 'stdout', 0, 'processed ' || version || ' items', finished_at
                    FROM {JobRun._meta.db_table}
                    WHERE finished_at IS NOT NULL AND random() < 0.1"""
            )
        cur.execute("ANALYZE")
    seconds = time.perf_counter() - t0
    print(f"loaded in {seconds:.1f} s ({runs / seconds:,.0f} runs/s)", flush=True)
    return seconds


def pct(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def report(timings: dict[str, list[float]], label: str) -> str:
    """p50/p95/p99/max per kind and over all, in ms."""
    rows = [f"{label:<22}{'n':>6}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  (ms)"]
    every: list[float] = []
    for kind, values in timings.items():
        if not values:
            continue
        every += values
        rows.append(
            f"{kind:<22}{len(values):>6}{pct(values, 50):>9.1f}{pct(values, 95):>9.1f}"
            f"{pct(values, 99):>9.1f}{max(values):>9.1f}"
        )
    if every:
        rows.append(
            f"{'all':<22}{len(every):>6}{pct(every, 50):>9.1f}{pct(every, 95):>9.1f}"
            f"{pct(every, 99):>9.1f}{max(every):>9.1f}"
        )
    return "\n".join(rows)
