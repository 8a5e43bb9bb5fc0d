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
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from million_runs import add_database_args, load, pct, report, scratch_database  # noqa: E402

#: Filter kinds timed: the ``status`` parameter as a client sends it.
KINDS = ["SUCCEEDED", "FAILED", "RUNNING", "COMPLETED", "PENDING", "TIMED_OUT,CANCELLED"]


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
    add_database_args(ap)
    ap.add_argument("--requests", type=int, default=600, help="pages requested in total")
    ap.add_argument("--pages", type=int, default=5, help="pages followed per filter")
    args = ap.parse_args()

    with scratch_database(args, "rota_bench_runs") as name:
        print(f"database {name}")
        load(args.runs, args.jobs, args.seed, with_logs=True)

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
        print(report(timings, "status filter"))
        # The hard case for an index: a rare state of the busiest job.
        busiest, items = async_to_sync(time_requests)(
            raw, jobs[:1], args.requests // 3, args.pages, args.seed, [*KINDS, "ORPHANED"]
        )
        print(f"\nthe busiest job, {jobs[0]} ({by_job[0][1]:,} runs; {items:,} returned):\n")
        print(report(busiest, "status filter"))
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


if __name__ == "__main__":
    main()
