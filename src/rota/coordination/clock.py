"""The server's clock. Ages (of heartbeats, of leases) are measured with the
timestamps NATS stamps on stored messages, never with a worker's clock."""

from __future__ import annotations

import datetime as dt

from nats.js import JetStreamContext

from rota.bus import subjects


async def stored_at(js: JetStreamContext, bucket: str, key: str) -> float | None:
    """Server timestamp (epoch seconds) of the current value of ``bucket/key``."""
    from nats.js.errors import NotFoundError

    try:
        msg = await js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}")
    except NotFoundError:
        return None
    if msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
        return None
    return _ts(msg.time)


async def server_now(js: JetStreamContext) -> float:
    """The server's current time: write a tiny value and read its timestamp."""
    kv = await js.key_value(subjects.COORD_BUCKET)
    await kv.put(subjects.CLOCK_KEY, b"")
    ts = await stored_at(js, subjects.COORD_BUCKET, subjects.CLOCK_KEY)
    assert ts is not None
    return ts


def _ts(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value else None
