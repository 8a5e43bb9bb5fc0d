"""Backup and restore of rota's JetStream data on a three-node cluster (loopback).

Starts three clustered nats-servers (EmbeddedNats), creates rota's resources at
R3, writes N run snapshots to ``rota_runs`` (about 1 KiB each, as the run
service does) and N dispatch messages to ``ROTA_WORK``, then times
``rota.bus.backup.backup``, deletes every stream, times ``restore`` and checks
that the last sequence of each stream came back.

    python bench/nats_backup.py --runs 20000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def run(runs: int) -> None:
    import nats

    from rota.bus import subjects
    from rota.bus.backup import backup, restore
    from rota.bus.resources import ensure_resources
    from rota.bus.server import EmbeddedNats, free_port
    from rota.conf import RotaSettings
    from tests.integration.test_nats_cluster import wait_for_meta_leader

    tmp = Path(tempfile.mkdtemp(prefix="rota-nats-backup-"))
    ports = [free_port() for _ in range(3)]
    routes = [f"nats-route://127.0.0.1:{p}" for p in ports]
    nodes = [
        EmbeddedNats(
            tmp / f"n{i}",
            token="bench",
            server_name=f"n{i}",
            cluster_name="bench",
            cluster_port=ports[i],
            routes=routes,
            cluster_password="bench",
            http_port=0,
        )  # fmt: skip
        for i in range(3)
    ]
    for n in nodes:
        n.start()
    try:
        await asyncio.to_thread(wait_for_meta_leader, nodes)
        nc = await nats.connect(servers=[n.url for n in nodes], token="bench")
        js = nc.jetstream(timeout=30)
        await ensure_resources(js, dataclasses.replace(RotaSettings(), nats_replicas=3))
        kv = await js.key_value(subjects.RUNS_BUCKET)
        t0 = time.perf_counter()
        for start in range(0, runs, 500):
            batch = range(start, min(start + 500, runs))
            # ~1 KiB of incompressible text each, like a run snapshot (JSON compresses
            # better, so the sizes below are an upper bound).
            bodies = {i: os.urandom(512).hex().encode() for i in batch}
            await asyncio.gather(*(kv.put(f"run.{i:026d}", bodies[i]) for i in batch))
            subject = subjects.work_subject("bench")
            await asyncio.gather(
                *(js.publish(subject, bodies[i], headers={"Nats-Msg-Id": f"{i}:1"}) for i in batch)
            )
        print(f"wrote {runs} snapshots and {runs} dispatch messages at R3 in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip

        target = tmp / "backup"
        t0 = time.perf_counter()
        entries = await backup(nc, target)
        took = time.perf_counter() - t0
        size = sum(e.bytes for e in entries)
        print(f"backup: {len(entries)} streams, {size / 1e6:.1f} MB in {took:.2f} s")
        for stream, _, _ in subjects.jetstream_streams():
            await js.delete_stream(stream)
        t0 = time.perf_counter()
        infos = await restore(nc, target)
        took = time.perf_counter() - t0
        print(f"restore: {len(infos)} streams at R3 in {took:.2f} s")
        state = (await js.stream_info(f"KV_{subjects.RUNS_BUCKET}")).state
        assert state.messages == runs, state
        assert (await js.stream_info(subjects.WORK_STREAM)).state.messages == runs
        print("restored counts match")
        await nc.close()
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000)
    asyncio.run(run(parser.parse_args().runs))


if __name__ == "__main__":
    main()
