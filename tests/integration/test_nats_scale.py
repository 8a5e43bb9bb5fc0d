"""Growing a NATS cluster to three nodes: `rota nats up` and a `join` make two
nodes, where rota's resources are R1 (a replica count of 2 has no majority to
spare); runs are queued; a third node joins and `rota nats scale` moves every
rota stream, bucket and object store to R3 in place. Nothing queued is lost, and
the data outlives the first node.

(A standalone server, as `rota up` starts, cannot take routes: NATS keeps a
standalone server's streams out of a cluster's metadata. It grows through
`rota nats backup` and `rota nats restore --replicas 3`; docs/operations.md.)"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import nats
import pytest

from rota.bus import subjects
from rota.bus.cluster import cluster_report
from rota.bus.connection import Bus
from rota.bus.resources import ensure_resources
from rota.bus.server import free_port
from tests.conftest import eventually
from tests.integration.test_nats_ops import rota

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


async def test_two_nodes_grow_to_three_and_rota_moves_to_r3(
    tmp_path: Path, rota_settings, _db_threads
):
    from rota.models import JobDefinition
    from rota.runs.service import RunRequest, RunService

    dirs = [tmp_path / f"g{i}" for i in range(3)]
    ports = [(free_port(), free_port(), free_port()) for _ in dirs]
    urls = [f"nats://127.0.0.1:{p[0]}" for p in ports]
    monitors = [f"http://127.0.0.1:{p[2]}" for p in ports]

    def node_args(i: int) -> list[str]:
        client, route, http = ports[i]
        return [
            "--dir", str(dirs[i]), "--name", f"g{i}", "--port", str(client),
            "--cluster-port", str(route), "--http-port", str(http), "--detach",
        ]  # fmt: skip

    env = {"ROTA_NATS_TOKEN": "", "ROTA_NATS_CLUSTER_PASSWORD": ""}
    try:
        rota("nats", "up", *node_args(0), env=env)
        env = {
            "ROTA_NATS_TOKEN": (dirs[0] / "token").read_text().strip(),
            "ROTA_NATS_CLUSTER_PASSWORD": (dirs[0] / "cluster.password").read_text().strip(),
        }
        token = env["ROTA_NATS_TOKEN"]
        seed = f"127.0.0.1:{ports[0][1]}"
        rota("nats", "join", "--seed", seed, *node_args(1), env=env)
        two = dataclasses.replace(rota_settings, nats_url=",".join(urls[:2]), nats_token=token)
        nc = await nats.connect(servers=urls[:2], token=token, connect_timeout=5)
        js = nc.jetstream(timeout=10)

        async def meta_ready() -> object:
            try:
                await js.account_info()
                return True
            except Exception:
                return False

        await eventually(meta_ready, timeout=60, interval=0.5)
        outcome = await ensure_resources(js, two)
        assert set(outcome.values()) == {"created"}
        assert (await js.stream_info(subjects.WORK_STREAM)).config.num_replicas == 1

        # Runs queued for a tag nobody serves.
        bus = Bus(nc=nc, js=js, runs=await js.key_value(subjects.RUNS_BUCKET))
        job = await JobDefinition.objects.acreate(
            name="grow-job", kind="command", target="true", tags=["grow"]
        )
        service = RunService(bus)
        runs = [(await service.submit(RunRequest(job=job)))[0] for _ in range(20)]
        before = {r.id: (await bus.runs.get(subjects.run_key(r.id))).revision for r in runs}
        await nc.close()

        rota("nats", "join", "--seed", seed, *node_args(2), env=env)
        # Scale once the meta group knows the third node (JetStream places
        # replicas only on peers it has heard of).
        nc = await nats.connect(servers=urls, token=token, connect_timeout=5)

        async def three_peers() -> object:
            r = await cluster_report(nc, monitor_urls=monitors)
            return r.meta_size == 3 and len(r.nodes) == 3 and r.meta_leader

        await eventually(three_peers, timeout=60, interval=0.5)
        await nc.close()

        out = rota("nats", "scale", "--nats-url", ",".join(urls), env=env)
        assert (
            f"{subjects.WORK_STREAM}: updated" in out and f"{subjects.RUNS_BUCKET}: updated" in out
        )

        nc = await nats.connect(servers=urls, token=token, connect_timeout=5)
        js = nc.jetstream(timeout=10)

        async def all_r3_current() -> object:
            r = await cluster_report(nc, monitor_urls=monitors)
            return (
                all(
                    st.exists and st.replicas == 3 and st.leader and len(st.followers) == 2
                    for st in r.streams
                )
                and not r.problems
            )

        await eventually(all_r3_current, timeout=90, interval=0.5)
        await nc.close()

        # The first node goes; the other two hold everything it had.
        rota("nats", "down", "--dir", str(dirs[0]), env=env)
        nc = await nats.connect(servers=urls[1:], token=token, connect_timeout=5)
        js = nc.jetstream(timeout=10)

        async def readable() -> object:
            try:
                return (await js.stream_info(subjects.WORK_STREAM)).state.messages == len(runs)
            except Exception:
                return False

        await eventually(readable, timeout=60, interval=0.5)
        kv = await js.key_value(subjects.RUNS_BUCKET)
        after = {r.id: (await kv.get(subjects.run_key(r.id))).revision for r in runs}
        assert after == before
        await nc.close()
    finally:
        for d in dirs:
            rota("nats", "down", "--dir", str(d), check=False)
        await asyncio.sleep(0)
