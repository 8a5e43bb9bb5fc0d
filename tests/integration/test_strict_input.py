"""Issue 13, findings 4 and 6: every bad body is a 4xx that says what is wrong,
never a 500, and what PostgreSQL would refuse (NUL, over-long text) is refused
before it gets there. In process on real NATS and SQL; the PostgreSQL pass runs
this file too."""

from __future__ import annotations

import orjson
import pytest

from rota.models import JobDefinition, JobRun
from tests.integration.test_events import client  # noqa: F401  (the authorised API client)

pytestmark = pytest.mark.django_db(transaction=True)


async def raw_post(client, path: str, body: bytes, method: str = "post"):  # noqa: F811
    send = getattr(client.client, method)
    return await send(path, body, content_type="application/json", headers=client.auth)


async def patch(client, path: str, data: dict):  # noqa: F811
    return await raw_post(client, path, orjson.dumps(data), method="patch")


def _job(**extra) -> dict:
    return {"name": "strict", "kind": "command", "target": "true", **extra}


async def test_deeply_nested_or_self_referencing_schemas_are_422(client):  # noqa: F811
    nested: dict = {"type": "object"}
    for _ in range(200):
        nested = {"type": "object", "properties": {"a": nested}}
    r = await client.post("/jobs", _job(params_schema=nested), content_type="application/json")
    assert r.status_code == 422, r.content
    assert r.json()["field"] == "params_schema"

    recursive = {
        "type": "object",
        "properties": {"x": {"$ref": "#/$defs/list"}},
        "$defs": {"list": {"type": "array", "items": {"$ref": "#/$defs/list"}}},
    }
    r = await client.post(
        "/jobs", _job(name="recursive", params_schema=recursive), content_type="application/json"
    )
    assert r.status_code == 201, r.content
    deep: list = []
    for _ in range(250):
        deep = [deep]
    r = await raw_post(client, "/runs", orjson.dumps({"job": "recursive", "params": {"x": deep}}))
    assert r.status_code == 422, r.content
    assert "deep" in str(r.json()["detail"])


async def test_patch_makes_the_checks_post_makes(client):  # noqa: F811
    assert (await client.post("/jobs", _job(), content_type="application/json")).status_code == 201
    for change, field in (
        ({"timeout": -5}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"execution_policy": "bogus"}, "execution_policy"),
        ({"target": ""}, "target"),
        ({"category": "c" * 101}, "category"),
        ({"max_attempts": 0}, "max_attempts"),
    ):
        r = await patch(client, "/jobs/strict", change)
        assert r.status_code == 422, (change, r.content)
        assert field in str(r.json()["detail"]), (change, r.content)
    job = await JobDefinition.objects.aget(name="strict")
    assert job.timeout_seconds is None and job.execution_policy == "allow" and job.target == "true"


async def test_infinity_and_nan_are_not_json(client):  # noqa: F811
    for literal in (b"Infinity", b"-Infinity", b"NaN"):
        body = b'{"name": "inf", "kind": "command", "target": "true", "timeout": ' + literal + b"}"
        r = await raw_post(client, "/jobs", body)
        assert r.status_code in (400, 422), (literal, r.content)
        assert "Infinity" in r.json()["detail"] or "NaN" in r.json()["detail"], r.content
        r = await raw_post(client, "/jobs/strict", body, method="patch")
        assert r.status_code in (400, 404, 422), r.content
    assert not await JobDefinition.objects.filter(name="inf").aexists()
    r = await client.get("/jobs", headers=client.auth)
    orjson.loads(r.content)  # valid JSON


async def test_unknown_fields_are_refused_with_a_suggestion(client):  # noqa: F811
    r = await client.post("/jobs", _job(timout=5), content_type="application/json")
    assert r.status_code == 422, r.content
    (error,) = r.json()["detail"]
    assert error["loc"][-1] == "timout"
    assert "timout" in error["msg"] and "'timeout'" in error["msg"]
    assert not await JobDefinition.objects.filter(name="strict").aexists()
    for path, body in (
        ("/runs", {"job": "x", "parmas": {}}),
        ("/events", {"name": "e", "dedupe_key": "k", "payloda": {}}),
        ("/schedules", {"task_name": "x", "cron_expression": "* * * * *", "task_parms": {}}),
    ):
        r = await client.post(path, body, content_type="application/json")
        assert r.status_code == 422, (path, r.content)
        assert "unknown field" in r.json()["detail"][0]["msg"], r.content
    r = await patch(client, "/jobs/strict", {"enabeld": False})
    assert r.status_code == 422 and "'enabled'" in r.json()["detail"][0]["msg"], r.content


async def test_a_body_over_the_limit_is_413_with_json(client):  # noqa: F811
    from django.conf import settings

    big = b'{"name": "big", "kind": "command", "target": "true", "description": "'
    big += b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + b'"}'
    r = await raw_post(client, "/jobs", big)
    assert r.status_code == 413, r.content[:300]
    assert "detail" in r.json() and "bytes" in r.json()["detail"]


@pytest.mark.parametrize("name", [".", "..", "-rf", "_x", "a/b", "a b", "é"])
async def test_job_names_follow_the_safe_pattern(client, name):  # noqa: F811
    r = await client.post("/jobs", _job(name=name), content_type="application/json")
    assert r.status_code == 422, (name, r.content)


async def test_params_size_and_nul_are_refused_at_submit(client):  # noqa: F811
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    r = await client.post(
        "/jobs", _job(name="sized", params_schema=schema), content_type="application/json"
    )
    assert r.status_code == 201, r.content
    r = await client.post(
        "/runs", {"job": "sized", "params": {"text": "x" * 70_000}}, content_type="application/json"
    )
    assert r.status_code == 422 and "limit" in r.json()["detail"], r.content
    r = await client.post(
        "/runs", {"job": "sized", "params": {"text": "a\x00b"}}, content_type="application/json"
    )
    assert r.status_code == 422 and "NUL" in str(r.json()["detail"]), r.content
    assert not await JobRun.objects.filter(job_name="sized").aexists()


async def test_nul_anywhere_in_a_body_or_a_path_is_a_4xx(client):  # noqa: F811
    """PostgreSQL refuses NUL in text and jsonb: a 500 there, not on SQLite."""
    r = await client.post(
        "/jobs", _job(name="nul", description="a\x00b"), content_type="application/json"
    )
    assert r.status_code == 422 and "NUL" in str(r.json()["detail"]), r.content
    r = await client.post(
        "/events",
        {"name": "e", "dedupe_key": "k\x00", "payload": {}},
        content_type="application/json",
    )
    assert r.status_code == 422, r.content
    r = await client.get("/jobs/a%00b")
    assert r.status_code in (400, 404, 422), r.content


async def test_a_category_longer_than_its_column_is_422(client):  # noqa: F811
    r = await client.post("/jobs", _job(category="c" * 101), content_type="application/json")
    assert r.status_code == 422, r.content
    assert not await JobDefinition.objects.filter(name="strict").aexists()
    r = await client.post("/jobs", _job(name="cat"), content_type="application/json")
    assert r.status_code == 201
    r = await client.post(
        "/schedules",
        {"task_name": "cat", "cron_expression": "0 * * * *", "category": "c" * 101},
        content_type="application/json",
    )
    assert r.status_code == 422, r.content


async def test_a_broken_multipart_body_is_400_with_json(client):  # noqa: F811
    r = await client.client.post(
        "/runs/yaml", b"--x\r\n", content_type="multipart/form-data", headers=client.auth
    )
    assert r.status_code == 400, r.content
    assert "multipart" in r.json()["detail"]
