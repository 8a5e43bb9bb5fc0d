"""Bad input to the ops UI is a 422 ``{"detail": ...}`` naming the culprit, never
a 500: dates outside what run ids and datetimes hold, JSON bodies of the wrong
shape. Through Django's test client on the real database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from ulid import ULID

from rota.models import AdminActionLog, JobDefinition, JobRun

pytestmark = pytest.mark.django_db(transaction=True)


def _user(name: str, group: str) -> Client:
    user = User.objects.create_user(name, password="pw")
    user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def run_ids() -> set[str]:
    job = JobDefinition.objects.create(name="alpha", kind="command", target="true")
    ids = set()
    for created in (datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)):
        run_id = str(ULID.from_datetime(created))
        JobRun.objects.create(
            id=run_id, job=job, job_name="alpha", kind="command", created_at=created
        )
        ids.add(run_id)
    return ids


def _table(client: Client, **q: str):  # type: ignore[no-untyped-def]
    return client.get("/ops/runs/data", {"length": "100", **q})


def test_runs_table_dates_before_1970_are_422_naming_the_field(run_ids):
    viewer = _user("v", "ops_view")
    for key, raw in (
        ("date_from", "1969-12-31"),
        ("date_from", "0001-01-01"),
        ("date_to", "1969-12-31"),
        ("date_from", "1970-01-01T00:30:00+01:00"),
        ("date_from", "0001-01-01T00:00:00+01:00"),
        ("date_to", "9999-12-31T23:00:00-05:00"),
    ):
        r = _table(viewer, **{key: raw})
        assert r.status_code == 422, (key, raw)
        assert key in r.json()["detail"], (key, raw)


def test_runs_table_dates_at_the_ends_of_the_range(run_ids):
    viewer = _user("v", "ops_view")

    def ids(**q: str) -> set[str]:
        r = _table(viewer, **q)
        assert r.status_code == 200, (q, r.content)
        return {row["run_id"] for row in r.json()["data"]}

    assert ids(date_to="9999-12-31") == run_ids
    assert ids(date_from="1970-01-01", date_to="9999-12-31") == run_ids
    assert ids(date_from="9999-12-31") == set()
    assert ids(date_to="1970-01-01") == {min(run_ids)}
    assert ids(date_to="9999-12-31T23:59:59") == run_ids


def test_audit_page_dates_are_checked_like_the_runs_table(run_ids):
    viewer = _user("v", "ops_view")
    AdminActionLog.objects.create(actor="v", action="job.run_now", target="the-audited-job")
    page = viewer.get("/ops/audit/", {"date_to": "9999-12-31"})
    assert page.status_code == 200 and "the-audited-job" in page.content.decode()
    page = viewer.get("/ops/audit/", {"date_from": "9999-12-31"})
    assert page.status_code == 200 and "the-audited-job" not in page.content.decode()
    for key, raw in (
        ("date_from", "1969-12-31"),
        ("date_from", "0001-01-01"),
        ("date_to", "yesterday"),
    ):
        r = viewer.get("/ops/audit/", {key: raw})
        assert r.status_code == 422, (key, raw)
        assert key in r.json()["detail"], (key, raw)


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ('{"worker_id": 5}', "worker_id"),
        ('{"worker_id": ["node-1"]}', "worker_id"),
        ('{"worker_id": {"id": "node-1"}}', "worker_id"),
        ("[1]", "object"),
        ('"node-1"', "object"),
        ("{not json", "JSON"),
    ],
)
def test_reassign_with_a_badly_shaped_body_is_422(run_ids, body, word):
    operator = _user("o", "ops_operator")
    r = operator.post(f"/ops/runs/{min(run_ids)}/reassign", body, content_type="application/json")
    assert r.status_code == 422
    assert word in r.json()["detail"]
    assert not AdminActionLog.objects.exists()


@pytest.mark.parametrize(
    ("body", "word"),
    [("[1]", "body"), ("5", "body"), ('{"params": "a=1"}', "params")],
)
def test_run_now_with_a_badly_shaped_body_is_422(run_ids, body, word):
    operator = _user("o", "ops_operator")
    r = operator.post("/ops/jobs/alpha/run", body, content_type="application/json")
    assert r.status_code == 422
    assert word in r.json()["detail"]
    assert not JobRun.objects.filter(job_name="alpha").exclude(id__in=run_ids).exists()
