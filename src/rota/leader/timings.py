"""Run timing histograms kept by the leader's projector (issue 6, metrics).

The web server never sees a run start; the projector sees every transition as it
projects it. While it applies a batch, it notes the runs whose SQL row had no
``assigned_at`` (or no ``started_at``) yet and that the batch gives one: each run
is observed once, at its first claim and its first start, however often a
message is redelivered (the SQL row is the memory of what was counted).

The counts live in :class:`~rota.domain.histograms.RunTimings` in the projector
and are persisted every :data:`SAVE_SECONDS` under ``metrics.histograms`` in the
coordination bucket, by compare-and-set on the key's revision: a new leader
loads them and continues, and ``/metrics`` reads them. Observations of the last
seconds before a leader dies (at most one save interval) are lost; none is
counted twice by one projector. If two projectors overlap (a leader that has
not yet noticed it lost the lease), the one whose save loses the compare-and-set
reloads the stored counts and drops its own unsaved ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from django.db.models import Q
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from rota.bus import subjects
from rota.bus.connection import Bus
from rota.domain.histograms import BOUNDS, RunTimings
from rota.domain.snapshot import RunSnapshot

log = logging.getLogger(__name__)

#: How often the projector writes its counts to KV when they changed.
SAVE_SECONDS = 2.0


def untimed_rows(run_ids: list[str]) -> dict[str, tuple[int, bool, bool]]:
    """``{run_id: (version, has no assigned_at, has no started_at)}`` for the runs
    not yet observed at claim or start. Call inside the projection's transaction:
    the rows are locked (on PostgreSQL), so two projectors cannot both count one."""
    from rota.models import JobRun

    rows = (
        JobRun.objects.select_for_update()
        .filter(id__in=run_ids)
        .filter(Q(assigned_at__isnull=True) | Q(started_at__isnull=True))
        .order_by("id")
        .values_list("id", "version", "assigned_at", "started_at")
    )
    return {r[0]: (r[1], r[2] is None, r[3] is None) for r in rows}


def observe_firsts(
    timings: RunTimings,
    snaps: Iterable[RunSnapshot],
    before: dict[str, tuple[int, bool, bool]],
) -> int:
    """Observe each snapshot that gives its row a first claim or start time.
    Returns the number of observations."""
    n = 0
    for s in snaps:
        prev = before.get(s.run_id)
        if prev is None or s.version <= prev[0]:
            continue  # timed already, or the row was not updated (an older snapshot)
        if prev[1] and s.assigned_at is not None:
            timings.observe_claim(s.created_at, s.assigned_at)
            n += 1
        if prev[2] and s.started_at is not None:
            timings.observe_start(s.created_at, s.scheduled_for, s.started_at)
            n += 1
    return n


async def read_timings(bus: Bus) -> tuple[RunTimings, int | None, dict[str, Any]]:
    """The stored histograms, their KV revision (None if never saved) and the
    stored document (``at``: when it was saved, by the saver's clock)."""
    coord = await bus.js.key_value(subjects.COORD_BUCKET)
    try:
        entry = await coord.get(subjects.METRICS_HISTOGRAMS_KEY)
    except KeyNotFoundError:
        return RunTimings(), None, {}
    try:
        doc = orjson.loads(entry.value or b"{}")
    except orjson.JSONDecodeError:
        log.warning("metrics: %s does not decode; starting afresh", subjects.METRICS_HISTOGRAMS_KEY)
        doc = {}
    return RunTimings.from_dict(doc), entry.revision, doc


class TimingsStore:
    """The projector's histograms and their persistence."""

    def __init__(self, bus: Bus, *, save_seconds: float = SAVE_SECONDS) -> None:
        self.bus = bus
        self.save_seconds = save_seconds
        self.timings: RunTimings | None = None
        self._revision: int | None = None
        self._saved_at = 0.0
        self._saved_counts: tuple[int, int] = (0, 0)

    async def load(self) -> RunTimings:
        stored, self._revision, _ = await read_timings(self.bus)
        self.timings = RunTimings.from_dict(stored.as_dict(), bounds=BOUNDS)
        self._saved_counts = self._counts()
        return self.timings

    async def current(self) -> RunTimings:
        return self.timings if self.timings is not None else await self.load()

    def _counts(self) -> tuple[int, int]:
        t = self.timings
        return (t.dispatch_latency.count, t.start_lateness.count) if t else (0, 0)

    async def save(self, *, force: bool = False) -> bool:
        """Write the counts if they changed and the interval has passed (or
        ``force``). Returns whether it wrote."""
        if self.timings is None or self._counts() == self._saved_counts:
            return False
        now = time.monotonic()
        if not force and now - self._saved_at < self.save_seconds:
            return False
        coord = await self.bus.js.key_value(subjects.COORD_BUCKET)
        value = orjson.dumps({**self.timings.as_dict(), "at": time.time()})
        try:
            if self._revision is None:
                self._revision = await coord.create(subjects.METRICS_HISTOGRAMS_KEY, value)
            else:
                self._revision = await coord.update(
                    subjects.METRICS_HISTOGRAMS_KEY, value, last=self._revision
                )
        except KeyWrongLastSequenceError:
            log.warning("metrics: another projector saved the histograms; continuing from theirs")
            await self.load()
            return False
        self._saved_at = now
        self._saved_counts = self._counts()
        return True
