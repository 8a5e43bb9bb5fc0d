"""`rota nats` on real processes: `up` and two `join`s make a three-node cluster,
rota's resources go to R3, runs are submitted through the run service, `backup`
is taken, every stream, bucket and object store is deleted, `restore` brings them
back with the same revisions and messages, `status` shows the three nodes and the
meta leader, and `down` stops them."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from rota.bus import subjects
from rota.bus.cluster import cluster_report
from rota.bus.connection import Bus
from rota.bus.resources import ensure_resources
from rota.bus.server import free_port
from rota.cli.nats import alive
from tests.conftest import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TAG = "nats-ops"


def rota(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "rota", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"rota {' '.join(argv)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


@pytest.fixture
def three_nodes(tmp_path: Path):
    """Three nodes started by `rota nats up` and `rota nats join`, detached."""
    dirs = [tmp_path / f"n{i}" for i in range(3)]
    ports: list[tuple[int, int, int]] = []
    env: dict[str, str] = {"ROTA_NATS_TOKEN": "", "ROTA_NATS_CLUSTER_PASSWORD": ""}

    def start(i: int, *argv: str) -> None:
        """Start node i on free ports; again on new ones if another process on this
        busy machine took one between the pick and the bind."""
        for attempt in range(3):
            client, route, http = free_port(), free_port(), free_port()
            out = subprocess.run(
                [sys.executable, "-m", "rota", "nats", *argv, "--dir", str(dirs[i]),
                 "--name", f"n{i}", "--port", str(client), "--cluster-port", str(route),
                 "--http-port", str(http), "--detach"],
                capture_output=True, text=True, timeout=120, env={**os.environ, **env},
            )  # fmt: skip
            if out.returncode == 0:
                ports.append((client, route, http))
                return
            if attempt == 2 or ("in use" not in out.stderr and "exited" not in out.stderr):
                raise AssertionError(f"rota nats {argv[0]} n{i}: {out.stdout}{out.stderr}")

    try:
        start(0, "up")
        env = {
            "ROTA_NATS_TOKEN": (dirs[0] / "token").read_text().strip(),
            "ROTA_NATS_CLUSTER_PASSWORD": (dirs[0] / "cluster.password").read_text().strip(),
        }
        for i in (1, 2):
            start(i, "join", "--seed", f"127.0.0.1:{ports[0][1]}")
        yield {
            "dirs": dirs,
            "urls": [f"nats://127.0.0.1:{p[0]}" for p in ports],
            "monitors": [f"http://127.0.0.1:{p[2]}" for p in ports],
            "env": env,
        }
    finally:
        for d in dirs:
            rota("nats", "down", "--dir", str(d), check=False)


def status(cluster: dict, *extra: str) -> dict:
    monitors = [a for m in cluster["monitors"] for a in ("--monitor", m)]
    out = rota(
        "nats", "status", "--dir", str(cluster["dirs"][0]), *monitors, "--json", *extra,
        env=cluster["env"],
    )  # fmt: skip
    return json.loads(out)


@pytest.mark.timeout(300)
async def test_up_join_backup_delete_restore_status_down(three_nodes, rota_settings, _db_threads):
    from rota.models import JobDefinition, JobRun, Schedule
    from rota.runs.service import RunRequest, RunService

    cluster = three_nodes

    def formed() -> object:
        s = status(cluster)
        names = sorted(n["name"] for n in s["nodes"])
        return s if names == ["n0", "n1", "n2"] and s["meta_leader"] else None

    s = await eventually(lambda: asyncio.to_thread(formed), timeout=60, interval=0.5)
    assert s["cluster"] == "rota" and s["meta_size"] == 3

    token = cluster["env"]["ROTA_NATS_TOKEN"]
    settings = dataclasses.replace(
        rota_settings, nats_url=",".join(cluster["urls"]), nats_token=token, nats_replicas=3
    )
    nc = await nats.connect(servers=cluster["urls"], token=token, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        await ensure_resources(js, settings)
        bus = Bus(nc=nc, js=js, runs=await js.key_value(subjects.RUNS_BUCKET))

        async def all_r3_current() -> object:
            r = await cluster_report(nc, monitor_urls=cluster["monitors"])
            ok = all(
                st.exists and st.replicas == 3 and st.leader and len(st.followers) == 2
                for st in r.streams
            )
            return r if ok and not r.problems else None

        await eventually(all_r3_current, timeout=60, interval=0.5)

        # Runs through the run service (nothing serves the tag, so they stay
        # queued in ROTA_WORK), one of them a schedule's fire, and an archived log.
        job = await JobDefinition.objects.acreate(
            name="nats-ops-job",
            kind="command",
            target="true",
            tags=[TAG],
            # A command job takes only the params its schema declares.
            params_schema={"type": "object", "properties": {"i": {"type": "integer"}}},
        )
        sched = await Schedule.objects.acreate(job=job, name="every-minute", cron="* * * * *")
        service = RunService(bus)
        runs = [(await service.submit(RunRequest(job=job, params={"i": i})))[0] for i in range(4)]
        fired_at = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
        fire, _ = await service.submit(
            RunRequest(job=job, scheduled_for=fired_at, schedule_id=sched.pk)
        )
        runs.append(fire)
        store = await js.object_store(subjects.LOGS_STORE)
        blob = os.urandom(300_000)  # more than one snapshot chunk
        await store.put(f"{runs[0].id}/1/stdout", blob)

        before_kv = {}
        for r in runs:
            entry = await bus.runs.get(subjects.run_key(r.id))
            before_kv[r.id] = (entry.revision, entry.value)
        work = await js.stream_info(subjects.WORK_STREAM)
        assert work.state.messages == len(runs)
        before_work = [
            await js.get_msg(subjects.WORK_STREAM, seq)
            for seq in range(work.state.first_seq, work.state.last_seq + 1)
        ]

        backup_dir = cluster["dirs"][0].parent / "backup"
        out = rota(
            "nats", "backup", str(backup_dir), "--dir", str(cluster["dirs"][1]),
            env=cluster["env"],
        )  # fmt: skip
        assert "backup of 9 stream(s)" in out
        manifest = json.loads((backup_dir / "manifest.json").read_text())
        assert {e["stream"] for e in manifest["streams"]} == {
            s for s, _, _ in subjects.jetstream_streams()
        }

        for stream, _, _ in subjects.jetstream_streams():
            await js.delete_stream(stream)
        gone = await cluster_report(nc, monitor_urls=cluster["monitors"])
        assert not any(st.exists for st in gone.streams)
        assert any("does not exist" in p.what for p in gone.problems)

        # A second restore into existing streams is refused unless --replace.
        out = rota(
            "nats", "restore", str(backup_dir), "--dir", str(cluster["dirs"][2]),
            env=cluster["env"],
        )  # fmt: skip
        assert "restored 9 stream(s)" in out

        async def restored_r3() -> object:
            r = await cluster_report(nc, monitor_urls=cluster["monitors"])
            ok = all(st.exists and st.replicas == 3 and len(st.followers) == 2 for st in r.streams)
            return r if ok and not r.problems else None

        await eventually(restored_r3, timeout=60, interval=0.5)

        runs_kv = await js.key_value(subjects.RUNS_BUCKET)
        for run_id, (revision, value) in before_kv.items():
            entry = await runs_kv.get(subjects.run_key(run_id))
            assert (entry.revision, entry.value) == (revision, value)
        fire_snap = json.loads(before_kv[fire.id][1])
        assert fire_snap["scheduled_for"] == fired_at.timestamp()
        assert (await JobRun.objects.aget(pk=fire.id)).schedule_id == sched.pk
        after_work = [await js.get_msg(subjects.WORK_STREAM, m.seq) for m in before_work]
        assert [(m.seq, m.subject, m.data, m.headers) for m in after_work] == [
            (m.seq, m.subject, m.data, m.headers) for m in before_work
        ]
        store = await js.object_store(subjects.LOGS_STORE)
        assert (await store.get(f"{runs[0].id}/1/stdout")).data == blob
        # The revisions still line up: a compare-and-set at the saved revision wins.
        rev, value = before_kv[runs[1].id]
        assert await runs_kv.update(subjects.run_key(runs[1].id), value, last=rev) > rev

        refused = subprocess.run(
            [sys.executable, "-m", "rota", "nats", "restore", str(backup_dir),
             "--dir", str(cluster["dirs"][0])],
            capture_output=True, text=True, env={**os.environ, **cluster["env"]}, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2 and "--replace" in refused.stderr
    finally:
        await nc.close()

    s = status(cluster)
    assert sorted(n["name"] for n in s["nodes"]) == ["n0", "n1", "n2"]
    assert s["meta_leader"] in {"n0", "n1", "n2"}
    assert all(st["replicas"] == 3 for st in s["streams"])
    text = rota("nats", "status", "--dir", str(cluster["dirs"][0]), env=cluster["env"])
    assert "3 node(s), meta leader n" in text

    pids = [int((d / "nats-server.pid").read_text()) for d in cluster["dirs"]]
    for d in cluster["dirs"]:
        assert "stopped NATS node" in rota("nats", "down", "--dir", str(d))
    assert not any(alive(p) for p in pids)


@pytest.mark.timeout(300)
async def test_doctor_names_a_lost_node_and_its_replicas_then_leave(three_nodes, rota_settings):
    """SIGKILL a node: `rota nats doctor` and `rota doctor`'s NATS lines say which
    node and which replicas are offline; restarted, it catches up; `leave` then
    stops it in lame-duck mode."""
    from rota.cli.doctor import cluster_lines

    cluster = three_nodes
    await eventually(lambda: asyncio.to_thread(lambda: len(status(cluster)["nodes"]) == 3), 60, 0.5)
    token = cluster["env"]["ROTA_NATS_TOKEN"]
    settings = dataclasses.replace(
        rota_settings, nats_token=token, nats_replicas=3, nats_monitor_urls=cluster["monitors"]
    )
    nc = await nats.connect(servers=cluster["urls"][:2], token=token, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        await ensure_resources(js, settings)

        async def clean() -> object:
            r = await cluster_report(nc, monitor_urls=cluster["monitors"])
            return r if not r.problems and all(s.exists for s in r.streams) else None

        await eventually(clean, timeout=60, interval=0.5)
        lines = await cluster_lines(Bus(nc=nc, js=js, runs=None), settings)  # type: ignore[arg-type]
        assert lines[0] == (
            True,
            f"NATS cluster rota: 3 node(s) (n0, n1, n2), meta leader {status(cluster)['meta_leader']}",
            "",
        )
        assert all(ok for ok, _, _ in lines)

        victim = cluster["dirs"][2]
        os.kill(int((victim / "nats-server.pid").read_text()), 9)

        def doctor() -> subprocess.CompletedProcess:
            monitors = [a for m in cluster["monitors"][:2] for a in ("--monitor", m)]
            return subprocess.run(
                [sys.executable, "-m", "rota", "nats", "doctor", "--dir", str(cluster["dirs"][0]),
                 *monitors],
                capture_output=True, text=True, env={**os.environ, **cluster["env"]}, timeout=60,
            )  # fmt: skip

        async def noticed() -> object:
            d = await asyncio.to_thread(doctor)
            return d if "NATS node n2 is offline" in d.stdout else None

        d = await eventually(noticed, timeout=60, interval=1)
        assert d.returncode == 1
        assert "KV bucket rota_runs: its replica on n2 is offline" in d.stdout or (
            "rota_runs" in d.stdout and "n2" in d.stdout
        )
        settings = dataclasses.replace(settings, nats_monitor_urls=cluster["monitors"][:2])
        lines = await cluster_lines(Bus(nc=nc, js=js, runs=None), settings)  # type: ignore[arg-type]
        failed = [what for ok, what, _ in lines if ok is False]
        assert "NATS: NATS node n2 is offline" in failed
        assert any("replica on n2" in what for what in failed)

        # Restarted from its directory, the node catches up and the doctor is content.
        rota("nats", "up", "--dir", str(victim), "--detach", env=cluster["env"])
        await eventually(clean, timeout=90, interval=1)
        assert (await asyncio.to_thread(doctor)).returncode == 0

        out = rota("nats", "leave", "--dir", str(victim), env=cluster["env"])
        # Three nodes and R3: no free node to move the replicas to, so they stay.
        assert "keeps its replica on n2" in out and "node n2 left" in out
        assert not alive_pid_in(victim)

        async def left() -> object:
            r = await cluster_report(nc, monitor_urls=cluster["monitors"][:2])
            return r if any(p.code == "node_offline" for p in r.problems) else None

        await eventually(left, timeout=30, interval=0.5)

        # A new node joins; `leave --peer n2` moves the replicas that stayed on n2 to it.
        n3 = cluster["dirs"][0].parent / "n3"
        seed = f"127.0.0.1:{json.loads((cluster['dirs'][0] / 'node.json').read_text())['cluster_port']}"
        rota(
            "nats", "join", "--dir", str(n3), "--name", "n3", "--seed", seed,
            "--port", str(free_port()), "--cluster-port", str(free_port()),
            "--http-port", str(free_port()), "--detach", env=cluster["env"],
        )  # fmt: skip
        try:

            async def moved() -> object:
                out = rota("nats", "leave", "--peer", "n2", "--dir", str(n3), env=cluster["env"],
                           check=False)  # fmt: skip
                return out if "keeps its replica" not in out else None

            out = await eventually(moved, timeout=60, interval=2)
            assert "moved ROTA_WORK's replica off n2" in out

            async def on_n3() -> object:
                r = await cluster_report(nc)
                ok = all({s.leader, *(p.name for p in s.followers)} == {"n0", "n1", "n3"}
                         for s in r.streams)  # fmt: skip
                return ok and all(p.current for s in r.streams for p in s.followers)

            await eventually(on_n3, timeout=60, interval=0.5)
        finally:
            rota("nats", "down", "--dir", str(n3), check=False)
    finally:
        await nc.close()


def alive_pid_in(directory: Path) -> bool:
    try:
        return alive(int((directory / "nats-server.pid").read_text()))
    except (OSError, ValueError):
        return False


@pytest.mark.timeout(300)
def test_foreground_up_waits_for_a_second_node_and_is_stopped_by_down(tmp_path: Path):
    """`rota nats up` without --detach stays in the foreground. Alone, a cluster
    node has no meta leader (it expects itself and one more), which `doctor`
    says; once a second node joins, JetStream elects one. `rota nats down` (the
    pid file) ends the server, and the foreground command with it."""
    dirs = [tmp_path / "first", tmp_path / "second"]
    env = {**os.environ, "ROTA_NATS_TOKEN": "", "ROTA_NATS_CLUSTER_PASSWORD": ""}
    route = free_port()
    args = ["--dir", str(dirs[0]), "--name", "first", "--port", str(free_port())]
    args += ["--cluster-port", str(route), "--http-port", str(free_port())]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rota", "nats", "up", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def nats_cli(*argv: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rota", "nats", *argv],
            env={**env, **extra}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (dirs[0] / "nats-server.pid").exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        doctor = nats_cli("doctor", "--dir", str(dirs[0]))
        assert doctor.returncode == 1
        assert "JetStream has no meta leader" in doctor.stdout, doctor.stdout + doctor.stderr

        secrets = {
            "ROTA_NATS_TOKEN": (dirs[0] / "token").read_text().strip(),
            "ROTA_NATS_CLUSTER_PASSWORD": (dirs[0] / "cluster.password").read_text().strip(),
        }
        joined = nats_cli(
            "join", "--dir", str(dirs[1]), "--name", "second", "--seed", f"127.0.0.1:{route}",
            "--port", str(free_port()), "--cluster-port", str(free_port()),
            "--http-port", str(free_port()), "--detach", **secrets,
        )  # fmt: skip
        assert joined.returncode == 0, joined.stderr
        deadline = time.monotonic() + 60
        report: dict = {}
        while time.monotonic() < deadline and not report.get("meta_leader"):
            out = nats_cli("status", "--dir", str(dirs[0]), "--json")
            report = json.loads(out.stdout) if out.returncode == 0 else {}
            time.sleep(0.5)
        assert report["meta_leader"] in {"first", "second"} and report["meta_size"] == 2

        assert rota("nats", "down", "--dir", str(dirs[0])).startswith("stopped NATS node")
        assert proc.wait(30) == 0
        assert not (dirs[0] / "nats-server.pid").exists()
    finally:
        rota("nats", "down", "--dir", str(dirs[1]), check=False)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
