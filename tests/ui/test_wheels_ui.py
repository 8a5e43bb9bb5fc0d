"""The Wheels page of the ops UI in a real browser against a real `rota up`:
an operator uploads through the form, sees the worker install it, and deletes
it through the confirm dialog; a viewer sees no controls."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import wait_for
from tests.ui.conftest import login, shot
from tests.wheels_helpers import build_wheel

# rota up, a browser, and a pip install on a shared machine: more than the default 120 s.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]


def test_operator_uploads_sees_the_sync_and_deletes_a_viewer_only_looks(
    context, browser, ui_stack, tmp_path
):
    wheel = build_wheel(tmp_path, "uipkg", "1.0", "ui")
    page = login(context, "operator")
    page.goto("/ops/wheels/")
    page.set_input_files("#w-file", str(wheel))
    with page.expect_navigation():
        page.click("#ops-wheel-upload button[type=submit]")
    assert wheel.name in page.locator("#ops-wheel-uploaded").inner_text()
    assert wheel.name in page.locator("#ops-wheels-table").inner_text()

    # No tags: `rota up`'s worker installs it; the page shows it after a reload.
    def installed() -> bool:
        page.goto("/ops/wheels/")
        return "uipkg 1.0" in page.locator("#ops-wheel-sync-table").inner_text()

    wait_for(installed, timeout=120, interval=1.0)
    assert "operator" in page.locator("#ops-wheel-history-table").inner_text()
    shot(page, "wheels")

    # The same version again: refused, with the reason on the page.
    page.set_input_files("#w-file", str(wheel))
    with page.expect_navigation():
        page.click("#ops-wheel-upload button[type=submit]")
    assert "current version 1.0" in page.locator("#ops-wheel-error").inner_text()

    viewer_context = browser.new_context(base_url=ui_stack.url)
    try:
        viewer = login(viewer_context, "viewer")
        viewer.goto("/ops/wheels/")
        assert wheel.name in viewer.locator("#ops-wheels-table").inner_text()
        assert viewer.locator("#ops-wheel-upload").count() == 0
        assert viewer.locator("#ops-wheels-table [data-ops-confirm]").count() == 0
    finally:
        viewer_context.close()

    page.goto("/ops/wheels/")
    page.locator("#ops-wheels-table tr", has_text=wheel.name).get_by_role(
        "button", name="Delete"
    ).click()
    page.locator("#ops-confirm").wait_for(state="visible")
    page.click("#ops-confirm-go")
    page.locator("#ops-confirm").wait_for(state="hidden")
    wait_for(
        lambda: wheel.name not in {w["name"] for w in ui_stack.client.get("/wheels").json()},
        timeout=20,
    )
    page.wait_for_function(
        f"!document.querySelector('#ops-wheels-table').textContent.includes('{wheel.name}')",
        timeout=20_000,
    )
    events = ui_stack.client.get("/wheels/history", params={"wheel_name": wheel.name}).json()
    assert [(e["action"], e["actor"]["username"], e["actor"]["via"]) for e in events] == [
        ("delete", "operator", "session"),
        ("upload", "operator", "session"),
    ]
