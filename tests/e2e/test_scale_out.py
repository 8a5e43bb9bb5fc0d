"""rota as the distributed system it says it is: three nats-servers clustered on
loopback, PostgreSQL, two web servers, two lead-capable and two execute-only
workers. Under a steady load of submissions (half to each server) the NATS node
that leads the work queue is SIGKILLed, then the JetStream meta leader, then
rota's leader, each started again. Nothing acknowledged is lost, nothing runs
twice undeclared, every run ends, the schedule fires once a minute, and the
killed nodes catch up."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from rota.bus import subjects
from tests.conftest import CI
from tests.deployment import (
    Deployment,
    NatsCluster,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
)
from tests.e2e.conftest import start_stack, stop_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "SKIPPED"}


def history_script(log: Path) -> str:
    """A job that writes its run id and attempt when it starts and when it ends."""
    return (
        "import os,time\n"
        "p=os.environ['ROTA_RUN_ID']+' '+os.environ['ROTA_ATTEMPT']\n"
        f"open({str(log)!r},'a').write(f'start {{p}} {{time.time()}}\\n')\n"
        "time.sleep(0.2)\n"
        f"open({str(log)!r},'a').write(f'end {{p}} {{time.time()}}\\n')\n"
    )


@pytest.fixture
def deployment(tmp_path):
    if not postgres_available():
        if CI:
            pytest.fail("PostgreSQL is required in CI")
        pytest.skip("PostgreSQL unavailable")
    d = Deployment(
        tmp_path, nats_nodes=3, database="postgres", env={"ROTA_SHUTDOWN_GRACE_SECONDS": "2"}
    )
    d.start()
    try:
        d.add_server()
        d.add_server()
        d.add_worker("n1", roles="lead,execute", name="lead-1")
        d.add_worker("n2", roles="lead,execute", name="lead-2")
        d.add_worker("n3", name="exec-1")
        d.add_worker("n3", name="exec-2")
        with d.client() as c:
            wait_for(
                lambda: (
                    len(c.get("/workers", params={"scope": "active"}).json()["items"]) == 4
                    and c.get("/leader").json()["leader"]
                ),
                timeout=60,
            )
        yield d
    finally:
        d.stop()


class Load:
    """Submissions at a steady rate, alternating between the servers, each with
    its own Idempotency-Key, repeated with the same key until acknowledged."""

    def __init__(self, d: Deployment, job: str, rate: float) -> None:
        self.d, self.job, self.rate = d, job, rate
        self.acked: dict[str, str] = {}  # idempotency key -> run id
        self.retries = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        clients = [self.d.client(i) for i in range(len(self.d.servers))]
        n = 0
        while not self.stop.is_set():
            key = str(uuid.uuid4())
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                c = clients[n % len(clients)]
                n += 1
                try:
                    r = c.post("/runs", json={"job": self.job}, headers={"Idempotency-Key": key})
                    if r.status_code in (200, 201):
                        self.acked[key] = r.json()["run_id"]
                        break
                except httpx.HTTPError:
                    pass
                self.retries += 1
                time.sleep(0.2)
            else:
                raise AssertionError(f"submission {key} not acknowledged within 90 s")
            self.stop.wait(1 / self.rate)
        for c in clients:
            c.close()

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(120)


def _all_runs(c: httpx.Client, **filters: object) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        page = c.get("/runs", params={**filters, "limit": 500, "cursor": cursor}).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def _leaders_current(d: Deployment) -> bool:
    streams = [
        subjects.WORK_STREAM,
        f"KV_{subjects.RUNS_BUCKET}",
        f"KV_{subjects.LEASES_BUCKET}",
        f"KV_{subjects.HEARTBEATS_BUCKET}",
    ]
    for stream in streams:
        info = d.nats.stream_info(stream, d.token)
        cluster = info.cluster
        if not cluster or not cluster.leader or len(cluster.replicas or []) != 2:
            return False
        if not all(r.current and not r.offline and not r.lag for r in cluster.replicas):
            return False
    return True


@pytest.mark.timeout(600)
def test_node_meta_leader_and_rota_leader_kills_lose_nothing(deployment, tmp_path):
    d = deployment
    log = tmp_path / "history"
    ticks = tmp_path / "ticks"
    with d.client() as c:
        for name, target in (("load", log), ("tick", ticks)):
            r = c.post(
                "/jobs",
                json={
                    "name": name,
                    "kind": "command",
                    "target": sys.executable,
                    "args": ["-c", history_script(target)],
                    "max_attempts": 8,
                },
            )
            assert r.status_code == 201, r.text
        # Every rota resource is R3 on a three-node cluster, without a setting.
        assert d.nats.stream_info(subjects.WORK_STREAM, d.token).config.num_replicas == 3
        assert d.nats.stream_info(f"KV_{subjects.RUNS_BUCKET}", d.token).config.num_replicas == 3
        r = c.post(
            "/schedules",
            json={"task_name": "tick", "structured": {"every": "minutes", "n": 1}},
        )
        assert r.status_code == 201, r.text
        schedule_id = r.json()["id"]
        created = dt.datetime.now(dt.UTC)

    faults: list[str] = []
    with d.client() as c:
        epoch0 = c.get("/leader").json()["epoch"]
    with Load(d, "load", rate=8) as load:
        time.sleep(8)
        # 1. The node that leads the work queue.
        victim = d.nats.stream_info(subjects.WORK_STREAM, d.token).cluster.leader
        d.nats.kill(victim)
        faults.append(f"nats {victim} (ROTA_WORK leader)")
        time.sleep(8)
        d.nats.restart(victim)
        wait_for(lambda: _leaders_current(d), timeout=60, interval=0.5)
        time.sleep(4)
        # 2. The JetStream meta leader.
        victim = d.nats.wait_for_meta_leader()
        d.nats.kill(victim)
        faults.append(f"nats {victim} (meta leader)")
        time.sleep(8)
        d.nats.restart(victim)
        wait_for(lambda: _leaders_current(d), timeout=60, interval=0.5)
        time.sleep(4)
        # The lease held through the node losses, or moved as on one node: one
        # leader, a new epoch for each move, at most one per lost node.
        with d.client(1) as c:
            epoch1 = c.get("/leader").json()["epoch"]
        assert epoch0 <= epoch1 <= epoch0 + 2, (epoch0, epoch1)
        # 3. rota's leader: its worker process, started again on its node.
        with d.client(1) as c:
            leader = c.get("/leader").json()["leader"]
            workers = c.get("/workers", params={"scope": "all"}).json()["items"]
        pid = next(w["pid"] for w in workers if w["worker_id"] == leader["worker_id"])
        name = d.name_of_pid(pid)
        assert name, (leader, workers)
        d.kill(name)
        faults.append(f"rota leader {name}")
        time.sleep(3)
        d.add_worker(leader["node_id"], roles="lead,execute")
        time.sleep(8)
        with d.client() as c:
            after = c.get("/leader").json()
        assert after["leader"] and after["leader"]["worker_id"] != leader["worker_id"], after
        assert after["epoch"] > epoch1
    acked = dict(load.acked)
    assert len(acked) >= 100, f"only {len(acked)} submissions acknowledged"

    with d.client() as c:
        # Every acknowledged submission is one run, and every run ends.
        pending: dict[str, dict] = {}

        def all_terminal():
            states = {}
            pending.clear()
            for run_id in set(acked.values()):
                run = c.get(f"/runs/{run_id}").json()
                states[run_id] = run["state"]
                if run["state"] not in TERMINAL:
                    pending[run_id] = run
            return None if pending else states

        try:
            states = wait_for(all_terminal, timeout=120, interval=1)
        except AssertionError:
            raise AssertionError(
                f"{len(pending)} runs never ended: {list(pending.values())[:3]}"
            ) from None
        assert len(set(acked.values())) == len(acked), "two keys got one run"
        assert set(states.values()) == {"SUCCEEDED"}, {
            k: v for k, v in states.items() if v != "SUCCEEDED"
        }
        listed = _all_runs(c, job="load")
        assert sorted(i["run_id"] for i in listed) == sorted(acked.values())

        # Once a minute, each minute once (from the first whole minute after creation).
        fired = _all_runs(c, schedule=schedule_id)
    minutes = sorted(i["scheduled_for"] for i in fired)
    assert len(minutes) == len(set(minutes)), f"a tick fired twice: {minutes}"
    first = (created + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    expected = []
    t = first
    while t + dt.timedelta(seconds=5) < dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30):
        expected.append(t)
        t += dt.timedelta(minutes=1)
    got = {dt.datetime.fromisoformat(m.replace("Z", "+00:00")) for m in minutes}
    assert set(expected) <= got, f"missing fires: {sorted(set(expected) - got)}"

    # No attempt ran twice; a later attempt only after the earlier one ended or died.
    starts: dict[tuple[str, int], float] = {}
    for line in log.read_text().splitlines():
        kind, run_id, attempt, ts = line.split()
        if kind == "start":
            assert (run_id, int(attempt)) not in starts, f"{run_id} attempt {attempt} ran twice"
            starts[(run_id, int(attempt))] = float(ts)
    ran = {run_id for run_id, _ in starts}
    assert ran == set(acked.values())
    redone = sorted(k for k in starts if k[1] > 1)

    # The killed nodes caught up: every replica current, no lag.
    wait_for(lambda: _leaders_current(d), timeout=60, interval=0.5)
    print(
        f"\nscale-out: {len(acked)} acknowledged ({load.retries} retried submissions), "
        f"faults {faults}, epochs {epoch0}->{epoch1}->{after['epoch']}, "
        f"{len(redone)} declared re-executions, "
        f"{len(minutes)} schedule fires"
    )


def test_web_servers_are_interchangeable(tmp_path):
    """Nothing lives in a web server process: a run submitted through one is
    watched through the other, and an ops UI session made on one is good on the
    other (sessions in the database, one secret key)."""
    with Deployment(tmp_path, nats_nodes=1, database="sqlite") as d:
        a, b = d.add_server(), d.add_server()
        d.add_worker("n1", roles="lead,execute")
        with d.client(0) as ca, d.client(1) as cb:
            wait_for(lambda: cb.get("/leader").json()["leader"], timeout=60)
            r = ca.post(
                "/jobs",
                json={"name": "nap", "kind": "python", "target": "rota.contrib.examples:sleep"},
            )
            assert r.status_code == 201, r.text
            run_id = ca.post("/runs", json={"job": "nap", "params": {"seconds": 1}}).json()[
                "run_id"
            ]
            states = []
            with cb.stream("GET", f"/runs/{run_id}/watch", timeout=60) as resp:
                assert resp.status_code == 200
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        states.append(json.loads(line[5:])["state"])
            assert states[-1] == "SUCCEEDED" and "RUNNING" in states, states

        with httpx.Client(base_url=a, follow_redirects=True, timeout=30) as browser:
            browser.get("/ops/login/")
            r = browser.post(
                "/ops/login/",
                data={
                    "username": "admin",
                    "password": d.admin_password,
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                },
                headers={"Referer": a + "/ops/login/"},
            )
            assert r.status_code == 200 and "/ops/login" not in str(r.url), r.url
            cookies = dict(browser.cookies)
        with httpx.Client(base_url=b, cookies=cookies, timeout=30) as other:
            r = other.get("/ops/")
            assert r.status_code == 200, r.status_code
            # Without the session the same page sends a browser to log in.
            assert httpx.get(b + "/ops/", timeout=30).status_code == 302


def test_rota_up_on_a_nats_cluster_and_postgresql(tmp_path):
    """`rota up --nats-url a,b,c --database-url postgres://...`: one command starts
    rota on external engines, and starts no nats-server of its own."""
    if not postgres_available():
        if CI:
            pytest.fail("PostgreSQL is required in CI")
        pytest.skip("PostgreSQL unavailable")
    nats = NatsCluster(tmp_path, 3, token="cluster-token")
    nats.start()
    database_url = create_postgres_database()
    try:
        stack = start_stack(
            tmp_path,
            "--nats-url",
            nats.url,
            "--database-url",
            database_url,
            env={"ROTA_NATS_TOKEN": "cluster-token"},
        )
        try:
            env = (stack.data_dir / "rota.env").read_text()
            assert f"ROTA_NATS_URL={nats.url}\n" in env
            assert f"ROTA_DATABASE_URL={database_url}\n" in env
            assert not (stack.data_dir / "nats").exists()
            assert "rota:rota@" not in stack.log.read_text()  # the banner hides the password
            c = stack.client
            r = c.post(
                "/jobs",
                json={"name": "add", "kind": "python", "target": "rota.contrib.examples:add"},
            )
            assert r.status_code == 201, r.text
            run_id = c.post("/runs", json={"job": "add", "params": {"a": 2, "b": 3}}).json()[
                "run_id"
            ]
            run = wait_for(
                lambda: (x := c.get(f"/runs/{run_id}").json())["state"] == "SUCCEEDED" and x,
                timeout=60,
            )
            assert run["result"] == 5
            # The record is in PostgreSQL, the resources on the cluster at R3.
            import psycopg

            with psycopg.connect(database_url) as conn:
                state = conn.execute("SELECT state FROM rota_jobrun WHERE id = %s", (run_id,))
                assert state.fetchone() == ("SUCCEEDED",)
            info = nats.stream_info(subjects.WORK_STREAM, "cluster-token")
            assert info.config.num_replicas == 3
        finally:
            stop_stack(stack)
    finally:
        nats.stop()
        drop_postgres_database(database_url)
