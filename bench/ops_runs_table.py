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
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from million_runs import WORKERS, add_database_args, load, pct, report, scratch_database  # noqa: E402

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
    add_database_args(ap)
    ap.add_argument("--requests", type=int, default=800)
    args = ap.parse_args()

    with scratch_database(args, "rota_bench_ops") as name:
        print(f"database {name}")
        load(args.runs, args.jobs, args.seed)

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
        print(report(timings, "request"))
        slowest = max(KINDS, key=lambda k: pct(timings[k], 95))
        print(f"\nplan of the slowest request of the slowest kind ({slowest}):")
        print(worst[slowest][1])
        print(explain(worst[slowest][1]))


if __name__ == "__main__":
    main()
