"""Cluster-lifetime histograms of run timings (pure: no I/O).

The leader's projector sees every run's first claim and first start as it
projects snapshots into SQL, so it observes the timings there; it keeps them as
:class:`RunTimings` and persists them in the coordination bucket
(``metrics.histograms``), where the next leader continues from them and the web
server reads them for ``/metrics``.

A histogram is stored with its bucket bounds, so a reader renders what was
counted even if a newer rota changes the default bounds; a projector that finds
other bounds than its own starts those histograms afresh rather than mixing them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (seconds) of the buckets; +Inf is implicit. From a few
#: milliseconds (a claim on an idle cluster) to an hour (a queue that backs up).
BOUNDS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and their sum."""

    bounds: tuple[float, ...] = BOUNDS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        if math.isnan(value):
            return
        # A bucket's bound is inclusive (le), as in Prometheus.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count), ...]`` ending with ``("+Inf", count)``, for exposition."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == math.inf else _le(bound), running))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.total}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Histogram:
        if not raw:
            return cls()
        try:
            bounds = tuple(float(b) for b in raw["bounds"])
            counts = [int(c) for c in raw["counts"]]
            total = float(raw.get("sum", 0.0))
        except (KeyError, TypeError, ValueError):
            return cls()
        if len(counts) != len(bounds) + 1 or list(bounds) != sorted(bounds):
            return cls()
        return cls(bounds, counts, total)


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class RunTimings:
    """The two timings the projector observes, once per run.

    - dispatch latency: created → first claimed by a worker (``assigned_at``);
    - start lateness: due (``scheduled_for``, else ``created_at``) → first
      started (``started_at``), never below 0 (assign-ahead starts on time).
    """

    dispatch_latency: Histogram = field(default_factory=Histogram)
    start_lateness: Histogram = field(default_factory=Histogram)

    def observe_claim(self, created_at: float, assigned_at: float) -> None:
        self.dispatch_latency.observe(max(0.0, assigned_at - created_at))

    def observe_start(
        self, created_at: float, scheduled_for: float | None, started_at: float
    ) -> None:
        due = scheduled_for if scheduled_for is not None else created_at
        self.start_lateness.observe(max(0.0, started_at - due))

    def as_dict(self) -> dict[str, Any]:
        return {
            "dispatch_latency": self.dispatch_latency.as_dict(),
            "start_lateness": self.start_lateness.as_dict(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, *, bounds: tuple[float, ...] | None = None):
        """Load what was stored. With ``bounds``, a histogram stored with other
        bounds starts empty (a projector only adds to histograms it can extend)."""
        raw = raw or {}
        out = cls(
            Histogram.from_dict(raw.get("dispatch_latency")),
            Histogram.from_dict(raw.get("start_lateness")),
        )
        if bounds is not None:
            if out.dispatch_latency.bounds != bounds:
                out.dispatch_latency = Histogram(bounds)
            if out.start_lateness.bounds != bounds:
                out.start_lateness = Histogram(bounds)
        return out
