"""Consumers made for followers: the KV watch of ``GET /runs/{id}/watch`` and the
ordered consumer of ``GET /runs/{id}/logs/tail``.

A follower's consumer lives only as long as its HTTP stream (issue 13: 1,100
dropped watches used to leave 1,100 consumers on the server for five minutes).
Two things see to that: :func:`drop` deletes the consumer the moment the stream
closes, and every such consumer is made with :data:`INACTIVE_SECONDS`, so the
server removes one whose process died before it could delete it. A live
follower keeps interest on its deliver subject, so it is never inactive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.js import JetStreamContext

log = logging.getLogger(__name__)

#: Seconds without interest after which the server deletes a follower's consumer.
INACTIVE_SECONDS = 10.0


async def drop(js: JetStreamContext, sub: Any) -> None:
    """Unsubscribe a push subscription and delete its consumer now.

    ``sub`` is a ``PushSubscription`` (ordered or not). nats-py only
    unsubscribes, which leaves the consumer to the inactive threshold; its
    stream and current consumer name (an ordered consumer gets a new name on
    every reset) are private attributes, read defensively here."""
    stream = getattr(sub, "_stream", None)
    name = getattr(sub, "_consumer", None)
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    if stream and name:
        try:
            await js.delete_consumer(stream, name)
        except Exception as exc:  # gone already, or NATS away: the threshold covers it
            log.debug("follower consumer %s/%s not deleted: %s", stream, name, exc)


async def drop_watcher(js: JetStreamContext, watcher: Any) -> None:
    """:func:`drop` for a ``KeyValue.KeyWatcher`` (also ends its iteration)."""
    sub = getattr(watcher, "_sub", None)
    if sub is not None:
        await drop(js, sub)
    with contextlib.suppress(Exception):
        await watcher.stop()


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled although the await that
    got the cancel returned. On Python 3.11, ``asyncio.wait_for`` (which
    nats-py's ``KeyWatcher.updates()`` and ``next_msg()`` use) swallows a cancel
    that lands together with the message it waited for: a stream whose client
    went away would wait on, holding its consumer. Call it after such awaits."""
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError


async def consumer_count(js: JetStreamContext) -> tuple[int, int]:
    """(consumers of this NATS account, the account's limit or -1 for none)."""
    info = await js.account_info()
    return info.consumers, info.limits.max_consumers
