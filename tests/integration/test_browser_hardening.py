"""Issue 13, finding 5: login throttling per user and per address with failed
logins audited, a Content-Security-Policy on the ops UI, and /docs served
from rota's own assets. In process on the real database (PostgreSQL too)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from rota.models import AdminActionLog

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "right-horse-battery"


@pytest.fixture
def alice(django_user_model, settings):
    from django.contrib.auth.models import Group

    # A fast hasher: the default's 1,000,000 rounds cost seconds a login here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = django_user_model.objects.create_user("alice", password=PASSWORD)
    group, _ = Group.objects.get_or_create(name="ops_view")
    user.groups.add(group)
    return user


def _login(username: str, password: str, address: str) -> int:
    client = Client(REMOTE_ADDR=address)
    r = client.post("/ops/login/", {"username": username, "password": password})
    return r.status_code


def test_failed_logins_lock_the_user_out_from_any_address(alice, settings):
    limit = settings.AXES_FAILURE_LIMIT
    for i in range(limit - 1):
        assert _login("alice", "wrong", f"10.0.0.{i + 1}") == 200  # the form again, with an error
    assert _login("alice", "wrong", "10.0.0.99") == 429  # the limit-th failure locks
    # Locked: even the right password, from yet another address.
    assert _login("alice", PASSWORD, "10.0.1.1") == 429
    rows = list(AdminActionLog.objects.filter(action="login.failed"))
    assert len(rows) >= limit
    assert {r.target for r in rows} == {"alice"}
    assert rows[0].detail_json["address"].startswith("10.0.")
    assert "wrong" not in str([r.detail_json for r in rows])  # no password in the audit


def test_failed_logins_lock_the_address_out_for_every_user(alice, settings):
    limit = settings.AXES_FAILURE_LIMIT
    for i in range(limit - 1):
        assert _login(f"nobody{i}", "wrong", "10.9.9.9") == 200
    assert _login("nobody-else", "wrong", "10.9.9.9") == 429
    assert _login("alice", PASSWORD, "10.9.9.9") == 429
    # Another address is not affected.
    assert _login("alice", PASSWORD, "10.9.9.10") == 302


def test_a_success_before_the_limit_resets_the_count(alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login("alice", "wrong", "10.1.1.1")
    assert _login("alice", PASSWORD, "10.1.1.1") == 302
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login("alice", "wrong", "10.1.1.1")
    assert _login("alice", PASSWORD, "10.1.1.1") == 302


def test_ops_pages_carry_a_csp_without_inline_scripts(alice, rota_settings):
    client = Client()
    login = client.get("/ops/login/")
    csp = login["Content-Security-Policy"]
    assert (
        "script-src 'self'" in csp
        and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    )
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert (
        client.post("/ops/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    )
    for page in ("/ops/", "/ops/jobs/", "/ops/schedules/", "/ops/runs/", "/ops/settings/", "/docs"):
        r = client.get(page)
        assert r.status_code == 200, page
        assert r.has_header("Content-Security-Policy"), page
        html = r.content.decode()
        # No inline script and no inline event handler: the CSP would block them.
        inline = [
            m
            for m in re.findall(r"<script\b([^>]*)>", html)
            if "src=" not in m and "application/json" not in m
        ]
        assert inline == [], (page, inline)
        assert not re.search(r"\son[a-z]+=\"", html), page


def test_docs_load_swagger_ui_from_rota_static_assets(alice):
    client = Client()
    client.post("/ops/login/", {"username": "alice", "password": PASSWORD})
    html = client.get("/docs").content.decode()
    scripts = re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"([^\"]+)\"", html)
    assert scripts, html
    assert all(s.startswith("/static/") for s in scripts), scripts
    assert any("rota_ops/vendor/swagger-ui/swagger-ui-bundle.js" in s for s in scripts), scripts
    assert "cdn" not in html.lower()
