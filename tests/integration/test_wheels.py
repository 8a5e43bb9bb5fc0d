"""The wheel registry on real NATS and SQL, and real workers syncing from it:
pip installs into each worker's own directory, python and command runs use the
synced code, a new version arrives without a restart, tags decide who installs."""

from __future__ import annotations

import asyncio
import hashlib
import zipfile

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile

from rota.conf import RotaSettings
from rota.models import AdminActionLog, ApiToken, JobDefinition, WheelEvent
from rota.worker.executors.command import CommandExecutor
from rota.worker.executors.python import PythonExecutor
from tests.conftest import eventually, running_worker
from tests.integration.test_events import Authorized
from tests.wheels_helpers import build_wheel, zip_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def SLOW(test):  # type: ignore[no-untyped-def]  # noqa: N802
    """Real workers and pip installs: tens of seconds, more on a busy machine."""
    return pytest.mark.slow(pytest.mark.timeout(300)(test))


class Client(Authorized):
    async def delete(self, path, **kw):
        return await self.client.delete(path, headers=self.auth, **kw)


async def _client(name: str, group: str) -> Client:
    user = await get_user_model().objects.acreate(username=name)
    g, _ = await Group.objects.aget_or_create(name=group)
    await user.groups.aadd(g)
    _, raw = await sync_to_async(ApiToken.issue)(user)
    return Client(raw)


@pytest.fixture
async def operator(bus):
    return await _client("wheel-operator", "ops_operator")


async def upload(client, path_or_name, data: bytes | None = None, **form):
    if data is None:
        name, data = path_or_name.name, path_or_name.read_bytes()
    else:
        name = path_or_name
    return await client.post("/wheels", {"wheel": SimpleUploadedFile(name, data), **form})


async def test_upload_list_download_history_and_the_version_policy(operator, tmp_path):
    v1 = build_wheel(tmp_path, "regpkg", "1.0", "one")
    r = await upload(operator, v1, tags="x, y,x", replace="false")
    assert r.status_code == 200, r.content
    body = r.json()
    sha = hashlib.sha256(v1.read_bytes()).hexdigest()
    assert body["name"] == v1.name and body["tags"] == ["x", "y"] and body["sha256_hex"] == sha
    assert body["size_bytes"] == v1.stat().st_size and body["digest"].startswith("SHA-256=")

    listed = (await operator.get("/wheels")).json()
    mine = next(w for w in listed if w["name"] == v1.name)
    assert mine["tags"] == ["x", "y"] and mine["sha256_hex"] == sha

    got = await operator.get(f"/wheels/{v1.name}")
    assert got.status_code == 200 and got.content == v1.read_bytes()

    # Same version again, or a lower one: 409 naming the current version; nothing stored.
    again = await upload(operator, v1)
    assert again.status_code == 409 and "current version 1.0" in again.json()["detail"]
    v0 = build_wheel(tmp_path, "regpkg", "0.9", "zero")
    lower = await upload(operator, v0)
    assert lower.status_code == 409 and "current version 1.0" in lower.json()["detail"]
    assert v0.name not in {w["name"] for w in (await operator.get("/wheels")).json()}

    v2 = build_wheel(tmp_path, "regpkg", "2.0", "two")
    assert (await upload(operator, v2)).status_code == 200
    deleted = await operator.delete(f"/wheels/{v2.name}")
    assert deleted.status_code == 200 and deleted.json() == {"name": v2.name, "deleted": True}
    assert (await operator.delete(f"/wheels/{v2.name}")).status_code == 404
    assert (await operator.get(f"/wheels/{v2.name}")).status_code == 404

    history = (await operator.get("/wheels/history", {"limit": 10})).json()
    ours = [e for e in history if e["package_name"] == "regpkg"]
    assert [(e["action"], e["wheel_name"]) for e in ours] == [
        ("delete", v2.name),
        ("upload", v2.name),
        ("upload", v1.name),
    ]
    first = ours[-1]
    assert first["actor"]["username"] == "wheel-operator" and first["actor"]["api_key_id"]
    assert first["source"]["remote_addr"] == "127.0.0.1"
    assert first["replace"] is False and first["sha256_hex"] == sha and first["tags"] == ["x", "y"]
    only_deletes = (await operator.get("/wheels/history", {"action": "delete"})).json()
    assert only_deletes and {e["action"] for e in only_deletes} == {"delete"}
    by_name = (await operator.get("/wheels/history", {"wheel_name": v1.name})).json()
    assert [e["wheel_name"] for e in by_name] == [v1.name]
    assert (await operator.get("/wheels/history", {"action": "purge"})).status_code == 422
    assert (await operator.get("/wheels/history", {"limit": 0})).status_code == 422
    assert (await operator.get("/wheels/history", {"wheel_name": "x"})).status_code == 422

    audit = [a async for a in AdminActionLog.objects.filter(target__startswith="regpkg-")]
    assert {(a.action, a.target) for a in audit} == {
        ("wheel.upload", v1.name),
        ("wheel.upload", v2.name),
        ("wheel.delete", v2.name),
    }
    await operator.delete(f"/wheels/{v1.name}")


