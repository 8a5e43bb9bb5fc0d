"""The pure parts of the Celery integration: options, the never-reports rule,
schemas from signatures, Celery schedules as cron."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import pytest

from rota.domain.celery import (
    Unmappable,
    crontab_to_cron,
    give_up,
    interval_to_cron,
    params_schema_for,
    parse_options,
)
from rota.errors import InvalidInput


def test_options_parse_and_refuse_with_the_item_named():
    o = parse_options(["queue=reports", "priority=5", "countdown=1.5", "start_timeout=60"])
    assert o.send_kwargs() == {"queue": "reports", "priority": 5, "countdown": 1.5}
    assert o.start_timeout == 60
    for bad, text in [
        (["queue"], "'queue'"),
        (["x=1"], "'x=1'"),
        (["priority=high"], "not int"),
        (["priority=256"], "0-255"),
        (["expires=-1"], ">= 0"),
        (["queue="], "empty"),
    ]:
        with pytest.raises(InvalidInput, match=text):
            parse_options(bad)


def rule(**kw):
    base = dict(
        now=100.0,
        sent_at=0.0,
        celery_state="PENDING",
        timeout=None,
        start_timeout=50,
        max_runtime=1000,
    )
    return give_up(**{**base, **kw})


def test_the_never_reports_rule():
    assert rule(now=10) is None
    assert rule(now=49) is None
    assert rule(now=50).state == "FAILED"  # still PENDING past start_timeout
    assert rule(now=50, celery_state="RECEIVED").state == "FAILED"
    assert rule(now=500, celery_state="STARTED") is None  # running: no start limit
    assert rule(now=1000, celery_state="STARTED").state == "TIMED_OUT"  # max runtime
    assert rule(now=30, timeout=20, celery_state="STARTED").state == "TIMED_OUT"
    # The job's timeout replaces max_runtime.
    assert rule(now=2000, timeout=5000, celery_state="STARTED") is None


def test_schema_from_signature_and_hints():
    def task(
        region: str,
        full: bool = False,
        limit: int | None = None,
        mode: Literal["a", "b"] = "a",
        ids: list[int] = (),  # type: ignore[assignment]
        blob=None,
        **extra,
    ): ...  # noqa: B006

    s = params_schema_for(task)
    assert s["required"] == ["region"]
    assert s["properties"]["region"] == {"type": "string"}
    assert s["properties"]["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert s["properties"]["mode"] == {"enum": ["a", "b"]}
    assert s["properties"]["ids"] == {"type": "array", "items": {"type": "integer"}}
    assert s["properties"]["blob"] == {}
    assert "additionalProperties" not in s  # **extra

    def closed(a: int, b: int): ...

    assert params_schema_for(closed)["additionalProperties"] is False


def test_intervals_map_to_cron_only_when_cron_repeats_them():
    assert interval_to_cron(timedelta(minutes=1)) == "* * * * *"
    assert interval_to_cron(timedelta(minutes=15)) == "*/15 * * * *"
    assert interval_to_cron(timedelta(hours=1)) == "0 * * * *"
    assert interval_to_cron(timedelta(hours=6)) == "0 */6 * * *"
    assert interval_to_cron(timedelta(days=1)) == "0 0 * * *"
    for bad in (timedelta(seconds=90), timedelta(minutes=7), timedelta(hours=5), timedelta(days=2)):
        with pytest.raises(Unmappable):
            interval_to_cron(bad)


def test_crontab_with_both_day_fields_is_refused():
    full_dow, full_dom = set(range(7)), set(range(1, 32))
    assert (
        crontab_to_cron(
            "0", "9", "mon-fri", "*", "*", dow_values={1, 2, 3, 4, 5}, dom_values=full_dom
        )
        == "0 9 * * mon-fri"
    )
    with pytest.raises(Unmappable, match="both restricted"):
        crontab_to_cron("0", "0", "mon", "1", "*", dow_values={1}, dom_values={1})
    assert crontab_to_cron("0", "0", "*", "1", "*", dow_values=full_dow, dom_values={1})
