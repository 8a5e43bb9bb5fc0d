"""The chaos harness: a real deployment, load, a fault plan, a history, a checker.

    python bench/chaos.py --duration 120                # the CI version (2 minutes)
    python bench/chaos.py --duration 900 --fault-every 3 --rate 6   # the SLO run

It starts a deployment (:class:`Deployment`; :class:`LocalDeployment` is one
nats-server, the web server and N lead-capable plus M execute-only workers on
this machine), then, for ``--duration`` seconds:

- submits runs of a job at ``--rate`` per second, each with an Idempotency-Key;
  a submission that got no answer is sent again with the same key until
  acknowledged (200/201);
- keeps a per-minute schedule of another job;
- applies the fault plan every ``--fault-every`` seconds, in turn: SIGKILL of
  the leader, SIGKILL of an execute worker, SIGKILL of a standby, SIGSTOP of the
  leader past its lease then SIGCONT; a killed process is started again at once.

Every execution writes ``start``/``end`` lines (run, attempt, worker, time)
from inside the job. When the load stops, the harness waits for every run to
end, then checks the history:

- 0 acknowledged submissions lost (each has its run, SUCCEEDED);
- 0 schedule ticks fired twice, none missing between the first and last;
- at most one execution per (run, attempt) and never two attempts of a run at
  once unless the earlier one's worker had been killed (every re-execution
  declared: attempt > 1);
- every run whose worker was killed re-dispatched (taken away and published
  again: its ORPHANED event) within the bound (``--bound``, default 10 s: the
  heartbeat TTL + the confirm window, 6.6 s with the defaults, plus margin).

It prints the failover figures (takeover after a leader kill; re-dispatch, and
restart (the next attempt's process start) after a kill of the run's worker;
SQL lag behind KV after a leader kill: p50/p99/max) and exits 1 on any
violation. ``--json`` writes them as JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


# -- the deployment -----------------------------------------------------------------


class Deployment:
    """What the harness needs from a deployment. Roles: ``lead`` (lead-capable
    workers), ``execute`` (execute-only workers); implementations may add
    ``nats`` and ``server``. An implementation must:

    - ``start()``: bring everything up and return once the API answers and a
      leader is elected;
    - ``kill(role, index, sig)``: deliver ``sig`` to that process (SIGKILL,
      SIGSTOP, SIGCONT, SIGTERM); ``restart(role, index)`` starts a fresh
      process in its place (a new worker id, as any restarted worker);
    - ``pid(role, index)`` and ``count(role)``;
    - ``api()``: an authenticated httpx client of the web server;
    - ``stop()``: stop everything; idempotent.
    """

    def start(self) -> None:
        raise NotImplementedError

    def kill(self, role: str, index: int, sig: int = signal.SIGKILL) -> None:
        raise NotImplementedError

    def restart(self, role: str, index: int) -> None:
        raise NotImplementedError

    def pid(self, role: str, index: int) -> int:
        raise NotImplementedError

    def count(self, role: str) -> int:
        raise NotImplementedError

    def api(self) -> httpx.Client:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTA_", "DJANGO_"))}
    env.update(extra)
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalDeployment(Deployment):
    """`rota up --no-worker` (nats-server, migrations, web server) and workers
    started as an operator would: ``leads`` lead-capable ones, each on its own
    node id (each its node's subleader, so each a candidate), and ``executes``
    execute-only ones."""

    def __init__(self, workdir: Path, *, leads: int = 3, executes: int = 2, capacity: int = 8):
        self.workdir = workdir
        self.roles = {"lead": leads, "execute": executes}
        self.capacity = capacity
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}
        self.up: subprocess.Popen | None = None
        self.url = ""
        self.token = ""
        self.env: dict[str, str] = {}
        self._client: httpx.Client | None = None

    def start(self) -> None:
        data = self.workdir / "data"
        port = _free_port()
        log = open(self.workdir / "up.log", "ab")  # noqa: SIM115 (kept open for the process)
        self.up = subprocess.Popen(
            [sys.executable, "-m", "rota", "up", "--data-dir", str(data), "--port", str(port)]
            + ["--no-worker"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_clean_env(ROTA_SHUTDOWN_GRACE_SECONDS="3"),
            cwd=self.workdir,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while b"rota is up" not in (self.workdir / "up.log").read_bytes():
            if self.up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rota up did not start; see {self.workdir / 'up.log'}")
            time.sleep(0.2)
        self.token = (data / "admin.token").read_text().strip()
        for line in (data / "rota.env").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                self.env[k] = v
        for role, n in self.roles.items():
            for i in range(n):
                self.restart(role, i)
        deadline = time.monotonic() + 60
        while not (self.api().get("/leader").json() or {}).get("leader"):
            if time.monotonic() > deadline:
                raise RuntimeError("no leader was elected within 60 s")
            time.sleep(0.2)

    def restart(self, role: str, index: int) -> None:
        node = f"lead{index}" if role == "lead" else f"exec{index}"
        roles = "execute,lead" if role == "lead" else "execute"
        argv = [sys.executable, "-m", "rota", "worker", "--node-id", node, "--roles", roles]
        argv += ["--capacity", str(self.capacity), "--tags", "default"]
        with open(self.workdir / f"{role}-{index}.log", "ab") as log:
            self.procs[(role, index)] = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_clean_env(**self.env, PYTHONPATH=str(ROOT)),
                cwd=self.workdir,
                start_new_session=True,
            )

    def kill(self, role: str, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[(role, index)]
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        if sig == signal.SIGKILL:
            proc.wait()

    def pid(self, role: str, index: int) -> int:
        return self.procs[(role, index)].pid

    def count(self, role: str) -> int:
        return self.roles.get(role, 0)

    def api(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
            )
        return self._client

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGTERM)
            try:
                self.up.wait(30)
            except subprocess.TimeoutExpired:
                self.up.kill()
        if self._client is not None:
            self._client.close()


# -- the history ----------------------------------------------------------------------


JOB_SCRIPT = """
import os, sys, time
h = sys.argv[1]
who = " ".join([os.environ["ROTA_RUN_ID"], os.environ["ROTA_ATTEMPT"], os.environ.get("ROTA_WORKER_ID", "?")])
with open(h, "a") as f:
    f.write(f"start {who} {time.time()}\\n")
time.sleep(float(sys.argv[2]))
with open(h, "a") as f:
    f.write(f"end {who} {time.time()}\\n")
"""


@dataclass
class Execution:
    run_id: str
    attempt: int
    worker: str
    start: float
    end: float | None = None


@dataclass
class Fault:
    at: float
    kind: str  # kill-leader, kill-worker, kill-standby, stop-leader
    worker: str  # the worker id it hit
    takeover: float | None = None  # leader faults: seconds until another leader
    sql_lag: float | None = None  # leader kills: seconds until SQL caught up with KV


@dataclass
class Report:
    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> run id
    faults: list[Fault] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)
    redispatch: list[float] = field(default_factory=list)
    restart: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    fires: list[str] = field(default_factory=list)

    def figures(self) -> dict:
        def stats(xs: list[float]) -> dict:
            if not xs:
                return {"n": 0}
            xs = sorted(xs)
            return {
                "n": len(xs),
                "p50": round(statistics.median(xs), 3),
                "p99": round(xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))], 3),
                "max": round(xs[-1], 3),
            }

        kinds = defaultdict(int)
        for f in self.faults:
            kinds[f.kind] += 1
        return {
            "submissions_acknowledged": len(self.acknowledged),
            "executions": len(self.executions),
            "faults": dict(kinds),
            "takeover_s": stats([f.takeover for f in self.faults if f.takeover is not None]),
            "redispatch_s": stats(self.redispatch),
            "restart_s": stats(self.restart),
            "sql_lag_s": stats([f.sql_lag for f in self.faults if f.sql_lag is not None]),
            "violations": len(self.violations),
        }


def read_history(path: Path) -> list[Execution]:
    runs: dict[tuple[str, int, str], Execution] = {}
    dupes: list[Execution] = []
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        kind, run_id, attempt, worker, at = parts
        key = (run_id, int(attempt), worker)
        if kind == "start":
            if key in runs:
                dupes.append(Execution(run_id, int(attempt), worker, float(at)))
            runs[key] = Execution(run_id, int(attempt), worker, float(at))
        elif kind == "end" and key in runs:
            runs[key].end = float(at)
    return list(runs.values()) + dupes


# -- the harness ----------------------------------------------------------------------


class Harness:
    def __init__(self, dep: Deployment, workdir: Path, args: argparse.Namespace) -> None:
        self.dep = dep
        self.workdir = workdir
        self.args = args
        self.history = workdir / "history"
        self.report = Report()
        self.rng = random.Random(args.seed)
        self.stop_load = threading.Event()
        self.lock = threading.Lock()

    # -- setup and load

    def define(self) -> None:
        api = self.dep.api()
        job = {
            "name": "chaos",
            "kind": "command",
            "target": sys.executable,
            "args": ["-c", JOB_SCRIPT, str(self.history), str(self.args.job_seconds)],
            "max_attempts": 20,
            # A job process that crashes (a signal, a non-zero exit) is retried:
            # the job's own failure is not what the harness checks.
            "retry_backoff_seconds": 0.5,
            "retry": {"exit_codes": "any", "jitter": 0},
        }
        r = api.post("/jobs", json=job)
        if r.status_code not in (201, 409):
            raise RuntimeError(r.text)
        tick = {**job, "name": "chaos-tick", "args": ["-c", JOB_SCRIPT, str(self.history), "0.1"]}
        api.post("/jobs", json=tick)
        r = api.post(
            "/schedules",
            json={
                "task_name": "chaos-tick",
                "cron_expression": "* * * * *",
                "catch_up_seconds": 3600,
            },
        )
        if r.status_code not in (200, 201):
            raise RuntimeError(r.text)
        self.schedule_id = r.json()["id"]

    def submit_loop(self) -> None:
        with httpx.Client(
            base_url=self.dep.api().base_url, headers=self.dep.api().headers, timeout=10
        ) as api:
            interval = 1.0 / self.args.rate
            next_at = time.monotonic()
            while not self.stop_load.is_set():
                key = uuid.uuid4().hex
                while True:  # the same key until acknowledged
                    try:
                        r = api.post(
                            "/runs", json={"job": "chaos"}, headers={"Idempotency-Key": key}
                        )
                        if r.status_code in (200, 201):
                            with self.lock:
                                self.report.acknowledged[key] = r.json()["run_id"]
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.2)
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    # -- faults

    def leader(self) -> dict:
        try:
            return self.dep.api().get("/leader").json() or {}
        except (httpx.HTTPError, ValueError):
            return {}

    def worker_ids(self) -> dict[int, str]:
        items = self.dep.api().get("/workers", params={"scope": "all"}).json()["items"]
        return {w["pid"]: w["worker_id"] for w in items if w["state"] != "STOPPED_GRACEFUL"}

    def slot_of(self, worker_id: str) -> tuple[str, int] | None:
        ids = self.worker_ids()
        for role in ("lead", "execute"):
            for i in range(self.dep.count(role)):
                if ids.get(self.dep.pid(role, i)) == worker_id:
                    return role, i
        return None

    def wait_new_leader(self, old: str, t0: float) -> float | None:
        deadline = t0 + 30
        while time.monotonic() < deadline:
            lead = self.leader().get("leader")
            if lead and lead["worker_id"] != old:
                return time.monotonic() - t0
            time.sleep(0.05)
        self.report.violations.append(f"no new leader within 30 s after {old} was hit")
        return None

    def sql_lag(self, t0: float, seen: dict[str, int]) -> float | None:
        """Seconds from ``t0`` until SQL has every run version KV had at ``t0``."""
        deadline = t0 + 60
        while time.monotonic() < deadline:
            try:
                items = self.dep.api().get("/runs", params={"job": "chaos", "limit": 500}).json()
                sql = {i["run_id"]: i["version"] for i in items["items"]}
                if all(sql.get(r, -1) >= v for r, v in seen.items()):
                    return time.monotonic() - t0
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        self.report.violations.append("SQL did not catch up with KV within 60 s of a leader kill")
        return None

    def kv_versions(self, n: int = 20) -> dict[str, int]:
        with self.lock:
            recent = list(self.report.acknowledged.values())[-n:]
        out = {}
        for run_id in recent:
            try:
                out[run_id] = self.dep.api().get(f"/runs/{run_id}").json()["version"]
            except (httpx.HTTPError, ValueError, KeyError):
                pass
        return out

    def fault(self, kind: str) -> None:
        lead = self.leader().get("leader") or {}
        leader_id = lead.get("worker_id", "")
        if kind in ("kill-leader", "stop-leader"):
            target = self.slot_of(leader_id)
            victim = leader_id
        elif kind == "kill-standby":
            ids = self.worker_ids()
            standbys = [
                i
                for i in range(self.dep.count("lead"))
                if ids.get(self.dep.pid("lead", i)) not in (None, leader_id)
            ]
            if not standbys:
                return
            target = ("lead", self.rng.choice(standbys))
            victim = ids[self.dep.pid(*target)]
        else:
            i = self.rng.randrange(self.dep.count("execute"))
            target = ("execute", i)
            victim = self.worker_ids().get(self.dep.pid(*target), "")
        if target is None or not victim:
            return
        seen = self.kv_versions() if kind == "kill-leader" else {}
        t0 = time.monotonic()
        fault = Fault(at=time.time(), kind=kind, worker=victim)
        if kind == "stop-leader":
            self.dep.kill(*target, sig=signal.SIGSTOP)
            fault.takeover = self.wait_new_leader(victim, t0)
            time.sleep(1.0)
            self.dep.kill(*target, sig=signal.SIGCONT)
        else:
            self.dep.kill(*target, sig=signal.SIGKILL)
            self.dep.restart(*target)
            if kind == "kill-leader":
                fault.takeover = self.wait_new_leader(victim, t0)
                fault.sql_lag = self.sql_lag(t0, seen)
        self.report.faults.append(fault)

    # -- the run and the check

    def run(self) -> Report:
        self.define()
        loader = threading.Thread(target=self.submit_loop, daemon=True)
        loader.start()
        started = time.monotonic()
        plan = self.args.plan.split(",")
        if not self.args.sigstop:
            plan = [k for k in plan if k != "stop-leader"]
        n = 0
        while time.monotonic() - started < self.args.duration:
            time.sleep(self.args.fault_every)
            kind = plan[n % len(plan)]
            n += 1
            try:
                self.fault(kind)
            except Exception as exc:  # the harness must go on and report
                self.report.violations.append(f"fault {kind} failed: {exc!r}")
            done = self.report.figures()["faults"]
            print(f"  {time.monotonic() - started:6.1f}s faults so far: {done}", flush=True)
        self.stop_load.set()
        loader.join(30)
        self.wait_terminal()
        self.check()
        return self.report

    def wait_terminal(self) -> None:
        deadline = time.monotonic() + self.args.drain_seconds
        pending = set(self.report.acknowledged.values())
        while pending and time.monotonic() < deadline:
            for run_id in list(pending):
                try:
                    state = self.dep.api().get(f"/runs/{run_id}").json()["state"]
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
                if state in ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"):
                    pending.discard(run_id)
            time.sleep(0.5)

    def taken_away_at(self, run_id: str, attempt: int) -> float | None:
        return self.event_at(run_id, attempt, ("ORPHANED", "FAILED"))

    def event_at(self, run_id: str, attempt: int, names: tuple[str, ...]) -> float | None:
        events = self.dep.api().get(f"/runs/{run_id}").json().get("events") or []
        return next(
            (e["at"] for e in events if e.get("event") in names and e.get("attempt") == attempt),
            None,
        )

    def check(self) -> None:
        rep = self.report
        api = self.dep.api()
        execs = read_history(self.history)
        rep.executions = execs
        by_run: dict[str, list[Execution]] = defaultdict(list)
        for e in execs:
            by_run[e.run_id].append(e)

        # 0 acknowledged submissions lost; each ended SUCCEEDED.
        for key, run_id in rep.acknowledged.items():
            try:
                run = api.get(f"/runs/{run_id}").json()
            except (httpx.HTTPError, ValueError):
                run = {}
            if run.get("state") != "SUCCEEDED":
                rep.violations.append(f"run {run_id} (key {key}) ended {run.get('state')!r}")

        # Executions: one per (run, attempt); attempts never overlap unless the
        # earlier one's worker was killed or paused (SIGSTOP) in between: its
        # job process may outlive (or outrun) it, and the next attempt is declared.
        hits: dict[str, list[Fault]] = defaultdict(list)
        for f in rep.faults:
            hits[f.worker].append(f)
        for run_id, runs in by_run.items():
            attempts = defaultdict(list)
            for e in runs:
                attempts[e.attempt].append(e)
            for attempt, same in attempts.items():
                if len(same) > 1:
                    rep.violations.append(
                        f"run {run_id} attempt {attempt} executed {len(same)} times (undeclared)"
                    )
            ordered = sorted(runs, key=lambda e: (e.attempt, e.start))
            for a, b in zip(ordered, ordered[1:], strict=False):
                hit = [f for f in hits[a.worker] if a.start - 0.5 <= f.at <= b.start]
                a_end = a.end
                if a_end is None:  # a job process that crashed: its failure was recorded
                    a_end = self.event_at(run_id, a.attempt, ("ATTEMPT_FAILED",))
                overlapped = a_end is None or a_end > b.start
                if overlapped and not hit:
                    rep.violations.append(
                        f"run {run_id}: attempts {a.attempt} and {b.attempt} ran at once "
                        f"though worker {a.worker} was not hit"
                    )
                kills = [f.at for f in hit if f.kind != "stop-leader"]
                if kills and a.end is None:
                    # Re-dispatch: from the kill of its worker to the run taken
                    # away and published again (its ORPHANED event); restart: to
                    # the next attempt's process start.
                    lost_at = min(kills)
                    rep.restart.append(b.start - lost_at)
                    taken = self.taken_away_at(run_id, a.attempt)
                    if taken is None:
                        rep.violations.append(f"run {run_id}: attempt {a.attempt} never taken away")
                        continue
                    rep.redispatch.append(taken - lost_at)
                    if taken - lost_at > self.args.bound:
                        rep.violations.append(
                            f"run {run_id}: attempt {a.attempt} taken away {taken - lost_at:.1f}s "
                            f"after its worker was killed (bound {self.args.bound}s)"
                        )

        # Schedule ticks: none twice, none missing.
        items = api.get("/runs", params={"schedule": self.schedule_id, "limit": 500}).json()
        ticks = sorted(i["scheduled_for"] for i in items["items"] if i["scheduled_for"])
        rep.fires = ticks
        if len(set(ticks)) != len(ticks):
            rep.violations.append(f"a schedule tick fired twice: {ticks}")
        from datetime import datetime

        stamps = [datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in ticks]
        for a, b in zip(stamps, stamps[1:], strict=False):
            if round(b - a) != 60:
                rep.violations.append(f"schedule ticks {a} and {b} are not a minute apart")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load and faults")
    p.add_argument("--rate", type=float, default=4.0, help="submissions per second")
    p.add_argument("--fault-every", type=float, default=8.0, help="seconds between faults")
    p.add_argument("--job-seconds", type=float, default=1.5, help="how long each run sleeps")
    p.add_argument("--leads", type=int, default=3, help="lead-capable workers")
    p.add_argument("--executes", type=int, default=2, help="execute-only workers")
    p.add_argument("--bound", type=float, default=10.0, help="re-dispatch bound, seconds")
    p.add_argument("--drain-seconds", type=float, default=120.0, help="wait for runs to end")
    p.add_argument(
        "--plan",
        default="kill-leader,kill-worker,kill-leader,kill-worker,kill-standby,stop-leader",
        help="the faults, in turn: kill-leader, kill-worker, kill-standby, stop-leader",
    )
    p.add_argument("--no-sigstop", dest="sigstop", action="store_false", help="no SIGSTOP faults")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--workdir", type=Path, default=None, help="keep logs and history here")
    p.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = p.parse_args(argv)
    kinds = {"kill-leader", "kill-worker", "kill-standby", "stop-leader"}
    if not args.plan or not set(args.plan.split(",")) <= kinds:
        p.error(f"--plan takes a comma-separated list of {', '.join(sorted(kinds))}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rota-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"chaos: working in {workdir}", flush=True)
    dep = LocalDeployment(workdir, leads=args.leads, executes=args.executes)
    try:
        dep.start()
        report = Harness(dep, workdir, args).run()
    finally:
        dep.stop()
    figures = report.figures()
    print(json.dumps(figures, indent=2))
    for v in report.violations[:50]:
        print("VIOLATION:", v)
    if args.json:
        args.json.write_text(json.dumps({**figures, "violations": report.violations}, indent=2))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
