"""A celery job's send options are checked when it is defined or changed."""

from __future__ import annotations

import pytest

from tests.integration.test_events import client  # noqa: F401  (the authorised API client)

pytestmark = pytest.mark.django_db(transaction=True)


async def test_celery_job_options_are_checked(client):  # noqa: F811
    ok = await client.post(
        "/jobs",
        {
            "name": "cj",
            "kind": "celery",
            "target": "rt.add",
            "args": ["queue=reports", "priority=3"],
        },
        content_type="application/json",
    )
    assert ok.status_code == 201, ok.content
    bad = await client.post(
        "/jobs",
        {"name": "cj2", "kind": "celery", "target": "rt.add", "args": ["colour=blue"]},
        content_type="application/json",
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "args"
    assert "colour=blue" in bad.json()["detail"] and "queue=..." in bad.json()["detail"]
    patched = await client.client.patch(
        "/jobs/cj", {"args": ["priority=900"]}, content_type="application/json", headers=client.auth
    )
    assert patched.status_code == 422
    assert "0-255" in patched.json()["detail"]
