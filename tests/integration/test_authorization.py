"""The ops groups decide what an authenticated caller may do (seed 001 §3)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from rota.models import ApiToken, JobDefinition
from tests.integration.test_events import Authorized

pytestmark = pytest.mark.django_db(transaction=True)


async def _client(name: str, group: str | None, superuser: bool = False) -> Authorized:
    user = await get_user_model().objects.acreate(username=name, is_superuser=superuser)
    if group:
        g, _ = await Group.objects.aget_or_create(name=group)
        await user.groups.aadd(g)
    _, raw = await sync_to_async(ApiToken.issue)(user)
    return Authorized(raw)


async def test_the_ops_groups_migration_creates_them_once():
    """The data migration itself, run against the migration state (any earlier
    transactional test may have flushed what `migrate` wrote)."""
    import importlib

    from asgiref.sync import sync_to_async
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    migration = importlib.import_module("rota.migrations.0002_ops_groups")

    def run_twice() -> None:
        apps = MigrationExecutor(connection).loader.project_state(("rota", "0002_ops_groups")).apps
        Group.objects.filter(name__in=migration.GROUPS).delete()
        with connection.schema_editor() as editor:
            migration.create(apps, editor)
            migration.create(apps, editor)  # a second run adds nothing

    await sync_to_async(run_twice)()
    names = [g.name async for g in Group.objects.filter(name__startswith="ops_")]
    assert sorted(names) == ["ops_admin", "ops_operator", "ops_view"]


async def test_view_operate_admin(bus):
    await JobDefinition.objects.acreate(name="authz", kind="command", target="true")
    nobody = await _client("nobody", None)
    viewer = await _client("viewer", "ops_view")
    operator = await _client("operator", "ops_operator")
    admin = await _client("admin2", "ops_admin")
    root = await _client("root", None, superuser=True)
    job = {"name": "made", "kind": "command", "target": "true"}
    run = {"job": "authz"}

    assert (await nobody.get("/runs")).status_code == 403
    assert (await viewer.get("/runs")).status_code == 200
    r = await viewer.post("/runs", run, content_type="application/json")
    assert r.status_code == 403 and "ops_operator" in r.json()["detail"]
    assert (await operator.post("/runs", run, content_type="application/json")).status_code == 201
    assert (await operator.post("/jobs", job, content_type="application/json")).status_code == 403
    assert (await admin.post("/jobs", job, content_type="application/json")).status_code == 201
    assert (await admin.post("/runs", run, content_type="application/json")).status_code == 201
    job2 = {**job, "name": "made2"}
    assert (await root.post("/jobs", job2, content_type="application/json")).status_code == 201


async def test_session_posts_need_the_csrf_token(bus):
    from django.test import AsyncClient

    await JobDefinition.objects.acreate(name="csrf", kind="command", target="true")
    user = await get_user_model().objects.acreate(username="sess", is_superuser=True)
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    assert (await client.get("/runs")).status_code == 200
    refused = await client.post("/runs", {"job": "csrf"}, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