async def test_bad_uploads_are_4xx_with_a_message_and_store_nothing(operator, tmp_path, settings):
    good = build_wheel(tmp_path, "badpkg", "1.0", "x")
    data = good.read_bytes()
    meta = "Metadata-Version: 2.1\nName: badpkg\nVersion: 1.0\n"
    cases = {
        "not a zip": (good.name, b"not a zip at all", 422, "not a zip"),
        "bad name": ("badpkg.whl", data, 422, "invalid wheel filename"),
        "bad chars": ("bad pkg-1.0-py3-none-any.whl", data, 422, "invalid wheel name"),
        "metadata differs": ("otherpkg-1.0-py3-none-any.whl", data, 422, "dist-info"),
        "version differs": (
            "badpkg-1.1-py3-none-any.whl",
            zip_bytes({"badpkg-1.1.dist-info/METADATA": meta, "badpkg-1.1.dist-info/WHEEL": ""}),
            422,
            "METADATA says badpkg 1.0",
        ),
        "parent path": (
            good.name,
            zip_bytes(
                {
                    "../evil.py": "",
                    "badpkg-1.0.dist-info/METADATA": meta,
                    "badpkg-1.0.dist-info/WHEEL": "",
                }
            ),
            422,
            "outside its install directory",
        ),
        "absolute path": (
            good.name,
            zip_bytes(
                {
                    "/etc/evil": "",
                    "badpkg-1.0.dist-info/METADATA": meta,
                    "badpkg-1.0.dist-info/WHEEL": "",
                }
            ),
            422,
            "outside its install directory",
        ),
        "no WHEEL file": (
            good.name,
            zip_bytes({"badpkg-1.0.dist-info/METADATA": meta}),
            422,
            "has no badpkg-1.0.dist-info/WHEEL",
        ),
    }
    for label, (name, payload, status, message) in cases.items():
        r = await upload(operator, name, payload)
        assert r.status_code == status, (label, r.content)
        assert message in r.json()["detail"], (label, r.json())
    r = await upload(operator, good, tags="ok,not ok")
    assert r.status_code == 422 and "invalid wheel tag" in r.json()["detail"]
    r = await upload(operator, good, replace="maybe")
    assert r.status_code == 422 and "replace" in r.json()["detail"]
    r = await operator.post("/wheels", {"tags": "a"})
    assert r.status_code == 422 and "multipart field 'wheel'" in r.json()["detail"]

    settings.ROTA = {"wheel_max_bytes": 100}  # rota reloads its settings on the signal
    r = await upload(operator, good)
    assert r.status_code == 413 and "wheel_max_bytes" in r.json()["detail"]
    settings.ROTA = {}

    names = {w["name"] for w in (await operator.get("/wheels")).json()}
    assert not any(n.startswith(("badpkg", "otherpkg")) for n in names)
    assert not await WheelEvent.objects.filter(package__in=["badpkg", "otherpkg"]).aexists()


