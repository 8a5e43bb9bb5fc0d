"""Time conversions. Snapshots carry epoch seconds (cheap to encode and compare);
SQL and the API carry aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_from_ts(ts: float | None) -> datetime | None:
    """Epoch seconds → aware UTC datetime; None (or 0, never a real time) → None."""
    return datetime.fromtimestamp(ts, tz=UTC) if ts else None
