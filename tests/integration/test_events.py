"""Events through the HTTP API, in process, on real NATS and SQL."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

from rota.models import ApiToken, JobDefinition, JobRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def client(bus):
    from django.contrib.auth import get_user_model

    user = await get_user_model().objects.acreate(username="events-tester")
    await _join(user, "ops_admin")
    _, raw = await _issue(user)
    return Authorized(raw)


async def _join(user, group: str) -> None:
    from django.contrib.auth.models import Group

    g, _ = await Group.objects.aget_or_create(name=group)
    await user.groups.aadd(g)


class Authorized:
    """An AsyncClient that sends a token with every request (AsyncClient drops
    constructor headers)."""

    def __init__(self, raw: str) -> None:
        self.client = AsyncClient()
        self.auth = {"Authorization": f"Bearer {raw}"}

    async def get(self, path, data=None, **kw):
        return await self.client.get(
            path, data, headers={**self.auth, **kw.pop("headers", {})}, **kw
        )

    async def post(self, path, data=None, **kw):
        return await self.client.post(
            path, data, headers={**self.auth, **kw.pop("headers", {})}, **kw
        )


async def _issue(user):
    from asgiref.sync import sync_to_async

    return await sync_to_async(ApiToken.issue)(user)


async def test_each_subscribed_job_gets_one_run_and_a_repeat_creates_nothing(client):
    schema = {"type": "object", "properties": {"order": {"type": "integer"}}, "required": ["order"]}
    await JobDefinition.objects.acreate(
        name="mail",
        kind="command",
        target="true",
        subscribed_events=["order.created"],
        default_params={"template": "thanks"},
        # Free-form: it takes whatever the payload carries.
        params_schema={"type": "object", "additionalProperties": True},
    )
    await JobDefinition.objects.acreate(
        name="ship",
        kind="command",
        target="true",
        subscribed_events=["order.created"],
        params_schema=schema,
    )
    await JobDefinition.objects.acreate(
        name="other", kind="command", target="true", subscribed_events=["order.paid"]
    )
    await JobDefinition.objects.acreate(
        name="off",
        kind="command",
        target="true",
        subscribed_events=["order.created"],
        enabled=False,
    )
    body = {"name": "order.created", "payload": {"order": 42}, "dedupe_key": "order-42-created"}
    first = await client.post("/events", body, content_type="application/json")
    assert first.status_code == 201, first.content
    data = first.json()
    assert sorted(r["job"] for r in data["runs"]) == ["mail", "ship"]
    again = await client.post("/events", body, content_type="application/json")
    assert again.status_code == 200
    assert again.json()["id"] == data["id"]
    assert sorted(r["run_id"] for r in again.json()["runs"]) == sorted(
        r["run_id"] for r in data["runs"]
    )
    assert await JobRun.objects.filter(event_id=data["id"]).acount() == 2
    mail = await JobRun.objects.aget(event_id=data["id"], job_name="mail")
    assert mail.params == {"template": "thanks", "order": 42}

    listed = (await client.get("/events", {"name": "order.created"})).json()["items"]
    assert listed[0]["id"] == data["id"] and len(listed[0]["runs"]) == 2


async def test_a_payload_one_job_refuses_does_not_block_the_others(client):
    schema = {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}
    await JobDefinition.objects.acreate(
        name="strict",
        kind="command",
        target="true",
        subscribed_events=["stock"],
        params_schema=schema,
    )
    await JobDefinition.objects.acreate(
        name="lenient",
        kind="command",
        target="true",
        subscribed_events=["stock"],
        params_schema={"type": "object", "additionalProperties": True},
    )
    r = await client.post(
        "/events",
        {"name": "stock", "payload": {"sku": 7}, "dedupe_key": "s-1"},
        content_type="application/json",
    )
    assert r.status_code == 201
    data = r.json()
    assert [x["job"] for x in data["runs"]] == ["lenient"]
    assert data["refused"][0]["job"] == "strict" and data["refused"][0]["field"] == "params.sku"


async def test_event_input_is_validated(client):
    r = await client.post("/events", {"name": "x"}, content_type="application/json")
    assert r.status_code == 422
    r = await client.post(
        "/events",
        {"name": "x", "dedupe_key": "k"},
        content_type="application/json",
        headers={"Authorization": "Bearer nope"},
    )
    assert r.status_code == 401
