"""The loop every daemon duty runs: a ``step()`` that does one unit of work and
returns whether it did any, repeated until a stop event is set.

Tests call ``step()`` directly; production code runs :func:`run_steps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_steps(
    name: str,
    step: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    idle_interval: float = 0.0,
    error_backoff: float = 1.0,
) -> None:
    """Call ``step`` until ``stop`` is set. After a step that did nothing, wait
    ``idle_interval``; after one that failed, log it and wait ``error_backoff``."""
    while not stop.is_set():
        try:
            did_work = await step()
            pause = 0.0 if did_work else idle_interval
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s step failed; retrying in %.1fs", name, error_backoff)
            pause = error_backoff
        if pause:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
