"""The outbox reconciler: runs that exist in SQL but were never dispatched (a
crash between the insert and the publish) are dispatched again. Every step of
dispatch is idempotent (KV create returns the existing snapshot, the message id
de-duplicates), so dispatching twice is harmless."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from rota.coordination.lease import LeaderFence
from rota.domain.states import RunState
from rota.models import JobRun
from rota.runs.service import RunService, snapshot_for
from rota.runs.sqlwriter import sql_writer
from rota.steps import run_steps

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        service: RunService,
        *,
        grace_seconds: float = 10.0,
        batch: int = 500,
        fence: LeaderFence | None = None,
    ) -> None:
        self.service = service
        self.fence = fence
        self.grace = timedelta(seconds=grace_seconds)
        self.batch = batch

    def _undispatched(self) -> list[JobRun]:
        cutoff = datetime.now(UTC) - self.grace
        return list(
            JobRun.objects.select_related("job")
            .filter(
                dispatched_at__isnull=True,
                held=False,
                created_at__lt=cutoff,
                state=RunState.PENDING,
            )
            .order_by("created_at")[: self.batch]
        )

    async def step(self) -> int:
        rows = await sql_writer().call(self._undispatched)
        snaps = [snapshot_for(r, r.job) for r in rows if r.job is not None or r.flow_name]
        if snaps:
            if self.fence is not None:
                await self.fence.check()
            log.info("reconciler: dispatching %d run(s) a crash left undispatched", len(snaps))
            await self.service.dispatch(snaps)
        return len(snaps)

    async def run(self, stop: asyncio.Event, interval: float = 5.0) -> None:
        await run_steps(
            "reconciler", self.step, stop, idle_interval=interval, error_backoff=interval
        )
