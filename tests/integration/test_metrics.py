"""``GET /metrics`` on real engines: runs go through a real worker (which is
also the leader, so its projector observes their timings), and the exposition
is read back with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import sys

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from rota.api import metrics as metrics_api
from rota.domain.histograms import RunTimings
from rota.domain.states import RunState
from rota.models import ApiToken, JobDefinition, JobRun
from rota.runs.service import RunRequest, RunService
from rota.worker.executors.command import CommandExecutor
from tests.conftest import eventually, running_worker
from tests.integration.test_events import Authorized

pytestmark = pytest.mark.django_db(transaction=True)

TERMINAL = {s.value for s in (RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT)}


class Exposition:
    """The samples of one scrape, by (name, labels)."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset], float] = {}
        self.names: set[str] = set()
        for family in text_string_to_metric_families(text):
            self.names.add(family.name)
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [dict(lbl) for (n, lbl) in self.samples if n == name]


@pytest.fixture(autouse=True)
def _fresh_runs_cache():
    # The GROUP BY is cached per process; each test starts from its own database.
    metrics_api._runs_cache = None
    yield
    metrics_api._runs_cache = None


@pytest.fixture
async def viewer(bus) -> Authorized:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = await get_user_model().objects.acreate(username="prometheus")
    group, _ = await Group.objects.aget_or_create(name="ops_view")
    await user.groups.aadd(group)
    _, raw = await sync_to_async(ApiToken.issue)(user)
    return Authorized(raw)


@pytest.fixture
async def worker(rota_settings):
    executors = {"command": CommandExecutor(kill_grace=0.5)}
    async with running_worker(rota_settings, tags=["metrics"], executors=executors) as w:
        yield w


async def scrape(client: Authorized) -> Exposition:
    metrics_api._runs_cache = None
    r = await client.get("/metrics")
    assert r.status_code == 200, r.content
    assert r["Content-Type"].startswith("text/plain")
    return Exposition(r.content.decode())


async def test_metrics_need_a_token(bus):
    r = await AsyncClient().get("/metrics")
    assert r.status_code == 401
    assert r.json() == {"detail": "Unauthorized"}
    wrong = await AsyncClient().get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_a_user_outside_the_ops_groups_gets_403(bus):
    from django.contrib.auth import get_user_model

    user = await get_user_model().objects.acreate(username="nobody-metrics")
    _, raw = await sync_to_async(ApiToken.issue)(user)
    assert (await Authorized(raw).get("/metrics")).status_code == 403


async def test_empty_system_answers_zeros_not_an_error(viewer):
    m = await scrape(viewer)
    assert m.get("rota_metrics_source_up", source="database") == 1
    assert m.get("rota_metrics_source_up", source="nats") == 1
    assert m.labels_of("rota_runs") == []  # no runs: no (job, state) series
    for state in RunState:
        assert m.get("rota_runs_by_state", state=state.value) == 0
    for name in (
        "rota_run_dispatch_latency_seconds",
        "rota_run_start_lateness_seconds",
        "rota_workers",
        "rota_leader_epoch",
        "rota_dlq_messages",
        "rota_queue_messages",
    ):
        assert name in m.names, name
    assert m.get("rota_run_dispatch_latency_seconds_bucket", le="+Inf") is not None


async def _finished(run_ids: list[str]) -> bool:
    n = await JobRun.objects.filter(id__in=run_ids, state__in=TERMINAL).acount()
    return n == len(run_ids)


