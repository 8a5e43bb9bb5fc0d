"""Riding out a NATS node loss: what is worth trying again, and for how long.

In a cluster, losing a node makes the streams it led elect a new leader (a few
seconds) and moves clients to another node; requests meanwhile find no
responder or time out. A write whose outcome matters (a run's transition) tries
again through that window instead of leaving the run in a state nobody owns.
Only the errors listed here are retried: a lost compare-and-set, a missing key
or a closed connection are answers, not outages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
import nats.js.errors

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors of a NATS outage that a later try may not meet.
TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)

#: How long a write keeps trying through an outage: longer than a stream leader
#: election (~5 s) and a client's reconnect, shorter than a run's supervision.
OUTAGE_SECONDS = 30.0


async def through_outage(
    call: Callable[..., Awaitable[T]], *args: Any, deadline: float = OUTAGE_SECONDS, **kwargs: Any
) -> T:
    """``await call(*args, **kwargs)``, again with backoff while NATS answers
    with a :data:`TRANSIENT` error, for up to ``deadline`` seconds."""
    delay = 0.05
    give_up = time.monotonic() + deadline
    while True:
        try:
            return await call(*args, **kwargs)
        except TRANSIENT as exc:
            if time.monotonic() + delay > give_up:
                raise
            log.info("nats: %s (%s); trying again in %.2fs", type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
