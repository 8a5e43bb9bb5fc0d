"""The connection to NATS and handles to rota's buckets.

One :class:`Bus` per process (per event loop). It owns the connection; the
resources it names are created by :func:`rota.bus.resources.ensure_resources`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from rota.bus import subjects
from rota.bus.retry import through_outage
from rota.conf import RotaSettings
from rota.errors import BackendUnavailable

log = logging.getLogger(__name__)


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    runs: KeyValue

    async def close(self) -> None:
        """Flush what was published (acks included), then close. Not ``drain()``:
        it waits out every subscription, up to 30 s, for nothing rota needs."""
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.flush(), 5)
        except Exception:  # closing anyway; a flush error changes nothing
            pass
        await self.nc.close()


async def connect(
    settings: RotaSettings, *, name: str = "rota", ensure: bool = False, initial_attempts: int = 4
) -> Bus:
    """Connect and bind the run bucket. ``ensure`` also creates missing resources."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    try:
        nc = await nats.connect(
            # Every node given; the client also learns the cluster's other nodes
            # from the server and reconnects to a live one when its node goes away.
            settings.nats_servers,
            token=settings.nats_token or None,
            name=name,
            # A few tries at start, so an unreachable NATS is reported, not
            # waited on forever; once connected, reconnect forever (below).
            max_reconnect_attempts=initial_attempts,
            reconnect_time_wait=0.5,
            # Reconnect to a node that lives quickly: a run's heartbeats and the
            # leader's lease renewals must go on within seconds of a node loss.
            ping_interval=5,
            max_outstanding_pings=2,
            connect_timeout=5,
            allow_reconnect=True,
            error_cb=on_error,
            # The hot path publishes many small messages; a larger pending buffer
            # lets them pipeline instead of flushing one by one.
            pending_size=8 * 1024 * 1024,
        )
    except Exception as exc:  # nats raises several unrelated types here
        raise BackendUnavailable(
            f"cannot connect to NATS at {settings.nats_url}: {exc or type(exc).__name__}",
            hint="is `rota up` (or your nats-server) running, and is ROTA_NATS_TOKEN right?",
        ) from exc
    nc.options["max_reconnect_attempts"] = -1
    js = nc.jetstream(timeout=10)
    # A cluster busy with many processes starting at once answers late: try again.
    if ensure:
        from rota.bus.resources import ensure_resources

        await through_outage(ensure_resources, js, settings)
    runs = await through_outage(js.key_value, subjects.RUNS_BUCKET)
    return Bus(nc=nc, js=js, runs=runs)