async def test_runs_through_a_worker_show_in_the_exposition(bus, worker, viewer):
    before = await scrape(viewer)
    dispatch0 = before.get("rota_run_dispatch_latency_seconds_count") or 0
    within_a_minute0 = before.get("rota_run_dispatch_latency_seconds_bucket", le="60.0") or 0
    lateness0 = before.get("rota_run_start_lateness_seconds_count") or 0
    unknown_kind0 = before.get("rota_dlq_messages_by_reason", reason="unknown_kind") or 0

    ok = await JobDefinition.objects.acreate(
        name="m-ok", kind="command", target=sys.executable, args=["-c", "pass"], tags=["metrics"]
    )
    bad = await JobDefinition.objects.acreate(
        name="m-bad", kind="command", target="false", tags=["metrics"]
    )
    # A kind this worker has no executor for: FAILED with a DLQ record.
    odd = await JobDefinition.objects.acreate(
        name="m-odd", kind="celery", target="x", tags=["metrics"]
    )
    # A tag no worker serves: its dispatch message stays queued.
    stuck = await JobDefinition.objects.acreate(
        name="m-stuck", kind="command", target="true", tags=["metrics-nobody"]
    )
    service = RunService(bus)
    runs = [(await service.submit(RunRequest(job=ok)))[0] for _ in range(3)]
    runs.append((await service.submit(RunRequest(job=bad)))[0])
    runs.append((await service.submit(RunRequest(job=odd)))[0])
    queued, _ = await service.submit(RunRequest(job=stuck))
    ids = [r.id for r in runs]
    await eventually(lambda: _finished(ids), timeout=30)

    async def histograms_saved():
        m = await scrape(viewer)
        # Five runs were claimed and started (the odd one too: a claim starts
        # a run, and the worker fails it when it finds no executor).
        moved = (m.get("rota_run_dispatch_latency_seconds_count") or 0) - dispatch0 >= 5 and (
            m.get("rota_run_start_lateness_seconds_count") or 0
        ) - lateness0 >= 5
        return m if moved else None

    m: Exposition = await eventually(histograms_saved, timeout=15)  # type: ignore[assignment]

    assert m.get("rota_runs", job="m-ok", state="SUCCEEDED") == 3
    assert m.get("rota_runs", job="m-bad", state="FAILED") == 1
    assert m.get("rota_runs", job="m-odd", state="FAILED") == 1
    assert m.get("rota_runs", job="m-stuck", state="PENDING") == 1
    assert m.get("rota_runs_by_state", state="SUCCEEDED") == 3
    assert m.get("rota_runs_by_state", state="FAILED") == 2

    # Exactly once per run: the counts moved by the runs of this test, no more.
    assert m.get("rota_run_dispatch_latency_seconds_count") - dispatch0 == 5
    assert m.get("rota_run_start_lateness_seconds_count") - lateness0 == 5
    # A claim on an idle local cluster takes well under a minute: the 60 s
    # bucket holds every observation of this test's runs (earlier tests of the
    # session may have left slower ones: a held run, a retry), and the sum is positive.
    within_a_minute = m.get("rota_run_dispatch_latency_seconds_bucket", le="60.0")
    assert within_a_minute - within_a_minute0 == 5
    assert m.get("rota_run_dispatch_latency_seconds_sum") > 0
    assert m.get("rota_run_timings_saved_timestamp_seconds") > 0

    assert m.get("rota_queue_messages", tag="metrics-nobody") == 1
    assert m.get("rota_queue_pending", tag="metrics") == 0
    assert m.get("rota_queue_ack_pending", tag="metrics") == 0
    assert (m.get("rota_dlq_messages_by_reason", reason="unknown_kind") or 0) - unknown_kind0 == 1
    assert m.get("rota_dlq_messages") >= 1

    assert m.get("rota_leader_present") == 1
    assert m.get("rota_leader_epoch") >= 1
    assert m.get("rota_leader_latest_epoch") >= m.get("rota_leader_epoch")
    live = (m.get("rota_workers", state="IDLE") or 0) + (
        m.get("rota_workers", state="RUNNING") or 0
    )
    assert live >= 1
    # Nobody serves its tag: the queued run was counted as queued, never claimed.
    assert (await JobRun.objects.aget(id=queued.id)).state == "PENDING"

    # Take the queued run off the shared work stream so no later test claims it.
    await bus.js.purge_stream("ROTA_WORK", subject="rota.work.tag.metrics-nobody")


