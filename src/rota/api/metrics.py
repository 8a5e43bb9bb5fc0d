"""``GET /metrics``: Prometheus text exposition (DESIGN §8, issue 6 item 4).

Computed from counters and the SQL projection, never by scanning every key:

- runs by job and state: one SQL ``GROUP BY``, cached :data:`RUNS_CACHE_SECONDS`
  per process so that several Prometheus servers scraping do not each cost a
  pass over the runs table;
- dispatch latency and start lateness: the histograms the leader's projector
  keeps and saves under ``metrics.histograms`` (``rota.leader.timings``);
- queue depth per tag: JetStream info of ``ROTA_WORK`` (per-subject message
  counts) and of its ``work_<tag>`` consumers (pending, unacknowledged);
- workers by state: the registry, as ``GET /workers`` reads it (hidden workers
  are left out: hiding is how an operator acknowledges a dead one);
- leader epoch: the ``leader`` lease; DLQ size: ``ROTA_DLQ`` stream info.

Every series is documented in docs/operations.md (Metrics). A backend that
cannot be read leaves its series out and sets ``rota_metrics_source_up`` to 0
for it; the scrape still answers 200.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from ninja import Router
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from rota.api.schemas import ErrorOut
from rota.bus import subjects
from rota.bus.connection import Bus
from rota.domain.histograms import Histogram
from rota.domain.states import RunState
from rota.domain.workers import WorkerState

log = logging.getLogger(__name__)

router = Router(tags=["system"])

#: How long one GROUP BY over the runs table serves scrapes, per process.
RUNS_CACHE_SECONDS = 5.0

_runs_cache: tuple[float, list[tuple[str, str, int]]] | None = None


async def runs_by_job_and_state() -> list[tuple[str, str, int]]:
    """``[(job, state, count)]`` from SQL, at most :data:`RUNS_CACHE_SECONDS` old."""
    global _runs_cache
    now = time.monotonic()
    if _runs_cache is not None and now - _runs_cache[0] < RUNS_CACHE_SECONDS:
        return _runs_cache[1]
    from rota.models import JobRun

    # order_by(): without it the model's default ordering joins the GROUP BY.
    qs = JobRun.objects.order_by().values_list("job_name", "state").annotate(n=Count("*"))
    rows = [(job, state, n) async for job, state, n in qs]
    _runs_cache = (time.monotonic(), rows)
    return rows


def _runs_families(rows: list[tuple[str, str, int]]) -> list[Metric]:
    by_job = GaugeMetricFamily(
        "rota_runs", "Runs in SQL (the projection) by job and state.", labels=["job", "state"]
    )
    totals = dict.fromkeys((s.value for s in RunState), 0)
    for job, state, n in sorted(rows):
        by_job.add_metric([job, state], n)
        totals[state] = totals.get(state, 0) + n
    by_state = GaugeMetricFamily(
        "rota_runs_by_state", "Runs in SQL by state, every job together.", labels=["state"]
    )
    for state, n in totals.items():
        by_state.add_metric([state], n)
    return [by_job, by_state]


def _tag_of(subject: str) -> str:
    return subject.removeprefix(f"{subjects.WORK_PREFIX}.tag.")


async def _queue_families(bus: Bus) -> list[Metric]:
    info, consumers = await asyncio.gather(
        bus.js.stream_info(subjects.WORK_STREAM, subjects_filter=f"{subjects.WORK_PREFIX}.tag.>"),
        bus.js.consumers_info(subjects.WORK_STREAM),
    )
    messages = {_tag_of(s): n for s, n in (info.state.subjects or {}).items()}
    pending: dict[str, tuple[int, int]] = {}
    for c in consumers:
        subject = c.config.filter_subject or ""
        if c.name.startswith("work_") and subject.startswith(f"{subjects.WORK_PREFIX}.tag."):
            pending[_tag_of(subject)] = (c.num_pending or 0, c.num_ack_pending or 0)
    queued = GaugeMetricFamily(
        "rota_queue_messages",
        "Dispatch messages in ROTA_WORK per tag: waiting or delivered and not yet acked.",
        labels=["tag"],
    )
    waiting = GaugeMetricFamily(
        "rota_queue_pending",
        "Messages the tag's work consumer has not delivered yet (num_pending).",
        labels=["tag"],
    )
    unacked = GaugeMetricFamily(
        "rota_queue_ack_pending",
        "Messages delivered to a worker and not yet acked (num_ack_pending).",
        labels=["tag"],
    )
    for tag in sorted(set(messages) | set(pending)):
        queued.add_metric([tag], messages.get(tag, 0))
        if tag in pending:
            waiting.add_metric([tag], pending[tag][0])
            unacked.add_metric([tag], pending[tag][1])
    return [queued, waiting, unacked]


async def _worker_families(bus: Bus) -> list[Metric]:
    from rota.coordination import registry

    workers, leadership = await asyncio.gather(
        registry.list_workers(bus.js), registry.leadership(bus.js)
    )
    counts = dict.fromkeys((s.value for s in WorkerState), 0)
    for w in workers:
        if not w["hidden"]:
            counts[w["state"]] = counts.get(w["state"], 0) + 1
    by_state = GaugeMetricFamily(
        "rota_workers", "Registered workers by state (hidden ones left out).", labels=["state"]
    )
    for state, n in counts.items():
        by_state.add_metric([state], n)
    epoch = GaugeMetricFamily(
        "rota_leader_epoch", "Epoch of the acting leader; 0 while there is none."
    )
    epoch.add_metric([], leadership["epoch"])
    latest = GaugeMetricFamily(
        "rota_leader_latest_epoch", "The newest epoch ever taken (the epoch counter)."
    )
    latest.add_metric([], leadership["latest_epoch"])
    present = GaugeMetricFamily("rota_leader_present", "1 while a leader holds office.")
    present.add_metric([], 1 if leadership["leader"] else 0)
    return [by_state, epoch, latest, present]


async def _dlq_families(bus: Bus) -> list[Metric]:
    info = await bus.js.stream_info(subjects.DLQ_STREAM, subjects_filter=f"{subjects.DLQ_PREFIX}.>")
    total = GaugeMetricFamily("rota_dlq_messages", "Dead letters kept in ROTA_DLQ (30 days).")
    total.add_metric([], info.state.messages)
    by_reason = GaugeMetricFamily(
        "rota_dlq_messages_by_reason", "Dead letters in ROTA_DLQ by reason.", labels=["reason"]
    )
    for subject, n in sorted((info.state.subjects or {}).items()):
        by_reason.add_metric([subject.removeprefix(f"{subjects.DLQ_PREFIX}.")], n)
    return [total, by_reason]


def _histogram(name: str, documentation: str, h: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=h.cumulative(), sum_value=h.total)


async def _timing_families(bus: Bus) -> list[Metric]:
    from rota.leader.timings import read_timings

    timings, _, doc = await read_timings(bus)
    saved = GaugeMetricFamily(
        "rota_run_timings_saved_timestamp_seconds",
        "When the leader last saved the timing histograms (0: never).",
    )
    saved.add_metric([], float(doc.get("at") or 0.0))
    return [
        _histogram(
            "rota_run_dispatch_latency_seconds",
            "Created until first claimed by a worker, once per run, over the cluster's life.",
            timings.dispatch_latency,
        ),
        _histogram(
            "rota_run_start_lateness_seconds",
            "Due (scheduled_for, else created_at) until first started, once per run.",
            timings.start_lateness,
        ),
        saved,
    ]


async def _consumer_families(bus: Bus) -> list[Metric]:
    from rota.api.app import consumer_pressure
    from rota.api.streams import slots

    pressure = await consumer_pressure(bus)
    count = GaugeMetricFamily(
        "rota_nats_consumers", "Consumers of the NATS account (watches and log tails included)."
    )
    count.add_metric([], pressure["count"])
    limit = GaugeMetricFamily(
        "rota_nats_consumers_limit", "Where /health reports consumer pressure (full at this)."
    )
    limit.add_metric([], pressure["limit"])
    streams = GaugeMetricFamily(
        "rota_sse_streams_open", "Event streams (watches, log tails) open in this web process."
    )
    streams.add_metric([], slots.total())
    return [count, limit, streams]


async def collect() -> list[Metric]:
    """Every family, with ``rota_metrics_source_up`` saying which sources answered."""
    from rota.api.app import get_bus

    families: list[Metric] = []
    up = GaugeMetricFamily(
        "rota_metrics_source_up",
        "1 if the source answered this scrape; its series are missing when 0.",
        labels=["source"],
    )
    try:
        families += _runs_families(await runs_by_job_and_state())
        up.add_metric(["database"], 1)
    except Exception:
        log.warning("metrics: reading runs from SQL failed", exc_info=True)
        up.add_metric(["database"], 0)
    try:
        bus = await asyncio.wait_for(get_bus(), 5)
        parts = await asyncio.wait_for(
            asyncio.gather(
                _consumer_families(bus),
                _queue_families(bus),
                _worker_families(bus),
                _dlq_families(bus),
                _timing_families(bus),
            ),
            10,
        )
        for part in parts:
            families += part
        up.add_metric(["nats"], 1)
    except Exception:
        log.warning("metrics: reading NATS failed", exc_info=True)
        up.add_metric(["nats"], 0)
    families.append(up)
    return families


class _Families:
    """A collector of families computed before ``generate_latest`` asks for them."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def exposition(families: Iterable[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


_TEXT_RESPONSE: dict[str, Any] = {
    "responses": {
        "200": {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }
}


@router.get("/metrics", response={401: ErrorOut, 403: ErrorOut}, openapi_extra=_TEXT_RESPONSE)
async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics of the cluster. Needs a token (or session) with ops_view:
    in Prometheus, ``authorization: {credentials: <token>}`` sends it as Bearer."""
    return HttpResponse(exposition(await collect()), content_type=CONTENT_TYPE_LATEST)
