"""A lease: one KV key in a bucket whose max age is the lease TTL.

Taken with ``create`` (fails while someone holds it), kept by ``update`` with
the last revision (a compare-and-set), lost the moment a renewal's CAS fails —
then the holder must stop acting at once. An unrenewed lease ages out of the
bucket and the next ``create`` wins.
"""

from __future__ import annotations

from typing import Any

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue


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
