"""Task records of a Pyoco flow run, fitted to the live snapshot. Pure.

A record may hold a task's inputs, output and traceback, so a run's records can
grow without bound; the snapshot (and every SSE frame and projector batch) must
not. :func:`fit_records` keeps them under a byte limit: records that fit whole
stay whole, the rest are cut to a stub (state, timings, the start of the error),
and a stub that does not fit either is dropped. Failed tasks go first, so the
error that failed a run survives.
"""

from __future__ import annotations

from typing import Any

import orjson

#: Bytes of JSON the task records of one run may take in the snapshot.
TASK_RECORDS_LIMIT = 64 * 1024

#: Characters of a task's error kept in a stub.
STUB_ERROR_CHARS = 1000

_STUB_FIELDS = ("state", "started_at", "ended_at", "duration_ms")


def _size(value: Any) -> int:
    return len(orjson.dumps(value, default=repr))


def stub(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its inputs, output, artifacts and traceback."""
    out = {k: record.get(k) for k in _STUB_FIELDS}
    error = record.get("error")
    out["error"] = error[:STUB_ERROR_CHARS] if isinstance(error, str) else error
    out["truncated"] = True
    return out


def fit_records(
    records: dict[str, dict[str, Any]], limit: int = TASK_RECORDS_LIMIT
) -> tuple[dict[str, dict[str, Any]], bool]:
    """``records`` cut to at most ``limit`` bytes of JSON; True if anything was cut.

    The result keeps the order of ``records``."""
    if _size(records) <= limit:
        return records, False
    kept: dict[str, dict[str, Any]] = {}
    used = 2  # the braces
    failed_first = sorted(records, key=lambda n: records[n].get("state") != "FAILED")
    for name in failed_first:
        for candidate in (records[name], stub(records[name])):
            # name, colon, comma and quotes: an entry costs its own encoding.
            cost = _size({name: candidate}) - 1
            if used + cost <= limit:
                kept[name] = candidate
                used += cost
                break
    return {n: kept[n] for n in records if n in kept}, True


def first_failure(records: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    """(task name, error) of the first failed task that has an error, if any."""
    failed = [
        (r.get("ended_at") or 0.0, name, r.get("error"))
        for name, r in records.items()
        if r.get("state") == "FAILED" and r.get("error")
    ]
    if not failed:
        return None
    _, name, error = min(failed)
    return name, str(error)