async def test_a_viewer_reads_but_may_not_upload_or_delete(bus, tmp_path):
    viewer = await _client("wheel-viewer", "ops_view")
    wheel = build_wheel(tmp_path, "viewpkg", "1.0", "x")
    assert (await viewer.get("/wheels")).status_code == 200
    r = await upload(viewer, wheel)
    assert r.status_code == 403 and "ops_operator" in r.json()["detail"]
    assert (await viewer.delete(f"/wheels/{wheel.name}")).status_code == 403
    anonymous = await Client("").client.get("/wheels")
    assert anonymous.status_code == 401


# -- workers --------------------------------------------------------------------------


def _settings(base: RotaSettings, tmp_path) -> RotaSettings:
    import dataclasses

    return dataclasses.replace(base, wheels_dir=tmp_path / "wheels", wheel_sync_seconds=30.0)


async def _run(client, job: str, **params):
    r = await client.post("/runs", {"job": job, "params": params}, content_type="application/json")
    assert r.status_code == 201, r.content
    run_id = r.json()["run_id"]

    async def done():
        body = (await client.get(f"/runs/{run_id}")).json()
        return body if body["state"] in {"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"} else None

    return await eventually(done, timeout=60)


def _executors():
    return {"command": CommandExecutor(kill_grace=0.5), "python": PythonExecutor(size=1)}


@SLOW
async def test_workers_sync_by_tag_and_runs_pick_up_a_new_version_without_restart(
    operator, rota_settings, tmp_path, monkeypatch
):
    # No index is reachable: everything must come from the registry.
    for var in ("PIP_INDEX_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9/")
    settings = _settings(rota_settings, tmp_path)
    await JobDefinition.objects.acreate(
        name="syncanswer", kind="python", target="syncpkg:answer", tags=["wsa"]
    )
    await JobDefinition.objects.acreate(
        name="syncslow", kind="python", target="syncpkg:slow_answer", tags=["wsa"]
    )
    await JobDefinition.objects.acreate(
        name="syncscript", kind="command", target="syncpkg-answer", tags=["wsa"]
    )
    v1 = build_wheel(tmp_path, "syncpkg", "1.0", "v1")
    v2 = build_wheel(tmp_path, "syncpkg", "2.0", "v2")
    other = build_wheel(tmp_path, "syncother", "1.0", "other", deps=["syncpkg>=1"])
    assert (await upload(operator, v1, tags="wsa")).status_code == 200
    assert (await upload(operator, other, tags="elsewhere")).status_code == 200
    async with (
        running_worker(settings, tags=["wsa"], executors=_executors()) as a,
        running_worker(settings, tags=["wsb"], executors=_executors()) as b,
    ):
        # The first sync happened before the worker took runs.
        assert [w["package_version"] for w in a.wheels.state["installed_wheels"]] == ["1.0"]
        assert (await _run(operator, "syncanswer"))["result"] == "v1"
        script = await _run(operator, "syncscript")
        assert script["state"] == "SUCCEEDED" and script["stdout"] == "v1\n", script
        # b's tags match nothing, and a never installs what is tagged for others.
        assert b.wheels.state["installed_wheels"] == [] and b.wheels.environment.root is None
        assert not (b.wheels.root / "envs").exists()
        assert {w["package_name"] for w in a.wheels.state["installed_wheels"]} == {"syncpkg"}

        # A run in progress keeps its process when v2 arrives; the next one gets v2.
        slow = asyncio.create_task(_run(operator, "syncslow", seconds=3.0))
        await eventually(lambda: _async(bool(a.active)), timeout=90)
        assert (await upload(operator, v2, tags="wsa")).status_code == 200
        await eventually(lambda: _async(a.wheels.state["selected_wheels"] == [v2.name]), timeout=90)
        finished = await slow
        assert finished["state"] == "SUCCEEDED" and finished["result"] == "v1"
        assert (await _run(operator, "syncanswer"))["result"] == "v2"
        assert (await _run(operator, "syncscript"))["stdout"] == "v2\n"

        # The registry entry shows each worker's sync state.
        workers = (await operator.get("/workers")).json()["items"]
        entry = next(w for w in workers if w["worker_id"] == a.worker_id)
        installed = entry["wheel_sync"]["installed_wheels"]
        assert [(w["package_name"], w["package_version"]) for w in installed] == [
            ("syncpkg", "2.0")
        ]
        assert installed[0]["sha256_hex"] == hashlib.sha256(v2.read_bytes()).hexdigest()
        assert installed[0]["installed_at"] and entry["wheel_sync"]["last_error"] is None

        # Nothing changed: nothing is installed again.
        generation = a.wheels.environment.generation
        assert await a.wheels.step() is False
        assert a.wheels.environment.generation == generation

        # Deleting v2 falls back to v1.
        assert (await operator.delete(f"/wheels/{v2.name}")).status_code == 200
        await eventually(lambda: _async(a.wheels.state["selected_wheels"] == [v1.name]), timeout=90)
        assert (await _run(operator, "syncanswer"))["result"] == "v1"
    for name in (v1.name, other.name):
        await operator.delete(f"/wheels/{name}")
    assert not (tmp_path / "wheels" / a.worker_id).exists()  # removed at shutdown


