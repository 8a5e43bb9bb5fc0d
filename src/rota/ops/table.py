"""The runs table: DataTables' server-side protocol over SQL.

One request is one page: filters (state, job, worker, date), a search term,
one sort column, ``start``/``length``. Counting a filtered set exactly over a
million rows costs more than the page itself, so counts are capped: up to
``COUNT_CAP`` rows are counted exactly, beyond it the number is PostgreSQL's
planner estimate (shown as "about N"), or on SQLite the cap itself ("more than
N"). Sorting is index-friendly: every sortable column has an index ending in
``id``, and the tiebreak on ``id`` runs in the direction that lets one index
scan serve the page (nulls come first in descending order on PostgreSQL).

The date filter works on the run id: ULIDs start with their creation time, so
a time range is an id range on the primary key.

Worker ids are filtered by prefix and sorted through ``worker_key()``: on
PostgreSQL the column in the "C" collation, which its index (migration 0004)
also uses, so that a prefix is an index range and the sort that index's order;
in a database's own collation (C.UTF-8 included) PostgreSQL can use neither for
a ``LIKE`` prefix, and walks the whole index instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Collate
from django.http import QueryDict
from ulid import ULID

from rota.domain.states import RunState
from rota.errors import InvalidInput
from rota.models import JobDefinition, JobRun

COUNT_CAP = 10_000
MAX_PAGE = 500

#: DataTables column name → model field; only these sort.
SORTABLE = {
    "run_id": "id",
    "job": "job_name",
    "state": "state",
    "worker_id": "worker_id",
    "scheduled_for": "scheduled_for",
    "started_at": "started_at",
    "finished_at": "finished_at",
}

COLUMNS = (
    "id",
    "job_name",
    "state",
    "worker_id",
    "attempt",
    "tag",
    "scheduled_for",
    "started_at",
    "finished_at",
    "error_summary",
    "created_at",
    "retry_at",
)


@dataclass(frozen=True)
class TableRequest:
    draw: int
    start: int
    length: int
    search: str
    order_column: str
    descending: bool
    states: tuple[str, ...]
    job: str
    worker: str
    date_from: datetime | None
    date_to: datetime | None


def _int(q: QueryDict, key: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(key, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{key} must be a whole number, not {raw!r}", field=key) from None
    return max(lo, min(hi, value))


#: The earliest moment the date filters take: run ids (ULIDs) count from it.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def parse_date(raw: str, key: str, end: bool = False) -> datetime | None:
    """A date filter's value as a moment in UTC: ``YYYY-MM-DD`` (with ``end``,
    the moment after that day) or an ISO 8601 date-time; None when empty.

    Not a date, or before 1970-01-01, is a 422 naming ``key``. The end of
    9999-12-31 is past the last moment a datetime holds, so it is None too: no
    upper bound."""
    raw = raw.strip()
    if not raw:
        return None
    day = len(raw) == 10
    try:
        if day:
            value = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            value = datetime.fromisoformat(raw)
            value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{key} must be a date (YYYY-MM-DD), not {raw!r}", field=key) from None
    if value < EARLIEST:
        raise InvalidInput(f"{key} must be 1970-01-01 or later, not {raw!r}", field=key)
    if not (day and end):
        return value
    try:
        return value + timedelta(days=1)
    except OverflowError:
        return None


def _date(q: QueryDict, key: str, end: bool) -> datetime | None:
    return parse_date(q.get(key, ""), key, end)


def parse_request(q: QueryDict) -> TableRequest:
    """DataTables' parameters plus the page's filters; bad values are a 422."""
    column_index = _int(q, "order[0][column]", -1, -1, 100)
    name = q.get(f"columns[{column_index}][data]", "") if column_index >= 0 else ""
    if name and name not in SORTABLE:
        raise InvalidInput(f"cannot sort by {name!r}", field="order")
    direction = q.get("order[0][dir]", "desc").lower()
    if direction not in ("asc", "desc"):
        raise InvalidInput("order direction must be asc or desc", field="order")
    states = tuple(s.strip().upper() for s in q.get("state", "").split(",") if s.strip())
    for s in states:
        if s not in RunState.__members__:
            raise InvalidInput(f"unknown state {s!r}", field="state")
    return TableRequest(
        draw=_int(q, "draw", 0, 0, 2**31),
        start=_int(q, "start", 0, 0, 10**9),
        length=_int(q, "length", 50, 1, MAX_PAGE),
        search=q.get("search[value]", "").strip()[:100],
        order_column=SORTABLE.get(name, "id"),
        descending=direction == "desc",
        states=states,
        job=q.get("job", "").strip(),
        worker=q.get("worker", "").strip(),
        date_from=_date(q, "date_from", end=False),
        date_to=_date(q, "date_to", end=True),
    )


def _ulid_floor(at: datetime) -> str:
    """The smallest run id created at or after ``at``."""
    return str(ULID.from_datetime(at))[:10] + "0" * 16


def worker_key() -> Any:
    """The expression worker ids are matched and sorted by (see the module doc)."""
    if connection.vendor == "postgresql":
        return Collate("worker_id", "C")
    return F("worker_id")


def filtered(req: TableRequest) -> QuerySet[JobRun]:
    qs = JobRun.objects.alias(worker_key=worker_key())
    if req.states:
        qs = qs.filter(state__in=req.states)
    if req.job:
        qs = qs.filter(job_name=req.job)
    if req.worker:
        qs = qs.filter(worker_key__startswith=req.worker)
    if req.date_from:
        qs = qs.filter(id__gte=_ulid_floor(req.date_from))
    if req.date_to:
        qs = qs.filter(id__lt=_ulid_floor(req.date_to))
    if req.search:
        qs = qs.filter(search_q(req.search))
    return qs


#: A run id prefix worth searching: Crockford base32, at least 6 characters
#: (shorter ones match whole days of runs and say little).
_RUN_ID_PREFIX = re.compile(r"^[0-9A-HJKMNP-TV-Z]{6,26}$")


def search_q(term: str) -> Q:
    """What the search box matches: a state's name; else a prefix of job names,
    of run ids or of worker ids, each only if some run has it.

    Each part is one indexed condition, and only the parts that match go into
    the query: an OR of conditions that match nothing would still make
    PostgreSQL plan for all of them (job names resolve to an ``IN`` list
    through the job table; run ids and worker ids are probed with one index
    lookup each)."""
    upper = term.upper()
    if upper in RunState.__members__:
        return Q(state=upper)
    found = Q(pk__in=[])
    jobs = list(
        JobDefinition.objects.filter(name__startswith=term).values_list("name", flat=True)[:500]
    )
    if jobs:
        found |= Q(job_name__in=jobs)
    if _RUN_ID_PREFIX.match(upper) and JobRun.objects.filter(id__startswith=upper).exists():
        found |= Q(id__startswith=upper)
    if JobRun.objects.alias(worker_key=worker_key()).filter(worker_key__startswith=term).exists():
        found |= Q(worker_key__startswith=term)
    return found


#: Columns indexed as (col, id) (migration 0004): the tiebreak runs in the sort's
#: direction. The others are indexed as (col, -id) (migration 0001): against it.
SAME_DIRECTION_TIEBREAK = {"scheduled_for", "started_at", "finished_at", "worker_key"}


def ordered(qs: QuerySet[JobRun], req: TableRequest) -> QuerySet[JobRun]:
    """One index scan, forwards or backwards, serves every order the table asks for."""
    col = "worker_key" if req.order_column == "worker_id" else req.order_column
    if col == "id":
        return qs.order_by("-id" if req.descending else "id")
    same = col in SAME_DIRECTION_TIEBREAK
    if req.descending:
        return qs.order_by(f"-{col}", "-id" if same else "id")
    return qs.order_by(col, "id" if same else "-id")


def capped_count(qs: QuerySet[JobRun]) -> tuple[int, bool]:
    """(count, exact). Exact up to COUNT_CAP; beyond it an estimate."""
    n = qs.order_by()[: COUNT_CAP + 1].count()
    if n <= COUNT_CAP:
        return n, True
    return max(COUNT_CAP + 1, _estimate(qs)), False


def _estimate(qs: QuerySet[JobRun]) -> int:
    """The planner's row estimate (PostgreSQL); 0 elsewhere."""
    if connection.vendor != "postgresql":
        return 0
    sql, params = qs.order_by().values("id").query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cur.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def row_out(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": r["id"],
        "job": r["job_name"],
        "state": r["state"],
        "worker_id": r["worker_id"],
        "attempt": r["attempt"],
        "tag": r["tag"],
        "scheduled_for": _iso(r["scheduled_for"]),
        "started_at": _iso(r["started_at"]),
        "finished_at": _iso(r["finished_at"]),
        "created_at": _iso(r["created_at"]),
        "error_summary": (r["error_summary"] or "")[:200],
        "retry_at": _iso(r["retry_at"]) if r["state"] == "PENDING" else None,
    }


def table_page(req: TableRequest) -> dict[str, Any]:
    """The DataTables answer for one request."""
    base = filtered(req)
    rows = list(ordered(base, req).values(*COLUMNS)[req.start : req.start + req.length])
    filtered_count, filtered_exact = capped_count(base)
    unfiltered = req == _unfiltered(req)
    if unfiltered:
        total, total_exact = filtered_count, filtered_exact
    else:
        total, total_exact = capped_count(JobRun.objects.all())
    return {
        "draw": req.draw,
        "recordsTotal": total,
        "recordsFiltered": filtered_count,
        "exactTotal": total_exact,
        "exactFiltered": filtered_exact,
        "countCap": COUNT_CAP,
        "data": [row_out(r) for r in rows],
    }


def _unfiltered(req: TableRequest) -> TableRequest:
    from dataclasses import replace

    return replace(req, search="", states=(), job="", worker="", date_from=None, date_to=None)
