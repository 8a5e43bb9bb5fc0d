"""A lease: one KV key in a bucket whose max age is the lease TTL.

Taken with ``create`` (fails while someone holds it), kept by ``update`` with
the last revision (a compare-and-set), lost the moment a renewal's CAS fails —
then the holder must stop acting at once. An unrenewed lease ages out of the
bucket and the next ``create`` wins.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from rota.bus.subjects import LEADER_KEY


class Lease:
    def __init__(self, kv: KeyValue, key: str, holder: dict[str, Any]) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder
        self.revision: int | None = None

    @property
    def held(self) -> bool:
        return self.revision is not None

    async def acquire(self) -> bool:
        """Try to take the lease; True if this call took it."""
        try:
            self.revision = await self.kv.create(self.key, orjson.dumps(self.holder))
            return True
        except KeyWrongLastSequenceError:
            return False

    async def renew(self, **changes: Any) -> bool:
        """Renew (and optionally change the holder's value) by compare-and-set.
        False means the lease is lost: stop acting now."""
        if self.revision is None:
            return False
        self.holder.update(changes)
        try:
            self.revision = await self.kv.update(
                self.key, orjson.dumps(self.holder), last=self.revision
            )
            return True
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            self.revision = None
            return False

    async def release(self) -> None:
        """Give the lease up (only if still ours: delete with the last revision)."""
        if self.revision is None:
            return
        rev, self.revision = self.revision, None
        try:
            await self.kv.delete(self.key, last=rev)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            pass


async def current_holder(kv: KeyValue, key: str) -> dict[str, Any] | None:
    """Who holds ``key`` now, for display only (never to decide leadership)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    return orjson.loads(entry.value)


class LeadershipLost(Exception):
    """This leader's epoch is stale: a newer leader exists; stop acting now."""


class LeaderFence:
    """Every leader-side write is preceded by :meth:`check`: the leader lease, read
    fresh from the server, must still carry this leader's epoch.

    A leader paused (SIGSTOP, a long GC, a frozen VM) past its lease has not
    noticed that it lost it; its tasks wake with their work half done. The check
    stops them before their next write. A positive answer is reused for
    ``reuse_seconds`` of monotonic time, which runs on while a process is paused,
    so a resumed leader always reads again. What is left is the gap between one
    check and the write it guards; run snapshots close it with a second fence:
    a leader write is refused by compare-and-set when the run already carries a
    newer epoch (:mod:`rota.runs.transitions`).
    """

    def __init__(self, leases: KeyValue, epoch: int, *, reuse_seconds: float = 0.2) -> None:
        self.leases = leases
        self.epoch = epoch
        self.reuse_seconds = reuse_seconds
        self.lost = False
        self._checked_at = -1e9

    async def check(self) -> None:
        """Raise :class:`LeadershipLost` unless the lease still carries our epoch."""
        if self.lost:
            raise LeadershipLost(f"epoch {self.epoch} lost the leader lease")
        started = time.monotonic()
        if started - self._checked_at < self.reuse_seconds:
            return
        holder = await current_holder(self.leases, LEADER_KEY)
        if holder is None or holder.get("epoch") != self.epoch:
            self.lost = True
            now = holder.get("epoch") if holder else None
            raise LeadershipLost(f"epoch {self.epoch} lost the leader lease (now held at {now})")
        self._checked_at = started
