"""The ops UI's runs table over SQL (DataTables' server-side protocol) and the
ops pages' access rules, through Django's test client on the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from ulid import ULID

from rota.models import AdminActionLog, JobDefinition, JobRun
from rota.ops import table

pytestmark = pytest.mark.django_db(transaction=True)

COLUMNS = [
    "run_id",
    "job",
    "state",
    "worker_id",
    "attempt",
    "scheduled_for",
    "started_at",
    "finished_at",
]


def _query(**extra: str) -> dict[str, str]:
    q = {
        "draw": "3",
        "start": "0",
        "length": "10",
        "order[0][column]": "0",
        "order[0][dir]": "desc",
    }
    q.update({f"columns[{i}][data]": c for i, c in enumerate(COLUMNS)})
    q.update(extra)
    return q


def _user(name: str, group: str | None) -> Client:
    user = User.objects.create_user(name, password="pw")
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def runs():
    alpha = JobDefinition.objects.create(name="alpha", kind="command", target="true")
    beta = JobDefinition.objects.create(name="beta", kind="command", target="true")
    day = datetime(2026, 3, 1, tzinfo=UTC)
    rows = []
    for i in range(30):
        job = alpha if i % 3 else beta
        created = day + timedelta(hours=i)
        rows.append(
            JobRun(
                id=str(ULID.from_datetime(created)),
                job=job,
                job_name=job.name,
                kind="command",
                state="FAILED" if i % 5 == 0 else "SUCCEEDED",
                worker_id=f"node-{i % 2}-abcd",
                started_at=created if i % 4 else None,
                created_at=created,
            )
        )
    JobRun.objects.bulk_create(rows)
    return rows


def test_page_order_and_draw(runs):
    viewer = _user("v", "ops_view")
    body = viewer.get("/ops/runs/data", _query(start="10")).json()
    assert body["draw"] == 3
    assert body["recordsTotal"] == body["recordsFiltered"] == 30
    newest_first = sorted((r.id for r in runs), reverse=True)
    assert [r["run_id"] for r in body["data"]] == newest_first[10:20]
    by_job = viewer.get(
        "/ops/runs/data",
        _query(**{"order[0][column]": "1", "order[0][dir]": "asc", "length": "30"}),
    ).json()
    assert [r["job"] for r in by_job["data"]] == ["alpha"] * 20 + ["beta"] * 10


def test_search_filters_and_dates(runs):
    viewer = _user("v", "ops_view")

    def ids(**q: str) -> set[str]:
        body = viewer.get("/ops/runs/data", _query(length="100", **q)).json()
        assert body["recordsFiltered"] == len(body["data"])
        return {r["run_id"] for r in body["data"]}

    assert ids(**{"search[value]": "alp"}) == {r.id for r in runs if r.job_name == "alpha"}
    assert ids(**{"search[value]": "failed"}) == {r.id for r in runs if r.state == "FAILED"}
    assert ids(**{"search[value]": "node-1"}) == {
        r.id for r in runs if r.worker_id == "node-1-abcd"
    }
    assert ids(**{"search[value]": runs[7].id[:14].lower()}) == {runs[7].id}
    assert ids(**{"search[value]": "nothing-like-it"}) == set()
    assert ids(state="FAILED", job="beta") == {
        r.id for r in runs if r.state == "FAILED" and r.job_name == "beta"
    }
    assert ids(date_from="2026-03-02", date_to="2026-03-02") == {r.id for r in runs[24:30]}


def test_capped_counts_are_marked_estimates(runs, monkeypatch):
    monkeypatch.setattr(table, "COUNT_CAP", 5)
    viewer = _user("v", "ops_view")
    body = viewer.get("/ops/runs/data", _query()).json()
    assert body["exactTotal"] is False and body["exactFiltered"] is False
    assert body["recordsFiltered"] >= 6 and body["countCap"] == 5
    small = viewer.get("/ops/runs/data", _query(state="FAILED", job="beta")).json()
    assert small["exactFiltered"] is True and small["recordsFiltered"] == 2


def test_bad_parameters_are_422(runs):
    viewer = _user("v", "ops_view")
    for bad in (
        {"order[0][column]": "8", "columns[8][data]": "error_summary"},
        {"order[0][dir]": "sideways"},
        {"state": "BORED"},
        {"date_from": "yesterday"},
        {"start": "x"},
    ):
        r = viewer.get("/ops/runs/data", _query(**bad))
        assert r.status_code == 422, bad
        assert r.json()["detail"]


def test_pages_need_login_and_an_ops_group(runs):
    anonymous = Client()
    r = anonymous.get("/ops/runs/")
    assert r.status_code == 302 and r["Location"].startswith("/ops/login/")
    assert anonymous.get("/ops/runs/data", HTTP_ACCEPT="application/json").status_code == 401
    nobody = _user("nobody", None)
    assert nobody.get("/ops/jobs/").status_code == 403
    assert nobody.get("/ops/runs/data", _query()).status_code == 403


def test_viewer_pages_have_no_operations_and_posts_are_refused(runs):
    viewer = _user("v", "ops_view")
    admin = _user("a", "ops_admin")
    page = viewer.get("/ops/jobs/").content.decode()
    assert "alpha" in page and "data-ops-confirm" not in page and "data-ops-form" not in page
    assert "data-ops-form" in admin.get("/ops/jobs/").content.decode()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.get(username="v"))
    assert (
        strict.post("/ops/jobs/alpha/run", "{}", content_type="application/json").status_code == 403
    )
    r = viewer.post("/ops/jobs/alpha/run", "{}", content_type="application/json")
    assert r.status_code == 403 and "ops_operator" in r.json()["detail"]
    assert not AdminActionLog.objects.exists()


def test_run_now_of_a_disabled_job_is_a_conflict(runs):
    operator = _user("o", "ops_operator")
    JobDefinition.objects.filter(name="beta").update(enabled=False)
    r = operator.post("/ops/jobs/beta/run", "{}", content_type="application/json")
    assert r.status_code == 409 and "disabled" in r.json()["detail"]
    r = operator.post("/ops/jobs/nope/run", "{}", content_type="application/json")
    assert r.status_code == 404
    r = operator.post("/ops/jobs/alpha/run", '{"params": [1]}', content_type="application/json")
    assert r.status_code == 422
