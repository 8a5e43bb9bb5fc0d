"""A live, local copy of (part of) a KV bucket, fed by a KV watch.

Each item keeps the server's timestamp of its value. That gives server-side ages
without asking the server for the time: the freshest item's timestamp, plus the
local monotonic time elapsed since it arrived, is the server's now (to within
delivery delay), whatever the local wall clock says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Item:
    value: bytes
    stored_at: float  # server timestamp, epoch seconds
    received: float  # local time.monotonic() at arrival
    revision: int


class KvMirror:
    def __init__(self, kv: KeyValue, pattern: str = ">") -> None:
        self.kv = kv
        self.pattern = pattern
        self.items: dict[str, Item] = {}
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._freshest: Item | None = None

    async def start(self) -> None:
        self._watcher = await self.kv.watch(self.pattern)
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        assert self._watcher is not None
        async for entry in self._watcher:
            if entry is None:  # the initial values are all in
                self.ready.set()
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.items.pop(entry.key, None)
                continue
            stored = entry.created.timestamp() if entry.created else time.time()
            item = Item(entry.value, stored, time.monotonic(), entry.revision)
            self.items[entry.key] = item
            if self._freshest is None or stored >= self._freshest.stored_at:
                self._freshest = item

    def server_now(self) -> float | None:
        """The server's current time as estimated from the freshest value seen."""
        f = self._freshest
        if f is None:
            return None
        return f.stored_at + (time.monotonic() - f.received)

    def age(self, key: str, now: float | None = None) -> float | None:
        """Seconds since ``key`` was last written (server time); None if absent."""
        item = self.items.get(key)
        now = self.server_now() if now is None else now
        if item is None or now is None:
            return None
        return max(0.0, now - item.stored_at)

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
