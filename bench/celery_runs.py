"""Celery through rota, side by side with Celery alone, on one machine.

Starts Redis (broker and result backend), a Celery worker (prefork, -c 4) of
tests/celery/app.py, and `rota up --no-worker` plus one `rota worker` with the
celery executor (ROTA_CELERY_APP). Then:

1. throughput: N no-op tasks sent directly with `.delay()` and waited for with
   `.get()`, against N celery runs submitted through rota's API and waited for
   until SUCCEEDED in rota's database (runs/s, both end to end);
2. lateness: S per-minute schedules for M ticks, fired by rota's leader, against
   the same S per-minute PeriodicTasks fired by django-celery-beat's
   DatabaseScheduler (`celery beat`); each task writes the time its Celery worker
   started it, and lateness is that minus the tick's minute (p50, p99, max).

    python bench/celery_runs.py --runs 1000 --schedules 500 --minutes 3
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def quantiles(values: list[float]) -> str:
    values = sorted(values)
    q = statistics.quantiles(values, n=100) if len(values) > 1 else [values[0]] * 99
    return f"p50 {q[49]:.0f} ms  p99 {q[98]:.0f} ms  max {values[-1]:.0f} ms  (n={len(values)})"


def lateness(log: Path, first: float, last: float) -> tuple[list[float], dict[int, int]]:
    out, per_tick = [], {}
    for line in log.read_text().splitlines():
        started = float(line.split()[1])
        minute = int(started // 60) * 60
        if first <= minute <= last:
            out.append((started - minute) * 1000)
            per_tick[minute] = per_tick.get(minute, 0) + 1
    return out, per_tick


def wait_ticks(minutes: int) -> tuple[float, float]:
    first = (int(time.time()) // 60 + 1) * 60
    last = first + 60 * (minutes - 1)
    time.sleep(max(0, last - time.time()) + 20)
    return first, last


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--schedules", type=int, default=500)
    ap.add_argument("--minutes", type=int, default=3)
    args = ap.parse_args()
    from tests.celery.conftest import free_port
    from tests.e2e.conftest import start_stack, stop_stack

    tmp = Path(tempfile.mkdtemp(prefix="rota-celery-bench-"))
    port = free_port()
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{port}"
    os.environ["ROTA_TEST_REDIS_URL"] = redis_url
    base_env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}", "ROTA_LOG_LEVEL": "WARNING"}
    procs: list[subprocess.Popen] = []

    def spawn(argv: list[str], name: str, **env: str) -> subprocess.Popen:
        p = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**base_env, **env},
            stdout=(tmp / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(p)
        return p

    spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery.app",
            "worker",
            "--pool",
            "prefork",
            "-c",
            "4",
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        "celery-worker",
    )

    def cleanup() -> None:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        redis.kill()

    atexit.register(cleanup)  # whatever happens, nothing started here outlives the bench
    stack = start_stack(tmp, "--no-worker", timeout=240)
    try:
        from tests.celery.app import app, noop

        time.sleep(1)
        while not app.control.ping(timeout=0.5):
            pass
        spawn(
            [
                sys.executable,
                "-m",
                "rota",
                "worker",
                "--node-id",
                "bench",
                "--capacity",
                "16",
            ],
            "rota-worker",
            **stack.env(),
            ROTA_CELERY_APP="tests.celery.app:app",
        )
        c = stack.client
        while not c.get("/leader").json().get("leader"):  # the worker leads
            time.sleep(0.2)
        n = args.runs

        # 1. throughput
        if n:  # --runs 0 skips it
            noop.delay(0).get(timeout=30)  # warm
            # Completion is read the way rota's worker reads it (one MGET per
            # poll), not with n sequential .get() calls, which measure the waiting.
            from rota.worker.executors.celery import TaskFollower

            follower = TaskFollower(app, 0.1)
            t0 = time.monotonic()
            ids = [noop.delay(i).id for i in range(n)]
            sent = time.monotonic() - t0
            while sum(m["status"] == "SUCCESS" for m in follower.read(ids)) < n:
                time.sleep(0.1)
            direct = n / (time.monotonic() - t0)
            assert (
                c.post(
                    "/jobs", json={"name": "noop", "kind": "celery", "target": "rt.noop"}
                ).status_code
                == 201
            )
            c.post("/runs", json={"job": "noop", "params": {"i": 0}})
            db = sqlite3.connect(stack.data_dir / "rota.sqlite3", timeout=30)

            def done() -> int:
                return db.execute(
                    "select count(*) from rota_jobrun where job_name='noop' and state='SUCCEEDED'"
                ).fetchone()[0]

            while done() < 1:
                time.sleep(0.1)
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda i: c.post("/runs", json={"job": "noop", "params": {"i": i}}),
                        range(n),
                    )
                )
            submitted = time.monotonic() - t0
            while done() < n + 1:
                time.sleep(0.1)
            through_rota = n / (time.monotonic() - t0)
            print(f"throughput, {n} no-op tasks, end to end:")
            print(
                f"  direct .delay(), until SUCCESS:  {direct:7.0f} tasks/s (sending alone took {sent:.1f}s)"
            )
            print(
                f"  through rota (API → SUCCEEDED):  {through_rota:7.0f} runs/s "
                f"(submitting alone took {submitted:.1f}s)"
            )

        # 2. lateness, rota's leader
        s = args.schedules
        rota_log = tmp / "rota-ticks.log"
        assert (
            c.post(
                "/jobs", json={"name": "rt.tick", "kind": "celery", "target": "rt.tick"}
            ).status_code
            == 201
        )
        for i in range(s):
            r = c.post(
                "/schedules",
                json={
                    "task_name": "rt.tick",
                    "cron_expression": "* * * * *",
                    "name": f"s{i}",
                    "task_params": {"log": str(rota_log)},
                },
            )
            assert r.status_code == 201, r.text
        first, last = wait_ticks(args.minutes)
        ours, ours_ticks = lateness(rota_log, first, last)
        with contextlib.suppress(httpx.HTTPError):  # the stack stops next anyway
            c.patch("/jobs/rt.tick", json={"enabled": False})
    finally:
        stop_stack(stack)

    # 3. lateness, django-celery-beat
    beat_db = tmp / "beat.sqlite3"
    dcb_log = tmp / "dcb-ticks.log"
    setup = subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import celery_app, json
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django_celery_beat.models import CrontabSchedule, PeriodicTask
cron = CrontabSchedule.objects.create(minute="*", hour="*", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC")
PeriodicTask.objects.bulk_create([PeriodicTask(name=f"s{{i}}", task="rt.tick", crontab=cron, kwargs=json.dumps({{"log": {str(dcb_log)!r}}})) for i in range({s})])
""",
        ],
        cwd=ROOT / "bench",
        env={**base_env, "ROTA_BENCH_BEAT_DB": str(beat_db)},
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, setup.stderr
    spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "beat",
            "-S",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "-l",
            "WARNING",
        ],
        "dcb-beat",
        ROTA_BENCH_BEAT_DB=str(beat_db),
    )
    try:
        first2, last2 = wait_ticks(args.minutes)
        theirs, their_ticks = lateness(dcb_log, first2, last2)
    finally:
        cleanup()
    print(
        f"lateness of {s} per-minute schedules over {args.minutes} ticks, tick → Celery worker start:"
    )
    print(
        f"  rota's leader:                     {quantiles(ours)}  per tick {sorted(ours_ticks.values())}"
    )
    print(
        f"  django-celery-beat DatabaseScheduler: {quantiles(theirs)}  per tick {sorted(their_ticks.values())}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