@SLOW
async def test_a_dependency_from_the_registry_installs_and_a_missing_one_keeps_the_previous_set(
    operator, rota_settings, tmp_path
):
    settings = _settings(rota_settings, tmp_path)
    await JobDefinition.objects.acreate(
        name="depanswer", kind="python", target="depapp:answer", tags=["wdep"]
    )
    lib = build_wheel(tmp_path, "deplib", "1.0", "lib")
    app1 = build_wheel(
        tmp_path,
        "depapp",
        "1.0",
        "app1",
        deps=["deplib==1.0"],
        body="\nimport deplib\n\ndef answer(**params):\n    return 'app1+' + deplib.answer()\n",
    )
    app2 = build_wheel(tmp_path, "depapp", "2.0", "app2", deps=["nowhere-in-registry>=1"])
    assert (await upload(operator, lib, tags="wdep")).status_code == 200
    assert (await upload(operator, app1, tags="wdep")).status_code == 200
    async with running_worker(settings, tags=["wdep"], executors=_executors()) as w:
        installed = {x["package_name"] for x in w.wheels.state["installed_wheels"]}
        assert installed == {"deplib", "depapp"}
        assert (await _run(operator, "depanswer"))["result"] == "app1+lib"

        assert (await upload(operator, app2, tags="wdep")).status_code == 200
        state = await eventually(
            lambda: _async(w.wheels.state if w.wheels.state["last_result"] == "error" else None),
            timeout=90,
        )
        assert "nowhere-in-registry" in state["last_error"] and state["next_retry_at"]
        assert {x["package_version"] for x in state["installed_wheels"]} == {"1.0"}
        # The error is in the registry entry, and runs keep the previous set.
        assert (await _run(operator, "depanswer"))["result"] == "app1+lib"
        entry = next(
            x
            for x in (await operator.get("/workers")).json()["items"]
            if x["worker_id"] == w.worker_id
        )
        assert entry["wheel_sync"]["last_result"] == "error"
    for wheel in (lib, app1, app2):
        await operator.delete(f"/wheels/{wheel.name}")


@SLOW
async def test_pyoco_flows_from_a_wheel_run_and_a_new_version_replaces_idle_children(
    operator, rota_settings, tmp_path
):
    from rota.worker.executors.pyoco import PyocoExecutor

    settings = _settings(rota_settings, tmp_path)
    await JobDefinition.objects.acreate(
        name="wheelflow", kind="pyoco", target="flowpkg_flow", tags=["wflow"]
    )
    v1 = build_wheel(tmp_path, "flowpkg", "1.0", "flow-v1", flows=True)
    v2 = build_wheel(tmp_path, "flowpkg", "2.0", "flow-v2", flows=True)
    assert (await upload(operator, v1, tags="wflow")).status_code == 200
    executors = {"pyoco": PyocoExecutor(size=1)}
    async with running_worker(settings, tags=["wflow"], executors=executors) as w:
        await executors["pyoco"].start()  # a warm child, started with v1
        first = await _run(operator, "wheelflow")
        assert first["state"] == "SUCCEEDED" and first["stdout"] == "flow-v1\n", first
        assert (await upload(operator, v2, tags="wflow")).status_code == 200
        await eventually(lambda: _async(w.wheels.state["selected_wheels"] == [v2.name]), timeout=90)
        second = await _run(operator, "wheelflow")
        assert second["state"] == "SUCCEEDED" and second["stdout"] == "flow-v2\n", second
    for wheel in (v1, v2):
        await operator.delete(f"/wheels/{wheel.name}")


