"""Generated schedule names (seed 004 §6)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.domain.naming import (
    MAX_NAME_LENGTH,
    distinguishing_keys,
    frequency_word,
    schedule_name,
    short_job_name,
    slug,
)
from rota.errors import InvalidInput

SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


def test_seed_example() -> None:
    others = [{"period_type": "daily"}]
    name = schedule_name(
        "fetch_listed_info_task_asyncpg", {"period_type": "weekly"}, "0 0 * * *", others
    )
    assert name == "fetch_listed_info_weekly_daily"


@pytest.mark.parametrize(
    ("job", "short"),
    [
        ("fetch_listed_info_task_asyncpg", "fetch_listed_info"),
        ("fetch_listed_info_task", "fetch_listed_info"),
        ("fetch_listed_info", "fetch_listed_info"),
        ("FetchListedInfoTask", "fetch_listed_info"),
        ("reports.daily-export", "reports_daily_export"),
        ("HTTPServerPing", "http_server_ping"),
        ("_task", "task"),
        ("日次処理", "schedule"),
    ],
)
def test_short_job_name(job: str, short: str) -> None:
    assert short_job_name(job) == short


@pytest.mark.parametrize(
    ("cron", "word"),
    [
        # The seed's table.
        ("* * * * *", "every_minute"),
        ("0 * * * *", "hourly"),
        ("0 0 * * *", "daily"),
        ("0 0 * * 0", "weekly"),
        ("0 0 1 * *", "monthly"),
        ("*/10 9-17 * * 1-5", "custom"),
        # Any time of day, any minute: the same word.
        ("*/5 * * * *", "every_5_minutes"),
        ("15 * * * *", "hourly"),
        ("30 9 * * *", "daily"),
        ("30 9 * * 1,3,5", "weekly"),
        ("0 6 15 * *", "monthly"),
        ("@daily", "daily"),
        ("0 0 1 1 *", "custom"),
    ],
)
def test_frequency_word_from_cron(cron: str, word: str) -> None:
    assert frequency_word(cron) == word


def test_frequency_word_from_structured() -> None:
    assert frequency_word({"every": "minutes", "n": 1}) == "every_minute"
    assert frequency_word({"every": "minutes", "n": 15}) == "every_15_minutes"
    assert frequency_word({"every": "hour", "minute": 5}) == "hourly"
    assert frequency_word({"every": "day", "time": "09:00"}) == "daily"
    assert frequency_word({"every": "week", "days": ["mon"], "time": "09:00"}) == "weekly"
    assert frequency_word({"every": "month", "day": 1, "time": "09:00"}) == "monthly"
    with pytest.raises(InvalidInput) as info:
        frequency_word({"every": "minutes", "n": 0})
    assert info.value.field == "structured.n"
    with pytest.raises(InvalidInput) as info:
        frequency_word("0 25 * * *")
    assert info.value.field == "cron"


def test_only_distinguishing_params_are_named() -> None:
    mine = {"period_type": "weekly", "market": "prime", "retries": 3}
    others = [
        {"period_type": "daily", "market": "prime", "retries": 3},
        {"period_type": "weekly", "market": "growth", "retries": 3},
    ]
    assert distinguishing_keys(mine, others) == ["market", "period_type"]
    assert schedule_name("fetch_listed_info", mine, "0 0 * * *", others) == (
        "fetch_listed_info_prime_weekly_daily"
    )
    # The job's only schedule: nothing to tell apart.
    assert schedule_name("fetch_listed_info", mine, "0 0 * * *", []) == "fetch_listed_info_daily"
    # A key the other schedule lacks distinguishes; one only the other has does not.
    assert distinguishing_keys({"a": 1}, [{"b": 2}]) == ["a"]
    assert distinguishing_keys({}, [{"b": 2}]) == []
    # Different JSON values, equal to Python: still different params.
    assert distinguishing_keys({"a": True}, [{"a": 1}]) == ["a"]
    assert distinguishing_keys({"a": 1}, [{"a": 1.0}]) == ["a"]
    assert distinguishing_keys({"a": {"x": 1, "y": 2}}, [{"a": {"y": 2, "x": 1}}]) == []


def test_value_rendering() -> None:
    other: list[dict[str, object]] = [{}]
    assert schedule_name("job", {"from_date": "2024-01-31"}, "0 0 * * *", other) == (
        "job_2024_01_31_daily"
    )
    assert schedule_name("job", {"codes": ["7203", "6758"]}, "0 0 * * *", other) == (
        "job_7203_6758_daily"
    )
    assert schedule_name("job", {"full": True}, "0 0 * * *", other) == "job_full_daily"
    assert schedule_name("job", {"full": False}, "0 0 * * *", other) == "job_no_full_daily"
    assert schedule_name("job", {"ratio": 1.5}, "0 0 * * *", other) == "job_1_5_daily"
    assert schedule_name("job", {"x": None}, "0 0 * * *", other) == "job_daily"
    assert schedule_name("job", {"name": "Café Crème"}, "0 0 * * *", other) == (
        "job_cafe_creme_daily"
    )
    # No ASCII in the value: the key and a short hash, stable and distinct.
    a = schedule_name("job", {"market": "東証プライム"}, "0 0 * * *", other)
    b = schedule_name("job", {"market": "東証グロース"}, "0 0 * * *", other)
    assert re.fullmatch(r"job_market_[0-9a-f]{6}_daily", a)
    assert a != b
    assert a == schedule_name("job", {"market": "東証プライム"}, "0 0 * * *", other)
    # Structured form and params from None.
    assert schedule_name("job", None, {"every": "minutes", "n": 5}, []) == "job_every_5_minutes"


def test_long_names_are_cut_but_stay_distinct() -> None:
    long_a = {"codes": [str(n) for n in range(200)], "note": "a" * 300, "z": "x" * 50}
    long_b = {**long_a, "z": "y" * 50}
    a = schedule_name("job_" + "j" * 300, long_a, "0 0 * * *", [long_b])
    b = schedule_name("job_" + "j" * 300, long_b, "0 0 * * *", [long_a])
    assert len(a) <= MAX_NAME_LENGTH and len(b) <= MAX_NAME_LENGTH
    assert a != b
    assert a.endswith("_daily") and SNAKE.match(a)
    many = {f"k{i}": "v" * 40 for i in range(20)}
    c = schedule_name("job", many, "0 0 * * *", [{}])
    assert len(c) <= MAX_NAME_LENGTH and c.startswith("job_v") and c.endswith("_daily")
    assert SNAKE.match(c)


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=30)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
params_st = st.dictionaries(st.text(min_size=1, max_size=12), json_value, max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    job=st.text(max_size=60),
    params=params_st,
    others=st.lists(params_st, max_size=4),
    cron=st.sampled_from(["* * * * *", "*/5 * * * *", "7 * * * *", "0 9 * * 1", "1 2 3 4 5"]),
)
def test_names_are_snake_case_ascii_and_bounded(
    job: str, params: dict, others: list[dict], cron: str
) -> None:
    name = schedule_name(job, params, cron, others)
    assert SNAKE.match(name), name
    assert name.isascii()
    assert len(name) <= MAX_NAME_LENGTH
    assert name.endswith(frequency_word(cron))
    assert name == schedule_name(job, dict(reversed(params.items())), cron, others)


def test_slug() -> None:
    assert slug("Fetch-ListedInfo v2") == "fetch_listed_info_v2"
    assert slug("  __a__b__ ") == "a_b"
    assert slug("東京") == ""
