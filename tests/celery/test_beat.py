"""``celery beat -S rota.celery.beat:RotaScheduler``: two real beat processes
and rota's leader fire one per-minute schedule together; every tick is fired
once, its task runs once, and a rota worker follows each run to its end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from rota.domain.states import RunState
from rota.models import FireRecord, JobDefinition, JobRun, Schedule, SchedulerSettings
from rota.worker.executors.celery import CeleryExecutor
from tests.celery.conftest import ROOT, session_database_file
from tests.conftest import eventually, running_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def start_beat(name: str, log_dir: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ROTA_DATABASE_URL": f"sqlite:///{session_database_file()}",
    }
    env.pop("ROTA_TEST_DATABASE_NAME", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery.app",
            "beat",
            "-S",
            "rota.celery.beat:RotaScheduler",
            "--max-interval",
            "1",
            "-l",
            "INFO",
            "-s",
            str(log_dir / f"{name}.db"),
        ],
        cwd=ROOT,
        env=env,
        stdout=(log_dir / f"{name}.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.timeout(420)
async def test_two_beats_and_the_leader_fire_each_tick_once(
    bus, rota_settings, celery_app, celery_worker, tmp_path
):
    # No assign-ahead: the leader fires at the nominal time, racing the beats.
    s = await SchedulerSettings.objects.aget_or_create(pk=1)
    await SchedulerSettings.objects.filter(pk=1).aupdate(assign_ahead_seconds=0)
    del s
    beats = [start_beat(f"beat{i}", tmp_path) for i in (1, 2)]
    executor = CeleryExecutor(celery_app, poll_seconds=0.1)
    try:
        async with running_worker(
            rota_settings, tags=["celery-t"], executors={"celery": executor}
        ) as worker:
            await eventually(lambda: asyncio.sleep(0, worker.campaign.is_leader), timeout=30)
            for i in (1, 2):
                await eventually(
                    lambda i=i: asyncio.sleep(
                        0, "rota beat: 0 schedule(s)" in (tmp_path / f"beat{i}.log").read_text()
                    ),
                    timeout=60,
                )
            # Made while the beats run: they see it within their sync interval.
            log = tmp_path / "ticks.log"
            job = await JobDefinition.objects.acreate(
                name="rt.tick", kind="celery", target="rt.tick", tags=["celery-t"]
            )
            sched = await Schedule.objects.acreate(
                job=job, cron="* * * * *", params={"log": str(log)}
            )
            for i in (1, 2):
                await eventually(
                    lambda i=i: asyncio.sleep(
                        0, "rota beat: 1 schedule(s)" in (tmp_path / f"beat{i}.log").read_text()
                    ),
                    timeout=30,
                )
            first = await eventually(
                lambda: FireRecord.objects.filter(schedule=sched).order_by("nominal_time").afirst(),
                timeout=75,
            )
            await asyncio.sleep(3 * 60 + 5)  # three more ticks after the first
            records = [
                r async for r in FireRecord.objects.filter(schedule=sched).order_by("nominal_time")
            ]
            runs = [r.run_id for r in records]

            async def all_done():
                n = await JobRun.objects.filter(id__in=runs, state=RunState.SUCCEEDED).acount()
                return n == len(runs)

            await eventually(all_done, timeout=60)
    finally:
        for b in beats:
            b.kill()
            b.wait(10)
    nominals = [r.nominal_time for r in records]
    assert len(nominals) >= 4
    assert nominals[0] == first.nominal_time
    assert all(b - a == timedelta(minutes=1) for a, b in zip(nominals, nominals[1:], strict=False))
    assert all(r.outcome == FireRecord.Outcome.FIRED for r in records)
    executed = Counter(line.split()[0] for line in log.read_text().splitlines())
    # Each tick's task ran exactly once, and nothing else ran.
    assert set(executed) == set(runs), (executed, runs)
    assert max(executed.values()) == 1, executed
    by = Counter("beat" if r.leader_epoch == 0 else "leader" for r in records)
    print(f"{len(records)} ticks: fired by {dict(by)}; each task ran once")
