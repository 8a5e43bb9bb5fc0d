"""Leases, epochs and the election on a real NATS server."""

from __future__ import annotations

import asyncio
import time

import pytest

from rota.bus import subjects
from rota.coordination.election import Campaign, next_epoch
from rota.coordination.lease import Lease
from rota.domain.workers import Thresholds


@pytest.fixture
async def kvs(bus):
    leases = await bus.js.key_value(subjects.LEASES_BUCKET)
    coord = await bus.js.key_value(subjects.COORD_BUCKET)
    # Each test starts with no leader and no subleaders.
    for key in ["leader", "subleader.n1", "subleader.n2", "test.lease"]:
        try:
            await leases.purge(key)
        except Exception:
            pass
    return leases, coord


async def test_lease_is_exclusive_renewed_by_cas_and_expires(kvs):
    leases, _ = kvs
    a = Lease(leases, "test.lease", {"worker_id": "a"})
    b = Lease(leases, "test.lease", {"worker_id": "b"})
    assert await a.acquire()
    assert not await b.acquire()
    assert await a.renew()
    # Someone else overwrote it (a split brain is resolved by the CAS): a's renewal fails.
    await leases.put("test.lease", b'{"worker_id": "intruder"}')
    assert not await a.renew() and not a.held
    await leases.purge("test.lease")
    assert await b.acquire()
    # Unrenewed, it ages out of the bucket (max age = lease TTL) and can be taken again.
    ttl = Thresholds().leader_lease_seconds
    t0 = time.monotonic()
    while not await a.acquire():
        assert time.monotonic() - t0 < ttl + 2, "the lease did not expire"
        await asyncio.sleep(0.1)
    assert time.monotonic() - t0 >= ttl - 0.5


async def test_epochs_are_unique_and_increasing_under_contention(kvs):
    _, coord = kvs
    got = await asyncio.gather(*(next_epoch(coord) for _ in range(20)))
    assert len(set(got)) == 20
    assert max(got) - min(got) == 19


class Node:
    """A campaign with recorded duties, driven step by step (a 'crash' = no more steps)."""

    def __init__(self, kvs, worker_id: str, node_id: str, log: list) -> None:
        leases, coord = kvs
        self.worker_id = worker_id
        self.log = log

        async def start(epoch: int):
            log.append(("start", worker_id, epoch))

            async def stop():
                log.append(("stop", worker_id, epoch))

            return stop

        self.campaign = Campaign(
            leases=leases,
            coord=coord,
            worker_id=lambda: worker_id,
            node_id=node_id,
            thresholds=lambda: Thresholds(degrade_cooldown_seconds=5.0),
            start_duties=start,
        )


async def _drive(nodes, seconds: float, check=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for n in nodes:
            await n.campaign.step()
        if check:
            check()
        await asyncio.sleep(0.1)


async def test_one_leader_among_subleaders_and_takeover_after_a_crash(kvs):
    log: list = []
    a, b, c = Node(kvs, "a", "n1", log), Node(kvs, "b", "n1", log), Node(kvs, "c", "n2", log)

    def one_leader():
        assert sum(n.campaign.is_leader for n in (a, b, c)) <= 1

    await _drive([a, b, c], 1.5, one_leader)
    leaders = [n for n in (a, b, c) if n.campaign.is_leader]
    assert len(leaders) == 1
    # Only one worker per node is a subleader, hence a candidate.
    assert not (a.campaign.is_subleader and b.campaign.is_subleader)
    first = leaders[0]
    first_epoch = first.campaign.epoch
    # The leader "crashes": it takes no more steps; its leases age out.
    others = [n for n in (a, b, c) if n is not first]

    def one_live_leader():
        assert sum(n.campaign.is_leader for n in others) <= 1

    t0 = time.monotonic()
    while not any(n.campaign.is_leader for n in others):
        await _drive(others, 0.1, one_live_leader)
        assert time.monotonic() - t0 < Thresholds().leader_lease_seconds + 1.5
    successor = next(n for n in others if n.campaign.is_leader)
    assert successor.campaign.epoch > first_epoch
    assert ("start", successor.worker_id, successor.campaign.epoch) in log


async def test_degrade_steps_down_and_cools_down(kvs):
    log: list = []
    a, c = Node(kvs, "a", "n1", log), Node(kvs, "c", "n2", log)
    await _drive([a, c], 1.0)
    leader, other = (a, c) if a.campaign.is_leader else (c, a)
    _, coord = kvs
    import orjson

    await coord.put(subjects.DEGRADE_KEY, orjson.dumps({"epoch": leader.campaign.epoch}))
    await _drive([a, c], 1.5)
    assert not leader.campaign.is_leader
    assert other.campaign.is_leader
    assert ("stop", leader.worker_id, leader.campaign.epoch) in log
    # During its cool-down the degraded worker does not take leadership back,
    # even when the other one steps down.
    await other.campaign.step_down(cooldown=True)
    await _drive([leader], 1.0)
    assert not leader.campaign.is_leader