@SLOW
async def test_wheels_for_another_interpreter_are_skipped(operator, rota_settings, tmp_path):
    settings = _settings(rota_settings, tmp_path)
    wheel = build_wheel(tmp_path, "cpkg", "1.0", "c")
    foreign = tmp_path / "cpkg-1.0-cp27-cp27m-win32.whl"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(foreign, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
    assert (await upload(operator, foreign, tags="wforeign")).status_code == 200
    async with running_worker(settings, tags=["wforeign"], executors=_executors()) as w:
        assert w.wheels.state["installed_wheels"] == []
        assert w.wheels.state["skipped_incompatible"] == [
            {"wheel_name": foreign.name, "reason": "unsupported_wheel_tags"}
        ]
    await operator.delete(f"/wheels/{foreign.name}")


async def _async(value):
    return value


async def _ops_user(name: str, group: str):
    from django.test import AsyncClient

    user = await get_user_model().objects.acreate(username=name)
    g, _ = await Group.objects.aget_or_create(name=group)
    await user.groups.aadd(g)
    client = AsyncClient()
    await client.aforce_login(user)
    return client


@SLOW
async def test_the_ops_page_uploads_lists_and_shows_history_and_worker_sync(
    bus, rota_settings, tmp_path
):
    operator = await _ops_user("ops-wheel-operator", "ops_operator")
    viewer = await _ops_user("ops-wheel-viewer", "ops_view")
    wheel = build_wheel(tmp_path, "opspkg", "1.0", "ops")
    async with running_worker(
        _settings(rota_settings, tmp_path), tags=["wops"], executors=_executors()
    ) as w:
        r = await operator.post(
            "/ops/wheels/upload",
            {"wheel": SimpleUploadedFile(wheel.name, wheel.read_bytes()), "tags": "wops"},
        )
        assert r.status_code == 302 and "uploaded=opspkg" in r["Location"], r.content
        await eventually(
            lambda: _async(w.wheels.state["selected_wheels"] == [wheel.name]), timeout=90
        )
        page = (await operator.get("/ops/wheels/")).content.decode()
        assert wheel.name in page and 'data-method="DELETE"' in page
        sync_table = page[page.index('id="ops-wheel-sync-table"') :]
        assert w.worker_id in sync_table and "opspkg 1.0" in sync_table
        history = page[page.index('id="ops-wheel-history-table"') :]
        assert "ops-wheel-operator" in history and "upload" in history

        # The same version again: the page says why, nothing is stored twice.
        again = await operator.post(
            "/ops/wheels/upload", {"wheel": SimpleUploadedFile(wheel.name, wheel.read_bytes())}
        )
        assert again.status_code == 409 and "current version 1.0" in again.content.decode()

        # A viewer sees the page without the controls and may not upload.
        seen = (await viewer.get("/ops/wheels/", headers={"Accept-Language": "ja"})).content
        assert wheel.name in seen.decode() and b'data-method="DELETE"' not in seen
        refused = await viewer.post(
            "/ops/wheels/upload", {"wheel": SimpleUploadedFile(wheel.name, b"x")}
        )
        assert refused.status_code == 403
    event = await WheelEvent.objects.aget(wheel_name=wheel.name)
    assert event.actor["username"] == "ops-wheel-operator" and event.actor["via"] == "session"
    assert await AdminActionLog.objects.filter(action="wheel.upload", target=wheel.name).aexists()
    token_client = await _client("ops-wheel-cleaner", "ops_operator")
    assert (await token_client.delete(f"/wheels/{wheel.name}")).status_code == 200
