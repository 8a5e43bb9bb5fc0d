"""Dead letters: a diagnostic record on the DLQ stream for a run that cannot run
(invalid payload, unknown kind or job, attempts spent). The run's own state stays
the truth; this is for operators to look at."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from nats.js import JetStreamContext

from rota.bus.subjects import dlq_subject
from rota.domain.snapshot import RunSnapshot

log = logging.getLogger(__name__)


async def dead_letter(
    js: JetStreamContext,
    reason: str,
    *,
    snap: RunSnapshot | None = None,
    error: str = "",
    worker_id: str | None = None,
    delivery_count: int | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Publish one DLQ record on ``rota.dlq.<reason>``. Never raises: a lost
    diagnostic must not break the path that noticed the problem."""
    record = {
        "reason": reason,
        "error": error,
        "run_id": snap.run_id if snap else None,
        "job": snap.job if snap else None,
        "tags": snap.tags if snap else [],
        "tag": snap.tag if snap else None,
        "attempt": snap.attempt if snap else None,
        "worker_id": worker_id if worker_id is not None else (snap.worker_id if snap else None),
        "delivery_count": delivery_count,
        "at": time.time(),
        **(extra or {}),
    }
    try:
        await js.publish(dlq_subject(reason), orjson.dumps(record))
    except Exception:
        log.exception("could not write a DLQ record (%s) for run %s", reason, record["run_id"])
