"""rota scaled out on this machine: many workers, a NATS cluster, PostgreSQL.

For each configuration (execute workers x NATS nodes x database) it starts a
real deployment (tests/deployment.py: clustered nats-servers on loopback, the
database, one web server, two lead-only workers and the execute workers), then:

- at idle (nothing queued) for --idle seconds: the leader's CPU (% of one core),
  NATS messages per second (in + out, all nodes), and resident memory in total;
- 20,000 no-op `python` runs submitted in batches through the run service and
  waited for until all are SUCCEEDED in SQL: completed/s.

The total capacity is the same in every configuration (--slots, split over the
execute workers), so 50 workers against 2 compares the cost of many workers,
not more slots. Each configuration runs in its own process (Django binds one
database per process); the figures print as one table at the end.

    python bench/scale.py                              # the full matrix
    python bench/scale.py --workers 50 --nats 3 --db postgres --runs 5000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    from tests.e2e.conftest import descendants

    return [pid, *descendants(pid)]


def one(args: argparse.Namespace) -> dict:
    from throughput import rss_mb

    from tests.deployment import Deployment

    tmp = Path(tempfile.mkdtemp(prefix="rota-scale-"))
    per_worker = max(1, args.slots // args.workers)
    d = Deployment(
        tmp,
        nats_nodes=args.nats,
        database=args.db,
        env={"ROTA_PYTHON_POOL_SIZE": "1", "ROTA_SHUTDOWN_GRACE_SECONDS": "2"},
    )
    d.start()
    try:
        d.add_server()
        leads = [d.add_worker(f"lead{i}", roles="lead", name=f"lead-{i}") for i in (1, 2)]
        for i in range(args.workers):
            d.add_worker(f"exec{i % 10}", capacity=per_worker)
        with d.client() as c:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                active = c.get("/workers", params={"scope": "active"}).json()["items"]
                if len(active) == args.workers + 2 and c.get("/leader").json()["leader"]:
                    break
                time.sleep(1)
            else:
                raise SystemExit(f"only {len(active)} workers came up")
            leader_id = c.get("/leader").json()["leader"]["worker_id"]
            leader_pid = next(w["pid"] for w in active if w["worker_id"] == leader_id)
            r = c.post(
                "/jobs",
                json={"name": "noop", "kind": "python", "target": "rota.contrib.examples:noop"},
            )
            assert r.status_code == 201, r.text
        time.sleep(5)  # start-up writes settle

        def nats_msgs() -> int:
            return sum(v["in_msgs"] + v["out_msgs"] for v in (d.nats.varz(n) for n in d.nats.nodes))

        cpu0, msgs0, t0 = cpu_seconds(leader_pid), nats_msgs(), time.monotonic()
        time.sleep(args.idle)
        elapsed = time.monotonic() - t0
        idle_cpu = 100 * (cpu_seconds(leader_pid) - cpu0) / elapsed
        idle_msgs = (nats_msgs() - msgs0) / elapsed
        pids = [p.pid for p in d.procs.values()]
        pids += [n.process.pid for n in d.nats.nodes.values() if n.process]
        every = sorted({q for p in pids for q in tree(p)})
        idle_rss = sum(rss_mb(p) for p in every)

        os.environ.update({k: v for k, v in d.env().items() if k.startswith("ROTA_")})
        os.environ["DJANGO_SETTINGS_MODULE"] = "rota.standalone.settings"
        import django

        django.setup()
        from throughput import submit_and_wait

        submitted, completed, took = asyncio.run(submit_and_wait(args.runs, 1000))
        every = sorted({q for p in pids for q in tree(p)})
        loaded_rss = sum(rss_mb(p) for p in every)
        return {
            "workers": args.workers,
            "nats": args.nats,
            "db": args.db,
            "slots": per_worker * args.workers,
            "leader_idle_cpu_pct": round(idle_cpu, 2),
            "nats_idle_msgs_per_s": round(idle_msgs, 1),
            "idle_rss_mb": round(idle_rss),
            "loaded_rss_mb": round(loaded_rss),
            "runs": args.runs,
            "submitted_per_s": round(submitted),
            "completed_per_s": round(completed),
            "leads": leads,
        }
    finally:
        d.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="*", default=[2, 50])
    ap.add_argument("--nats", type=int, nargs="*", default=[1, 3])
    ap.add_argument("--db", nargs="*", default=["sqlite", "postgres"])
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--slots", type=int, default=100, help="run slots in total")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds measured at idle")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one_args = argparse.Namespace(**{**vars(args)})
        one_args.workers, one_args.nats, one_args.db = args.workers[0], args.nats[0], args.db[0]
        print("RESULT " + json.dumps(one(one_args)), flush=True)
        return 0
    rows = []
    for workers, nats, db in itertools.product(args.workers, args.nats, args.db):
        print(f"== {workers} execute workers, {nats} NATS node(s), {db}", flush=True)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                "--workers",
                str(workers),
                "--nats",
                str(nats),
                "--db",
                db,
                "--runs",
                str(args.runs),
                "--slots",
                str(args.slots),
                "--idle",
                str(args.idle),
            ],
            capture_output=True,
            text=True,
        )
        result = next(
            (json.loads(x[7:]) for x in out.stdout.splitlines() if x.startswith("RESULT ")), None
        )
        if result is None:
            print(out.stdout[-2000:], out.stderr[-3000:], sep="\n")
            continue
        print(json.dumps(result), flush=True)
        rows.append(result)
    cols = [
        ("workers", "exec"),
        ("nats", "nats"),
        ("db", "db"),
        ("leader_idle_cpu_pct", "leader idle %cpu"),
        ("nats_idle_msgs_per_s", "NATS idle msg/s"),
        ("idle_rss_mb", "idle RSS MB"),
        ("loaded_rss_mb", "loaded RSS MB"),
        ("submitted_per_s", "submitted/s"),
        ("completed_per_s", "completed/s"),
    ]
    print("\n" + " | ".join(h for _, h in cols))
    for r in rows:
        print(" | ".join(str(r[k]) for k, _ in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
