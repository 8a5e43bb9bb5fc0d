"""Readable names for schedules saved without one (seed 004 §6).

A job has many schedules, each with its own params, so a name says which one
it is: the job's short name, then the values of the params that set this
schedule apart from the job's other schedules, then how often it fires::

    fetch_listed_info_task_asyncpg, {"period_type": "weekly"}, "0 0 * * *",
    others [{"period_type": "daily"}]          →  fetch_listed_info_weekly_daily

Rules taken from the seed: the job name loses a ``_task_asyncpg`` or ``_task``
suffix; the parts are joined with ``_``; the frequency word is ``every_minute``
for ``* * * * *``, ``hourly`` for ``0 * * * *``, ``daily`` for ``0 0 * * *``,
``weekly`` for ``0 0 * * 0``, ``monthly`` for ``0 0 1 * *``, else ``custom``.
Extended here: the seed picked params per task by hand (``period_type`` for
fetch_listed_info); rota has no per-task code, so it takes every param whose
value differs in some other schedule of the job. And the frequency word comes
from the schedule's structured form, so ``30 9 * * *`` is ``daily`` too and
``*/5 * * * *`` is ``every_5_minutes``.

Names are ASCII snake_case and at most :data:`MAX_NAME_LENGTH` characters. They
are not unique (seed 004 dropped the unique constraint): two schedules with
the same params and frequency get the same name.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from rota.domain.schedules import structured_from_cron, validate_structured

__all__ = [
    "MAX_NAME_LENGTH",
    "distinguishing_keys",
    "frequency_word",
    "schedule_name",
    "short_job_name",
    "slug",
]

#: Schedule.name's max_length.
MAX_NAME_LENGTH = 200
#: The longest a single param value may make the name.
_MAX_VALUE_LENGTH = 40

_CAMEL_1 = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_CAMEL_2 = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """ASCII snake_case: ``"Fetch-ListedInfo v2"`` → ``fetch_listed_info_v2``.

    Letters with accents lose them; characters with no ASCII form (kana, kanji)
    are dropped, so the result may be empty.
    """
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = _CAMEL_2.sub("_", _CAMEL_1.sub("_", text))
    return _NON_WORD.sub("_", text.lower()).strip("_")


def short_job_name(job_name: str) -> str:
    """The job name as a slug without a ``_task_asyncpg`` / ``_task`` suffix (seed §6)."""
    name = slug(job_name)
    for suffix in ("_task_asyncpg", "_task"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name or "schedule"


def frequency_word(cron_or_structured: str | Mapping[str, Any]) -> str:
    """``every_minute``, ``every_<n>_minutes``, ``hourly``, ``daily``, ``weekly``,
    ``monthly`` or ``custom``. Raises InvalidInput for an invalid cron or form."""
    if isinstance(cron_or_structured, str):
        form = structured_from_cron(cron_or_structured)
    else:
        form = validate_structured(dict(cron_or_structured))
    if form is None:
        return "custom"
    every = form["every"]
    if every == "minutes":
        return "every_minute" if form["n"] == 1 else f"every_{form['n']}_minutes"
    return {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly"}[every]


def _canonical(value: Any) -> bytes:
    # JSON, not ==: True == 1 == 1.0 in Python but they are different params.
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # Integers past 64 bits (Python's JSON parser keeps them): slower, same idea.
        return json.dumps(value, sort_keys=True, default=repr).encode()


def distinguishing_keys(
    params: Mapping[str, Any], other_schedules_params: Sequence[Mapping[str, Any]]
) -> list[str]:
    """This schedule's param keys whose value some other schedule of the job does
    not share (it has another value, or none), sorted (JSON key order is not
    kept by every database)."""
    keys = []
    for key in sorted(params, key=str):
        mine = _canonical(params[key])
        if any(
            key not in other or _canonical(other[key]) != mine for other in other_schedules_params
        ):
            keys.append(key)
    return keys


def _value_part(key: str, value: Any) -> str:
    if value is None:
        return ""
    key_part = slug(key) or "param"
    if isinstance(value, bool):
        # "true"/"false" say nothing alone; the key does.
        return key_part if value else f"no_{key_part}"
    if isinstance(value, Mapping):
        text = "_".join(_value_part(str(k), value[k]) for k in sorted(value, key=str))
    elif isinstance(value, list | tuple):
        text = "_".join(_value_part(key, item) for item in value)
    else:
        text = str(value)
    part = slug(text)
    if not part and text.strip():
        # Nothing ASCII to show (e.g. a Japanese market name): the key and a
        # short hash still tell schedules apart.
        part = f"{key_part}_{hashlib.sha256(_canonical(value)).hexdigest()[:6]}"
    return part[:_MAX_VALUE_LENGTH].strip("_")


def schedule_name(
    job_name: str,
    params: Mapping[str, Any] | None,
    cron_or_structured: str | Mapping[str, Any],
    other_schedules_params: Sequence[Mapping[str, Any]],
) -> str:
    """The generated name of a schedule of ``job_name`` with ``params`` firing on
    ``cron_or_structured``, given the params of the job's other schedules.

    >>> schedule_name("fetch_listed_info_task_asyncpg", {"period_type": "weekly"},
    ...               "0 0 * * *", [{"period_type": "daily"}])
    'fetch_listed_info_weekly_daily'
    """
    params = params or {}
    frequency = frequency_word(cron_or_structured)
    # Half the room at most for the job, so the params still show.
    job = short_job_name(job_name)[: MAX_NAME_LENGTH // 2].rstrip("_")
    values = [
        _value_part(str(k), params[k]) for k in distinguishing_keys(params, other_schedules_params)
    ]
    param_info = slug("_".join(values))
    room = MAX_NAME_LENGTH - len(job) - len(frequency) - 2
    if len(param_info) > room:
        # Keep the ends readable and different params distinct: cut, then a hash.
        digest = hashlib.sha256(param_info.encode()).hexdigest()[:6]
        param_info = f"{param_info[: max(room - 7, 0)].rstrip('_')}_{digest}"
        param_info = param_info.strip("_")[: max(room, 0)]
    parts = [job, param_info, frequency]
    return "_".join(p for p in parts if p)
