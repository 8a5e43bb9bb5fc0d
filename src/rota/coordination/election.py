"""Leader and SubLeader election (DESIGN §3).

Every worker with the ``lead`` role runs a :class:`Campaign`:

- it tries to hold its node's SubLeader lease (``subleader.<node>``); one worker
  per node holds it and is that node's only candidate for leader;
- a SubLeader tries to take the leader lease; on success it takes the next epoch
  (a compare-and-set on the ``epoch`` counter), writes it into the lease and starts
  the leader duties with it;
- each lease is renewed by compare-and-set several times per TTL; a failed
  renewal of the leader lease stops the duties at once;
- degrade: an operator's request (the ``degrade`` key naming this worker) or
  repeated failures of the duties make the leader release the lease and stay out
  of the next election for the cool-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from rota.bus import subjects
from rota.coordination.lease import Lease
from rota.domain.workers import Thresholds

log = logging.getLogger(__name__)


async def next_epoch(coord: KeyValue) -> int:
    """Take the next leader epoch: a compare-and-set on the counter, so two
    leaders can never get the same number."""
    while True:
        try:
            entry = await coord.get(subjects.EPOCH_KEY)
        except KeyNotFoundError:
            try:
                await coord.create(subjects.EPOCH_KEY, b"1")
                return 1
            except KeyWrongLastSequenceError:
                continue
        value = int(entry.value or b"0") + 1
        try:
            await coord.update(subjects.EPOCH_KEY, str(value).encode(), last=entry.revision)
            return value
        except KeyWrongLastSequenceError:
            continue


#: Starts the leader duties for an epoch; returns a coroutine function that stops them.
DutiesFactory = Callable[[int], Awaitable[Callable[[], Awaitable[None]]]]


class Campaign:
    def __init__(
        self,
        *,
        leases: KeyValue,
        coord: KeyValue,
        worker_id: Callable[[], str],
        node_id: str,
        thresholds: Callable[[], Thresholds],
        start_duties: DutiesFactory,
        eligible: Callable[[], bool] = lambda: True,
    ) -> None:
        self.leases = leases
        self.coord = coord
        self.worker_id = worker_id
        self.node_id = node_id
        self.thresholds = thresholds
        self.start_duties = start_duties
        self.eligible = eligible
        self.epoch = 0
        self.is_leader = False
        self.is_subleader = False
        self.cooldown_until = 0.0
        self._sub: Lease | None = None
        self._lead: Lease | None = None
        self._stop_duties: Callable[[], Awaitable[None]] | None = None
        self._duties_failed = asyncio.Event()

    def _holder(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id(), "node_id": self.node_id, "since": time.time()}

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("election step failed")
                interval = self.thresholds().leader_lease_seconds / 4
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            await self.step_down(cooldown=False)
            if self._sub is not None:
                await self._sub.release()

    async def step(self) -> None:
        if not self.eligible():
            if self.is_leader:
                await self.step_down(cooldown=False)
            if self._sub is not None and self._sub.held:
                await self._sub.release()
                self.is_subleader = False
            return
        await self._keep_subleader()
        if self.is_leader:
            await self._keep_leader()
        elif self.is_subleader and time.monotonic() >= self.cooldown_until:
            await self._try_lead()

    async def _keep_subleader(self) -> None:
        if self._sub is None or self._sub.holder.get("worker_id") != self.worker_id():
            self._sub = Lease(self.leases, subjects.subleader_key(self.node_id), self._holder())
        if self._sub.held:
            self.is_subleader = await self._sub.renew()
            if not self.is_subleader:
                log.warning(
                    "worker %s lost the subleader lease of node %s", self.worker_id(), self.node_id
                )
        else:
            self.is_subleader = await self._sub.acquire()
            if self.is_subleader:
                log.info("worker %s is the subleader of node %s", self.worker_id(), self.node_id)

    async def _try_lead(self) -> None:
        lease = Lease(self.leases, subjects.LEADER_KEY, {**self._holder(), "epoch": 0})
        if not await lease.acquire():
            return
        epoch = await next_epoch(self.coord)
        if not await lease.renew(epoch=epoch):
            return
        self._lead, self.epoch, self.is_leader = lease, epoch, True
        self._duties_failed.clear()
        log.info("worker %s is the leader, epoch %d", self.worker_id(), epoch)
        try:
            self._stop_duties = await self.start_duties(epoch)
        except Exception:
            log.exception("leader duties did not start; stepping down")
            await self.step_down(cooldown=True)

    async def _keep_leader(self) -> None:
        assert self._lead is not None
        try:
            renewed = await self._lead.renew()
        except Exception:  # NATS unreachable: we cannot know we still hold it
            log.warning("renewing the leader lease failed", exc_info=True)
            renewed = False
        if not renewed:
            log.warning(
                "worker %s lost the leader lease (epoch %d): stopping leader duties",
                self.worker_id(),
                self.epoch,
            )
            await self._stop(release=False)
            return
        if self._duties_failed.is_set():
            log.warning("leader duties keep failing: stepping down for the cool-down")
            await self.step_down(cooldown=True)
            return
        if await self._degrade_requested():
            log.warning("operator asked leader %s to step down", self.worker_id())
            await self.step_down(cooldown=True)

    def duties_failed(self) -> None:
        """Called by the duties when they cannot go on (repeated errors, a stale epoch)."""
        self._duties_failed.set()

    async def _degrade_requested(self) -> bool:
        try:
            entry = await self.coord.get(subjects.DEGRADE_KEY)
        except KeyNotFoundError:
            return False
        if not entry.value:
            return False
        request = orjson.loads(entry.value)
        if request.get("epoch") not in (None, self.epoch):
            return False
        with contextlib.suppress(Exception):
            await self.coord.delete(subjects.DEGRADE_KEY, last=entry.revision)
        return True

    async def step_down(self, *, cooldown: bool) -> None:
        if not self.is_leader:
            return
        await self._stop(release=True)
        if cooldown:
            self.cooldown_until = time.monotonic() + self.thresholds().degrade_cooldown_seconds

    async def _stop(self, *, release: bool) -> None:
        stop, self._stop_duties = self._stop_duties, None
        self.is_leader = False
        if stop is not None:
            with contextlib.suppress(Exception):
                await stop()
        if release and self._lead is not None:
            await self._lead.release()
        self._lead = None