async def test_timings_are_observed_once_per_run(bus, worker):
    """Applying the same snapshots again (a redelivered batch) observes nothing."""
    from rota.leader.projector import apply_snapshots
    from rota.runs.transitions import RunStore

    job = await JobDefinition.objects.acreate(
        name="m-once", kind="command", target="true", tags=["metrics"]
    )
    run, _ = await RunService(bus).submit(RunRequest(job=job))
    await eventually(lambda: _finished([run.id]), timeout=20)
    final = await RunStore(bus.runs).get(run.id)
    assert final is not None
    again = RunTimings()
    await sync_to_async(apply_snapshots)([final.snap, final.snap], again)
    assert again.dispatch_latency.count == 0 and again.start_lateness.count == 0


async def test_first_claim_and_start_are_observed_from_the_snapshot(bus):
    """A row without claim and start times, then a snapshot that has both: one
    observation each, with the right values, and none when applied again."""
    import dataclasses

    from rota.leader.projector import apply_snapshots
    from rota.runs.service import prepare

    job = await JobDefinition.objects.acreate(name="m-direct", kind="command", target="true")
    row, snap = prepare(RunRequest(job=job))
    await row.asave(force_insert=True)
    created = snap.created_at
    running = dataclasses.replace(
        snap,
        state="RUNNING",
        attempt=1,
        version=snap.version + 2,
        scheduled_for=created + 10.0,
        assigned_at=created + 0.3,
        started_at=created + 12.5,
    )
    timings = RunTimings()
    await sync_to_async(apply_snapshots)([running], timings)
    await sync_to_async(apply_snapshots)([running], timings)
    assert timings.dispatch_latency.count == 1
    assert timings.dispatch_latency.total == pytest.approx(0.3)
    assert timings.start_lateness.count == 1
    assert timings.start_lateness.total == pytest.approx(2.5)


async def test_a_new_projector_continues_from_the_saved_histograms(bus):
    from rota.leader.timings import TimingsStore, read_timings

    first = TimingsStore(bus)
    base = await first.load()
    base_count = base.start_lateness.count
    base.observe_start(100.0, None, 101.0)
    assert await first.save(force=True)
    assert not await first.save(force=True)  # nothing new: no write

    second = TimingsStore(bus)  # the next leader's projector
    loaded = await second.load()
    assert loaded.start_lateness.count == base_count + 1
    loaded.observe_start(100.0, None, 100.5)
    assert await second.save(force=True)

    # The first projector (an old leader) saves late: it loses the
    # compare-and-set and adopts the stored counts instead of overwriting them.
    base.observe_start(100.0, None, 100.1)
    assert not await first.save(force=True)
    assert first.timings is not None
    assert first.timings.start_lateness.count == base_count + 2
    stored, _, _ = await read_timings(bus)
    assert stored.start_lateness.count == base_count + 2


async def test_runs_by_state_are_cached_for_a_few_seconds(bus, viewer, monkeypatch):
    await JobDefinition.objects.acreate(name="m-cache", kind="command", target="true")
    first = await viewer.get("/metrics")
    assert Exposition(first.content.decode()).get("rota_runs_by_state", state="PENDING") == 0
    job = await JobDefinition.objects.aget(name="m-cache")
    from rota.runs.service import prepare

    row, _ = prepare(RunRequest(job=job))
    await row.asave(force_insert=True)
    cached = Exposition((await viewer.get("/metrics")).content.decode())
    assert cached.get("rota_runs_by_state", state="PENDING") == 0
    monkeypatch.setattr(metrics_api, "RUNS_CACHE_SECONDS", 0.0)
    await asyncio.sleep(0)
    fresh = Exposition((await viewer.get("/metrics")).content.decode())
    assert fresh.get("rota_runs_by_state", state="PENDING") == 1
