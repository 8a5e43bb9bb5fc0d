"""Start lateness of scheduled runs: N every-minute schedules for M minutes.

Starts `rota up --no-worker` and W workers (capacity high enough to hold every
run of a tick, since assign-ahead claims them early), defines a no-op `python`
job, adds N schedules `* * * * *`, waits M ticks, then reads from SQL each run's
started_at minus its nominal time (scheduled_for) and prints p50, p99 and max,
and the runs per tick.

    python bench/schedule_lateness.py --schedules 1000 --minutes 3
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schedules", type=int, default=1000)
    ap.add_argument("--minutes", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from tests.e2e.conftest import start_stack, stop_stack

    tmp = Path(tempfile.mkdtemp(prefix="rota-lateness-"))
    stack = start_stack(tmp, "--no-worker")
    env = stack.env()
    capacity = str(args.schedules // args.workers + 50)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "rota", "worker", "--node-id", f"n{i}", "--capacity", capacity],
            env={**env, "ROTA_LOG_LEVEL": "WARNING"},
        )
        for i in range(args.workers)
    ]
    try:
        c = stack.client
        while not c.get("/leader").json().get("leader"):
            time.sleep(0.2)
        assert (
            c.post(
                "/jobs",
                json={"name": "noop", "kind": "python", "target": "rota.contrib.examples:noop"},
            ).status_code
            == 201
        )
        t0 = time.monotonic()
        for i in range(args.schedules):
            r = c.post(
                "/schedules",
                json={"task_name": "noop", "cron_expression": "* * * * *", "name": f"s{i}"},
            )
            assert r.status_code == 201, r.text
        print(f"{args.schedules} schedules created in {time.monotonic() - t0:.1f}s")
        # Whole ticks only: from the next minute on.
        first = (int(time.time()) // 60 + 1) * 60
        last = first + 60 * (args.minutes - 1)
        print(
            f"waiting for {args.minutes} ticks ({datetime.fromtimestamp(first)} .. {datetime.fromtimestamp(last)})"
        )
        time.sleep(max(0, last - time.time()) + 10)
        db = sqlite3.connect(stack.data_dir / "rota.sqlite3")
        rows = db.execute(
            "select scheduled_for, started_at, state from rota_jobrun where schedule_id is not null"
        ).fetchall()
        per_tick: dict[str, int] = {}
        lateness = []
        for scheduled, started, _state in rows:
            nominal = datetime.fromisoformat(scheduled).timestamp()
            if not first <= nominal <= last:
                continue
            per_tick[scheduled] = per_tick.get(scheduled, 0) + 1
            if started:
                lateness.append((datetime.fromisoformat(started).timestamp() - nominal) * 1000)
        lateness.sort()
        q = statistics.quantiles(lateness, n=100) if len(lateness) > 1 else [0] * 99
        print(f"runs per tick: {sorted(per_tick.values())}")
        print(
            f"start lateness over {len(lateness)} runs: p50 {q[49]:.1f} ms  p99 {q[98]:.1f} ms  "
            f"max {lateness[-1]:.1f} ms  min {lateness[0]:.1f} ms"
        )
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(60)
        stop_stack(stack)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
