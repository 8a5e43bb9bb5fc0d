"""The ops UI in a real browser against a real `rota up` (issue 7, "must show")."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import wait_for
from tests.ui.conftest import django_script, login, shot, worker_env

pytestmark = pytest.mark.e2e

OPERATION_BUTTONS = "[data-ops-confirm], [data-ops-form], [data-ops-call]"


def _csrf(page) -> str:  # type: ignore[no-untyped-def]
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")


def _define(stack, name: str, **job) -> None:  # type: ignore[no-untyped-def]
    r = stack.client.post("/jobs", json={"name": name, **job})
    assert r.status_code in (201, 409), r.text


def _running_run(stack, job: str) -> str:  # type: ignore[no-untyped-def]
    _define(
        stack,
        job,
        kind="command",
        target=sys.executable,
        args=["-c", "import time; time.sleep(60)"],
    )
    run_id = stack.client.post("/runs", json={"job": job}).json()["run_id"]
    wait_for(lambda: stack.client.get(f"/runs/{run_id}").json()["state"] == "RUNNING", timeout=30)
    return run_id


def _first_worker(stack) -> str:  # type: ignore[no-untyped-def]
    return wait_for(lambda: stack.client.get("/workers").json()["items"])[0]["worker_id"]


@pytest.mark.parametrize(
    "username, role",
    [
        ("viewer", "ops_view"),
        ("operator", "ops_operator"),
        ("opsadmin", "ops_admin"),
        ("admin", "ops_admin"),
    ],
)
def test_log_in_as_each_role(context, admin_password, username, role):
    page = login(context, username)
    assert page.locator("#ops-user").inner_text().split() == [username, role]
    assert page.locator("h1").first.inner_text() == "Dashboard"
    shot(page, f"dashboard-{username}")
    # Wrong password: back on the login page with an error, no session.
    other = context.browser.new_context(base_url=page.url.split("/ops/")[0])
    bad = other.new_page()
    bad.goto("/ops/login/")
    bad.fill("#id_username", username)
    bad.fill("#id_password", "not-the-password")
    bad.click("button[type=submit]")
    assert bad.locator("#ops-login-error").is_visible()
    bad.goto("/ops/")
    assert "/ops/login/" in bad.url
    other.close()


def test_viewer_sees_no_operation_buttons_and_gets_403(context, ui_stack):
    run_id = stack_run = _running_run(ui_stack, "ui-view-sleep")
    worker_id = _first_worker(ui_stack)
    page = login(context, "viewer")
    for path in (
        "/ops/",
        "/ops/jobs/",
        "/ops/schedules/",
        "/ops/workers/",
        f"/ops/workers/{worker_id}/",
        "/ops/leader/",
        "/ops/settings/",
        f"/ops/runs/{run_id}/",
    ):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert page.locator(OPERATION_BUTTONS).count() == 0, path
    shot(page, "run-detail-viewer")
    headers = {"X-CSRFToken": _csrf(page), "Content-Type": "application/json"}
    # Posting anyway, to the JSON API with the session and to the UI's own endpoints.
    for url in (
        f"/workers/{worker_id}/detach",
        f"/runs/{stack_run}/cancel",
        "/leader/degrade",
        "/ops/jobs/ui-view-sleep/run",
        f"/ops/workers/{worker_id}/ping",
        f"/ops/runs/{run_id}/reassign",
    ):
        r = page.request.post(url, headers=headers, data="{}")
        assert r.status == 403, (url, r.status, r.text())
        assert "ops_" in r.json()["detail"]
    r = page.request.patch("/settings", headers=headers, data='{"grpc_retries": 1}')
    assert r.status == 403
    assert ui_stack.client.get(f"/runs/{run_id}").json()["state"] == "RUNNING"
    # The control: the same pages show an operator the buttons the viewer lacked.
    context.clear_cookies()
    page = login(context, "operator")
    for path in ("/ops/jobs/", "/ops/workers/", f"/ops/runs/{run_id}/"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert page.locator(OPERATION_BUTTONS).count() > 0, path
    assert ui_stack.client.post(f"/runs/{run_id}/cancel").status_code == 200


def test_create_job_through_the_modal(context, ui_stack):
    page = login(context, "opsadmin")
    page.goto("/ops/jobs/")
    page.evaluate("window.__noReload = 1")
    page.click("#ops-job-create")
    modal = page.locator("#ops-job-modal")
    modal.wait_for(state="visible")
    page.fill("#job-name", "ui-made-job")
    page.select_option("#job-kind", "command")
    page.fill("#job-target", "echo")
    page.fill("#job-args", "hello, ops")
    page.fill(
        "#job-schema",
        '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}',
    )
    page.fill("#job-defaults", '{"n": "not a number"}')
    page.wait_for_timeout(400)  # the dialog's fade-in
    shot(page, "jobs-modal")
    modal.locator("button[type=submit]").click()
    # The server's validation error, inside the modal, which stays open.
    error = modal.locator(".ops-modal-error")
    error.wait_for(state="visible")
    assert "n" in error.inner_text() and modal.is_visible()
    page.fill("#job-defaults", '{"n": 3}')
    modal.locator("button[type=submit]").click()
    modal.wait_for(state="hidden")
    row = page.locator("#ops-jobs-table tr[data-job='ui-made-job']")
    row.wait_for()
    assert "echo hello ops" in row.inner_text()
    assert page.evaluate("window.__noReload") == 1  # no page load happened
    shot(page, "jobs")
    job = ui_stack.client.get("/jobs/ui-made-job").json()
    assert job["args"] == ["hello", "ops"] and job["default_params"] == {"n": 3}
    audit = django_script(
        ui_stack,
        "from rota.models import AdminActionLog\n"
        "print(AdminActionLog.objects.filter(action='job.create', target='ui-made-job')"
        ".values_list('actor', flat=True).first())",
    )
    assert audit.strip() == "opsadmin"


def test_cancel_a_running_run_from_its_page(context, ui_stack):
    run_id = _running_run(ui_stack, "ui-cancel-sleep")
    page = login(context, "operator")
    page.goto(f"/ops/runs/{run_id}/")
    assert page.locator("#ops-run-state").inner_text() == "RUNNING"
    shot(page, "run-detail-running")
    page.click("#ops-run-cancel")
    page.locator("#ops-confirm").wait_for(state="visible")
    page.click("#ops-confirm-go")
    page.locator("#ops-confirm").wait_for(state="hidden")
    page.wait_for_function(
        "document.querySelector('#ops-run-state').textContent === 'CANCELLED'", timeout=20_000
    )
    shot(page, "run-detail-cancelled")
    assert ui_stack.client.get(f"/runs/{run_id}").json()["state"] == "CANCELLED"
    assert "CANCEL_REQUESTED" in page.locator("#ops-timeline").inner_text()


def test_detach_a_worker_and_see_its_state_change(context, ui_stack, tmp_path):
    argv = [sys.executable, "-m", "rota", "worker", "--node-id", "ui-n2", "--roles", "execute"]
    with open(tmp_path / "worker.log", "ab") as out:
        proc = subprocess.Popen(
            argv, env=worker_env(ui_stack), stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    try:
        worker = wait_for(
            lambda: next(
                (
                    w
                    for w in ui_stack.client.get("/workers").json()["items"]
                    if w["node_id"] == "ui-n2" and w["state"] in ("IDLE", "RUNNING")
                ),
                None,
            ),
            timeout=30,
        )
        page = login(context, "operator")
        page.goto("/ops/workers/")
        row = page.locator(f"tr[data-worker='{worker['worker_id']}']")
        assert row.locator("[data-state]").inner_text() == "IDLE"
        row.get_by_role("button", name="Detach").click()
        page.locator("#ops-confirm").wait_for(state="visible")
        page.click("#ops-confirm-go")
        page.locator("#ops-confirm").wait_for(state="hidden")
        page.wait_for_function(
            f"document.querySelector(\"tr[data-worker='{worker['worker_id']}'] [data-state]\")"
            ".textContent === 'DETACHED'"
        )
        shot(page, "workers-detached")
        assert row.get_by_role("button", name="Undock").is_visible()
    finally:
        proc.terminate()
        proc.wait(20)


def test_runs_table_keeps_page_3_and_search_across_a_live_refresh(context, ui_stack):
    django_script(
        ui_stack,
        "from rota.domain.ids import new_run_id\n"
        "from rota.models import JobDefinition, JobRun\n"
        "jobs = [JobDefinition.objects.create(name=n, kind='command', target='true')"
        " for n in ('bulk-0', 'bulk-1', 'bulk-2', 'other')]\n"
        "JobRun.objects.bulk_create([JobRun(id=new_run_id(), job=jobs[i % 3],"
        " job_name=jobs[i % 3].name, kind='command', state='SUCCEEDED') for i in range(120)]"
        " + [JobRun(id=new_run_id(), job=jobs[3], job_name='other', kind='command',"
        " state='FAILED') for i in range(30)])\n",
    )
    page = login(context, "viewer")
    page.goto("/ops/runs/")
    page.locator("#ops-runs-table tbody tr").first.wait_for()
    with page.expect_response(lambda r: "/ops/runs/data" in r.url and "bulk" in r.url):
        page.fill("#ops-runs-table_wrapper input[type=search]", "bulk")
    page.locator(".dt-paging button[data-dt-idx='2']").click()

    def state() -> tuple[str, str, list[str]]:
        active = page.locator(".dt-paging button.current, .dt-paging .active button").first
        jobs = page.locator("#ops-runs-table tbody tr td:nth-child(2)").all_inner_texts()
        return (
            active.inner_text(),
            page.input_value("#ops-runs-table_wrapper input[type=search]"),
            jobs,
        )

    page.wait_for_function("document.querySelector('.dt-info').textContent.includes('51 to 75')")
    before = state()
    assert before[0] == "3" and before[1] == "bulk"
    assert len(before[2]) == 25 and all(j.startswith("bulk-") for j in before[2])
    # The next live refresh (every 5 s) asks for the same page and search.
    with page.expect_response(
        lambda r: "/ops/runs/data" in r.url and "start=50" in r.url and "bulk" in r.url,
        timeout=10_000,
    ) as refresh:
        pass
    assert refresh.value.json()["recordsFiltered"] == 120
    time.sleep(0.3)
    assert state()[:2] == ("3", "bulk")
    shot(page, "runs")
    # stateSave: a new visit comes back to the same page and search.
    page.reload()
    page.wait_for_function("document.querySelector('.dt-info').textContent.includes('51 to 75')")
    assert state()[:2] == ("3", "bulk")


def test_switching_to_japanese_translates_the_page(context):
    page = login(context, "operator")
    page.goto("/ops/workers/")
    assert page.locator("h1").first.inner_text() == "Workers"
    page.select_option("#ops-language", "ja")
    page.wait_for_load_state("load")
    page.wait_for_function("document.documentElement.lang === 'ja'")
    assert page.locator("h1").first.inner_text() == "ワーカー"
    assert page.locator("nav").get_by_text("ダッシュボード").is_visible()
    shot(page, "workers-ja")
    page.goto("/ops/")
    assert page.locator("h1").first.inner_text() == "ダッシュボード"
    shot(page, "dashboard-ja")
    page.select_option("#ops-language", "en")
    page.wait_for_function("document.documentElement.lang === 'en'")


def test_every_page_renders(context, ui_stack, admin_password):
    worker_id = _first_worker(ui_stack)
    _define(ui_stack, "ui-echo", kind="command", target="echo", args=["hi"])
    run_id = ui_stack.client.post("/runs", json={"job": "ui-echo"}).json()["run_id"]
    wait_for(lambda: ui_stack.client.get(f"/runs/{run_id}").json()["state"] == "SUCCEEDED")
    ui_stack.client.post(
        "/schedules",
        json={"task_name": "ui-echo", "structured": {"every": "day", "time": "09:30"}},
    )
    ui_stack.client.post("/events", json={"name": "ui.event", "dedupe_key": "ui-1"})
    page = login(context, "admin")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    pages = {
        "dashboard": "/ops/",
        "jobs": "/ops/jobs/",
        "schedules": "/ops/schedules/",
        "runs-list": "/ops/runs/",
        "run-detail": f"/ops/runs/{run_id}/",
        "workers": "/ops/workers/",
        "worker-detail": f"/ops/workers/{worker_id}/",
        "leader": "/ops/leader/",
        "settings": "/ops/settings/",
        "audit": "/ops/audit/",
        "events": "/ops/events/",
        "dlq": "/ops/dlq/",
    }
    for name, path in pages.items():
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("networkidle")
        shot(page, name)
    page.goto(f"/ops/runs/{run_id}/")
    assert "hi" in page.locator("#ops-stdout").inner_text()
    page.goto(f"/ops/workers/{worker_id}/")
    page.click("#ops-ping")
    page.wait_for_function(
        "document.querySelector('#ops-grpc-out').textContent.includes('round_trip_ms')"
    )
    page.click("#ops-status")
    page.wait_for_function("document.querySelector('#ops-grpc-out').textContent.includes('reply')")
    shot(page, "worker-detail-status")
    page.click("#ops-theme-toggle")
    page.goto("/ops/")
    assert page.evaluate("document.getElementById('ops-dark-css').disabled") is False
    shot(page, "dashboard-dark")
    page.click("#ops-theme-toggle")
    page.goto("/ops/login/")
    assert errors == []


def test_schedule_through_the_safe_form(context, ui_stack):
    _define(ui_stack, "ui-weekly", kind="command", target="echo")
    page = login(context, "opsadmin")
    page.goto("/ops/schedules/")
    page.click("#ops-schedule-create")
    modal = page.locator("#ops-schedule-modal")
    modal.wait_for(state="visible")
    page.select_option("#sch-job", "ui-weekly")
    page.fill("#sch-name", "ui-weekly-mon-fri")
    page.select_option("#sch-every", "week")
    page.select_option("#sch-days", ["mon", "fri"])
    page.fill("#sch-time", "09:30")
    assert page.locator("#sch-n").is_hidden() and page.locator("#sch-cron").is_hidden()
    page.wait_for_timeout(400)
    shot(page, "schedules-modal")
    modal.locator("button[type=submit]").click()
    modal.wait_for(state="hidden")
    row = page.locator("#ops-schedules-table tr", has_text="ui-weekly-mon-fri")
    row.wait_for()
    assert "30 9 * * 1,5" in row.inner_text()
    # A cron expression that is not one: the error stays in the dialog.
    page.click("#ops-schedule-create")
    page.select_option("#sch-mode", "cron")
    page.fill("#sch-cron", "61 * * * *")
    modal.locator("button[type=submit]").click()
    modal.locator(".ops-modal-error").wait_for(state="visible")
    assert modal.is_visible()


def test_settings_change_is_validated_and_applied(context, ui_stack):
    page = login(context, "opsadmin")
    page.goto("/ops/settings/")
    page.click("#ops-settings-edit")
    modal = page.locator("#ops-settings-modal")
    modal.wait_for(state="visible")
    page.fill("#set-heartbeat_ttl_seconds", "0.5")  # shorter than the interval: refused
    modal.locator("button[type=submit]").click()
    error = modal.locator(".ops-modal-error")
    error.wait_for(state="visible")
    assert "heartbeat_ttl_seconds" in error.inner_text()
    page.fill("#set-heartbeat_ttl_seconds", "3")
    page.fill("#set-log_retention_days", "9")
    with page.expect_navigation():
        modal.locator("button[type=submit]").click()
    cell = page.locator("tr[data-setting='log_retention_days'] td").nth(1)
    assert cell.inner_text() == "9"
    assert ui_stack.client.get("/settings").json()["log_retention_days"] == 9
    shot(page, "settings-changed")
