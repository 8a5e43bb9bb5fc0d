"""rota's streams, buckets and object store on a real nats-server: a later
start brings an existing resource back to rota's definition, and an idle
worker's steady traffic is its heartbeat alone."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest

from rota.bus import subjects
from rota.bus.resources import cluster_size, ensure_resources, replicas_for_cluster
from tests.conftest import running_worker


@pytest.mark.parametrize(("nodes", "replicas"), [(1, 1), (2, 1), (3, 3), (5, 3)])
def test_replicas_follow_the_cluster_size(nodes, replicas):
    assert replicas_for_cluster(nodes) == replicas


async def test_a_single_server_is_a_cluster_of_one(bus):
    assert cluster_size(bus.nc) == 1


async def test_ensure_brings_changed_resources_back_to_rotas_definition(bus, rota_settings):
    js = bus.js
    dlq = await js.stream_info(subjects.DLQ_STREAM)
    await js.update_stream(
        dataclasses.replace(dlq.config, description="edited by hand", max_age=3600.0)
    )
    runs = await js.stream_info(f"KV_{subjects.RUNS_BUCKET}")
    await js.update_stream(dataclasses.replace(runs.config, description="edited by hand"))

    outcome = await ensure_resources(js, rota_settings)

    assert outcome[subjects.DLQ_STREAM] == "updated"
    assert outcome[subjects.RUNS_BUCKET] == "updated"
    assert outcome[subjects.WORK_STREAM] == "verified"
    dlq = await js.stream_info(subjects.DLQ_STREAM)
    assert dlq.config.description == "rota dead letters: runs that cannot run"
    assert dlq.config.max_age == 30 * 24 * 3600.0
    runs = await js.stream_info(f"KV_{subjects.RUNS_BUCKET}")
    assert runs.config.description == "rota live run snapshots"
    # Nothing left to change: a second call only verifies.
    assert set((await ensure_resources(js, rota_settings)).values()) == {"verified"}


async def test_an_idle_worker_only_beats(bus, rota_settings):
    """Over several heartbeats an idle worker rewrites its heartbeat, not its
    registry entry (which it writes when it changes)."""
    workers = await bus.js.key_value(subjects.WORKERS_BUCKET)
    heartbeats = await bus.js.key_value(subjects.HEARTBEATS_BUCKET)
    async with running_worker(rota_settings, tags=["idle-presence"], executors={}) as w:
        await asyncio.sleep(1.5)  # the start's own writes (roles, leadership) settle
        entry = await workers.get(w.worker_id)
        beat = await heartbeats.get(w.worker_id)
        await asyncio.sleep(3.5 * w.thresholds.heartbeat_interval_seconds)
        assert (await workers.get(w.worker_id)).revision == entry.revision
        assert (await heartbeats.get(w.worker_id)).revision > beat.revision
        # A change is written at once: an operator's detach mark, watched, not polled.
        coord = await bus.js.key_value(subjects.COORD_BUCKET)
        await coord.put(subjects.detached_key(w.worker_id), b"1")
        try:
            for _ in range(40):
                if w.detached:
                    break
                await asyncio.sleep(0.05)
            assert w.detached
            for _ in range(40):
                if (await workers.get(w.worker_id)).revision > entry.revision:
                    break
                await asyncio.sleep(0.05)
            entry_now = await workers.get(w.worker_id)
            assert entry_now.revision > entry.revision
            assert orjson.loads(entry_now.value)["detached"] is True
        finally:
            await coord.delete(subjects.detached_key(w.worker_id))
