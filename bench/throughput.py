"""End-to-end throughput of the run path.

Starts a real `rota up` (nats-server, SQLite, web server, one worker) in a
temporary data dir, adds W-1 more workers the way an operator would (from
rota.env), defines a no-op `python` job, submits N runs and waits until all N are
SUCCEEDED in SQL. Prints submitted/s, completed/s and the resident memory of
every process (idle and after the run).

Runs are submitted through the run service in batches (the path every creator
uses: SQL insert, KV snapshot, dispatch), from this process; `--http N` also
measures N single submissions over HTTP with a few concurrent clients.

    python bench/throughput.py --runs 20000 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def describe(pid: int) -> str:
    cmd = _cmdline(pid)
    if "resource_tracker" in cmd:
        return "multiprocessing resource tracker"
    if "forkserver" in cmd:
        # Pool children are forked by the forkserver and share its command line.
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return "python pool child" if "forkserver" in _cmdline(ppid) else "python pool forkserver"
    for key in ("nats-server", "rota server", "rota worker", "rota up"):
        if key in cmd:
            return key
    return cmd[:60] or "?"


def memory_report(label: str, pids: list[int]) -> None:
    print(f"resident memory ({label}):")
    for pid in pids:
        print(f"  {pid:>7}  {rss_mb(pid):7.1f} MB  {describe(pid)}")


async def submit_and_wait(n: int, batch: int) -> tuple[float, float, float]:
    """Submit n runs of job `noop` in batches; wait until all are SUCCEEDED in SQL."""
    from rota.bus.connection import connect
    from rota.conf import reload_settings
    from rota.models import JobDefinition, JobRun
    from rota.runs.service import RunRequest, RunService

    bus = await connect(reload_settings(), name="rota-bench")
    service = RunService(bus)
    job = await JobDefinition.objects.aget(name="noop")
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        await service.submit_many([RunRequest(job=job) for _ in range(min(batch, n - i))])
    t_sub = time.perf_counter() - t0
    last_report = 0.0
    while True:
        done = await JobRun.objects.filter(job_name="noop", state="SUCCEEDED").acount()
        elapsed = time.perf_counter() - t0
        if done >= n:
            break
        if elapsed - last_report > 5:
            last_report = elapsed
            print(f"  ... {done} SUCCEEDED after {elapsed:.0f}s", flush=True)
        if elapsed > 600:
            raise SystemExit(f"only {done} of {n} runs SUCCEEDED after 600s")
        await asyncio.sleep(0.2)
    await bus.close()
    return n / t_sub, n / elapsed, elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2, help="workers in total (rota up's + added)")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument(
        "--http", type=int, default=1000, help="single HTTP submissions to time (0: skip)"
    )
    ap.add_argument("--capacity", type=int, default=64)
    ap.add_argument(
        "--sync-interval",
        default="",
        help="JetStream fsync interval of rota up's nats-server (always, 2m, ...; default: rota's)",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rota-bench-"))
    from tests.e2e.conftest import descendants, start_stack, stop_stack

    up_args = ["--sync-interval", args.sync_interval] if args.sync_interval else []
    stack = start_stack(tmp, *up_args, env={"ROTA_WORKER_CAPACITY": str(args.capacity)})
    env = stack.env()
    env["ROTA_WORKER_CAPACITY"] = str(args.capacity)
    extra = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rota",
                "worker",
                "--node-id",
                f"bench{i}",
                "--roles",
                "execute",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(args.workers - 1)
    ]
    try:
        time.sleep(3)
        pids = [stack.proc.pid] + descendants(stack.proc.pid) + [p.pid for p in extra]
        for p in extra:
            pids += descendants(p.pid)
        memory_report("idle", pids)
        c = stack.client
        r = c.post(
            "/jobs", json={"name": "noop", "kind": "python", "target": "rota.contrib.examples:noop"}
        )
        assert r.status_code == 201, r.text

        os.environ.update({k: v for k, v in env.items() if k.startswith("ROTA_")})
        os.environ["DJANGO_SETTINGS_MODULE"] = "rota.standalone.settings"
        import django

        django.setup()
        submitted_s, completed_s, elapsed = asyncio.run(submit_and_wait(args.runs, args.batch))
        print(
            f"runs={args.runs} workers={args.workers} capacity={args.capacity} "
            f"sync_interval={args.sync_interval or 'default'}"
        )
        print(f"submitted/s: {submitted_s:,.0f}")
        print(
            f"completed/s: {completed_s:,.0f}  (all {args.runs} SUCCEEDED in SQL after {elapsed:.1f}s)"
        )
        pids = [stack.proc.pid] + descendants(stack.proc.pid) + [p.pid for p in extra]
        for p in extra:
            pids += descendants(p.pid)
        memory_report("after the run, with the python pools' children", sorted(set(pids)))

        if args.http:
            import httpx

            async def http_submit() -> float:
                async with httpx.AsyncClient(
                    base_url=stack.url,
                    headers={"Authorization": f"Bearer {stack.token}"},
                    timeout=30,
                ) as ac:
                    sem = asyncio.Semaphore(16)

                    async def one() -> None:
                        async with sem:
                            resp = await ac.post("/runs", json={"job": "noop"})
                            assert resp.status_code == 201, resp.text

                    t0 = time.perf_counter()
                    await asyncio.gather(*(one() for _ in range(args.http)))
                    return args.http / (time.perf_counter() - t0)

            print(
                f"HTTP POST /runs (16 concurrent, one server process): {asyncio.run(http_submit()):,.0f}/s"
            )
    finally:
        for p in extra:
            p.send_signal(signal.SIGTERM)
        for p in extra:
            p.wait(30)
        stop_stack(stack)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
