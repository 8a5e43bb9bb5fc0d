"""Browser tests of the ops UI: a real `rota up` (nats-server, SQLite, `rota
server`, a worker) and Debian's chromium driven by Playwright. No browser is
downloaded: the executable is the system's ``chromium``.

Every page a test opens can be saved with ``shot(page, name)`` into
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CI
from tests.e2e.conftest import Stack, start_stack, stop_stack

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "ui-tests-password-1"
#: user name → its ops group ("" for a superuser).
USERS = {"viewer": "ops_view", "operator": "ops_operator", "opsadmin": "ops_admin"}

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _skip_or_fail(reason: str) -> None:
    if CI:
        pytest.fail(reason)
    pytest.skip(reason)


def django_script(stack: Stack, code: str) -> str:
    """Run ``code`` with Django set up against the stack's database; its stdout."""
    env = {
        **stack.env(),
        "DJANGO_SETTINGS_MODULE": "rota.standalone.settings",
        "PYTHONPATH": str(ROOT),
    }
    prelude = "import django\ndjango.setup()\n"
    out = subprocess.run(
        [sys.executable, "-c", prelude + code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="session")
def ui_stack(tmp_path_factory) -> Iterator[Stack]:
    from rota.ops.assets import assets_present

    if not assets_present():
        _skip_or_fail("the ops UI's assets are not installed: run `rota assets`")
    # The tests try wrong passwords on purpose, all from 127.0.0.1: keep the
    # login throttle (tests/integration/test_browser_hardening.py) out of their way.
    stack = start_stack(
        tmp_path_factory.mktemp("rota-ui"), env={"ROTA_LOGIN_FAILURE_LIMIT": "1000"}
    )
    users = ", ".join(f"({name!r}, {group!r})" for name, group in USERS.items())
    django_script(
        stack,
        "from django.contrib.auth.models import Group, User\n"
        f"for name, group in [{users}]:\n"
        f"    u = User.objects.create_user(name, password={PASSWORD!r})\n"
        "    u.groups.add(Group.objects.get(name=group))\n",
    )
    yield stack
    stop_stack(stack)


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        _skip_or_fail("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser, ui_stack):
    ctx = browser.new_context(base_url=ui_stack.url, viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


def login(context, username: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    """A new page of ``context``, logged in as ``username``, on the dashboard."""
    page = context.new_page()
    page.goto("/ops/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/ops/")
    return page


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="session")
def admin_password(ui_stack) -> str:
    """The superuser `rota up` made; given a known password for the tests."""
    django_script(
        ui_stack,
        "from django.contrib.auth.models import User\n"
        "u = User.objects.get(username='admin')\n"
        f"u.set_password({PASSWORD!r}); u.save()\n",
    )
    return PASSWORD


def worker_env(stack: Stack) -> dict[str, str]:
    return {**stack.env(), "PYTHONPATH": str(ROOT), "ROTA_SHUTDOWN_GRACE_SECONDS": "2"}
