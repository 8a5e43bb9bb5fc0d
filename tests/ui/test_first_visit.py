"""A newcomer's first visit (issue 21, "must show"): open the address `rota up`
printed, land on the ops login, log in, reach the dashboard showing live data.

``dashboard_from_banner`` is the way in for more dashboard checks (charts drawn
from live data, say): it returns the logged-in dashboard page after a run it
submitted has finished."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import wait_for
from tests.ui.conftest import shot

pytestmark = pytest.mark.e2e


def banner_url(stack) -> str:  # type: ignore[no-untyped-def]
    """The address on `rota up`'s "rota is up:" line."""
    match = re.search(r"rota is up: (\S+)", stack.log.read_text())
    assert match, stack.log.read_text()
    return match.group(1)


@pytest.fixture
def finished_run(ui_stack) -> dict:
    c = ui_stack.client
    r = c.post("/jobs", json={"name": "first-visit", "kind": "command", "target": "echo"})
    assert r.status_code in (201, 409), r.text
    run_id = c.post("/runs", json={"job": "first-visit"}).json()["run_id"]
    return wait_for(
        lambda: (run := c.get(f"/runs/{run_id}").json())["state"] == "SUCCEEDED" and run,
        timeout=30,
    )


@pytest.fixture
def dashboard_from_banner(context, ui_stack, admin_password, finished_run):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(banner_url(ui_stack))
    # Not logged in: the ops login, which returns to the ops UI afterwards.
    assert re.search(r"/ops/login/\?next=/ops/$", page.url), page.url
    page.fill("#id_username", "admin")
    page.fill("#id_password", admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/ops/")
    return page


def test_the_banner_url_leads_through_login_to_the_dashboard(
    dashboard_from_banner, ui_stack, finished_run
):
    page = dashboard_from_banner
    assert page.locator("h1").first.inner_text() == "Dashboard"
    assert page.locator("#ops-user").inner_text().split()[0] == "admin"
    # Live data: the run just finished, and the workers the API lists.
    assert page.locator(f"a[href$='/ops/runs/{finished_run['run_id']}/']").count() >= 1
    workers = ui_stack.client.get("/workers").json()["items"]
    assert page.locator("#ops-workers-total").inner_text() == str(len(workers))
    shot(page, "first-visit-dashboard")


def test_docs_in_a_browser_logs_in_and_comes_back(context, ui_stack, admin_password):
    page = context.new_page()
    page.goto(banner_url(ui_stack).split("/ops/")[0] + "/docs")
    assert "/ops/login/" in page.url and "next=/docs" in page.url
    page.fill("#id_username", "admin")
    page.fill("#id_password", admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/docs")
    page.wait_for_selector(".swagger-ui .opblock-tag-section")
    shot(page, "first-visit-docs")
