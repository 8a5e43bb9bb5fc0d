"""The ops UI's NATS cluster page in a real browser, against a real `rota up`:
nodes, meta leader, each rota stream's replicas; a missing stream shows up as a
problem with its hint, in English and in Japanese."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from tests.ui.conftest import login, shot

pytestmark = pytest.mark.e2e


def _nats(stack, work):  # type: ignore[no-untyped-def]
    """Run ``work(js)`` against the stack's NATS."""
    import nats

    env = stack.env()

    async def main():  # type: ignore[no-untyped-def]
        nc = await nats.connect(env["ROTA_NATS_URL"], token=env["ROTA_NATS_TOKEN"])
        try:
            return await work(nc.jetstream(timeout=10))
        finally:
            await nc.close()

    # Playwright's sync API runs an event loop in this thread: use another one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


# The session's `rota up` may start inside this test; on a busy machine that and
# the full-page screenshots take longer than the default 120 s.
@pytest.mark.timeout(300)
def test_nats_page_shows_nodes_streams_and_a_missing_stream(context, ui_stack):
    from rota.bus import subjects
    from rota.bus.resources import ensure_resources
    from rota.conf import RotaSettings

    page = login(context, "viewer")
    nav = page.locator("nav a.nav-link", has_text="NATS")
    nav.click()
    page.wait_for_url("**/ops/nats/")
    assert page.locator("h1").first.inner_text() == "NATS cluster"
    assert nav.get_attribute("aria-current") == "page"
    rows = page.locator("#ops-nats-streams tbody tr")
    assert rows.count() == len(subjects.jetstream_streams())
    work = page.locator("#ops-nats-streams tr[data-stream='ROTA_WORK'] td")
    assert work.nth(0).inner_text() == "ROTA_WORK"
    assert work.nth(2).inner_text() == "1"  # `rota up` runs one node: R1
    leader = work.nth(3).inner_text()
    assert leader and leader != "—"
    # One node, the one that leads every stream; nothing wrong.
    assert page.locator("#ops-nats-nodes tbody tr").count() == 1
    assert page.locator(f"#ops-nats-nodes tr[data-node='{leader}']").count() == 1
    assert page.locator("#ops-nats-ok").inner_text() == "No problems found."
    shot(page, "nats")

    _nats(ui_stack, lambda js: js.delete_stream(subjects.DLQ_STREAM))
    try:
        problem = page.locator("#ops-nats-problems li[data-code='missing']")
        problem.wait_for(timeout=20_000)  # the page refreshes itself every 5 s
        assert "stream ROTA_DLQ does not exist" in problem.inner_text()
        assert "rota nats restore" in problem.inner_text()
        missing = page.locator("#ops-nats-streams tr[data-stream='ROTA_DLQ']")
        assert "missing" in missing.inner_text()

        page.select_option("#ops-language", "ja")
        page.wait_for_function("document.documentElement.lang === 'ja'")
        assert page.locator("h1").first.inner_text() == "NATS クラスタ"
        ja = page.locator("#ops-nats-problems li[data-code='missing']").inner_text()
        assert "ストリーム ROTA_DLQ が存在しません" in ja
        assert "rota nats restore DIR" in ja
        shot(page, "nats-problem-ja")
        page.select_option("#ops-language", "en")
        page.wait_for_function("document.documentElement.lang === 'en'")
    finally:
        env = ui_stack.env()
        settings = RotaSettings(nats_url=env["ROTA_NATS_URL"], nats_token=env["ROTA_NATS_TOKEN"])
        _nats(ui_stack, lambda js: ensure_resources(js, settings))
    page.reload()
    page.locator("#ops-nats-ok").wait_for()
