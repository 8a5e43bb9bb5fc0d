"""Issue 13, finding 1: params can never add an argument the job's definition
did not allow. On real NATS, SQL and a worker that runs a real process printing
its own argv; also in the PostgreSQL pass."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rota.models import JobDefinition, JobRun
from rota.worker.executors.command import CommandExecutor, params_to_argv
from tests.conftest import eventually, running_worker
from tests.integration.test_events import client  # noqa: F401  (the authorised API client)

pytestmark = pytest.mark.django_db(transaction=True)

ARGV_SCRIPT = "import json, sys; print(json.dumps(sys.argv[1:]))"
DECLARED = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "tag": {"type": "array"}, "v": {"type": "boolean"}},
}


@pytest.fixture
async def worker(rota_settings):
    async with running_worker(
        rota_settings, tags=["inject"], executors={"command": CommandExecutor(kill_grace=0.5)}
    ) as w:
        yield w


async def _job(name: str, schema: dict, **extra) -> JobDefinition:
    return await JobDefinition.objects.acreate(
        name=name,
        kind="command",
        target=sys.executable,
        args=["-c", ARGV_SCRIPT, "fixed"],
        tags=["inject"],
        params_schema=schema,
        **extra,
    )


async def _argv_of(client, job: str, params: dict) -> list[str]:  # noqa: F811
    r = await client.post("/runs", {"job": job, "params": params}, content_type="application/json")
    assert r.status_code == 201, r.content
    run_id = r.json()["run_id"]

    async def done():
        row = await JobRun.objects.aget(id=run_id)
        return row if row.state in ("SUCCEEDED", "FAILED") else None

    await eventually(done, timeout=30)
    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["state"] == "SUCCEEDED", run
    return json.loads(run["stdout"])


async def test_keys_that_are_not_plain_names_are_refused_at_submit(client):  # noqa: F811
    await _job("inj-free", {"type": "object", "additionalProperties": True})
    for key in ("checkpoint=1", "", "-x", "--", "a b", "é", "1abc"):
        r = await client.post(
            "/runs", {"job": "inj-free", "params": {key: True}}, content_type="application/json"
        )
        assert r.status_code == 422, (key, r.content)
        assert "params" in r.json()["detail"], r.content
    assert not await JobRun.objects.filter(job_name="inj-free").aexists()


async def test_a_command_job_only_takes_declared_params(client):  # noqa: F811
    # The default schema {} declares nothing: no params at all.
    await _job("inj-default", {})
    r = await client.post(
        "/runs",
        {"job": "inj-default", "params": {"checkpoint-action": "exec=id"}},
        content_type="application/json",
    )
    assert r.status_code == 422, r.content
    assert "checkpoint-action" in r.json()["detail"]
    await _job("inj-declared", DECLARED)
    r = await client.post(
        "/runs",
        {"job": "inj-declared", "params": {"name": "x", "checkpoint": 1}},
        content_type="application/json",
    )
    assert r.status_code == 422, r.content
    assert "checkpoint" in r.json()["detail"] and "not declared" in r.json()["detail"]


async def test_values_never_start_an_option_of_their_own(client, worker):  # noqa: F811
    await _job("inj-values", DECLARED)
    argv = await _argv_of(
        client, "inj-values", {"name": "--checkpoint-action=exec=id", "tag": ["-rf", "--"]}
    )
    assert argv == ["fixed", "--name=--checkpoint-action=exec=id", "--tag=-rf", "--tag=--"]


async def test_free_form_params_are_opt_in_and_still_plain_names(client, worker):  # noqa: F811
    await _job("inj-open", {"type": "object", "additionalProperties": True})
    argv = await _argv_of(client, "inj-open", {"any_key": "-v", "flag": True, "off": False})
    assert argv == ["fixed", "--any_key=-v", "--flag"]


async def test_schedule_save_and_event_fan_out_refuse_the_same_keys(client):  # noqa: F811
    await _job("inj-sched", DECLARED, subscribed_events=["inj.evt"])
    r = await client.post(
        "/schedules",
        {"task_name": "inj-sched", "cron_expression": "0 * * * *", "task_params": {"x=1": 1}},
        content_type="application/json",
    )
    assert r.status_code == 422, r.content
    r = await client.post(
        "/schedules",
        {
            "task_name": "inj-sched",
            "cron_expression": "0 * * * *",
            "task_params": {"undeclared": 1},
        },
        content_type="application/json",
    )
    assert r.status_code == 422, r.content
    r = await client.post(
        "/events",
        {"name": "inj.evt", "payload": {"--exec": "id"}, "dedupe_key": "inj-1"},
        content_type="application/json",
    )
    assert r.status_code == 201, r.content
    assert r.json()["runs"] == []
    assert r.json()["refused"][0]["job"] == "inj-sched"


async def test_job_defaults_are_held_to_the_same_rule(client):  # noqa: F811
    r = await client.post(
        "/jobs",
        {"name": "inj-defaults", "kind": "command", "target": "true", "default_params": {"x": 1}},
        content_type="application/json",
    )
    assert r.status_code == 422, r.content
    assert "x" in r.json()["detail"]


# -- the fuzz: whatever keys and values come, argv only carries declared options --

_keys = st.one_of(
    st.sampled_from(["name", "tag", "v", "", "-", "--", "a=b", "-x", "name=1", " name"]),
    st.text(max_size=12),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["-rf", "--", "--name=x", "-", "--tag"]),
)
_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), _scalars, max_size=2),
)


def _allowed(argv: list[str], declared: set[str]) -> bool:
    """Every item is ``--<declared>`` or ``--<declared>=...``: nothing else."""
    for item in argv:
        name = item[2:].split("=", 1)[0]
        if not item.startswith("--") or name not in declared:
            return False
    return True


@given(params=st.dictionaries(_keys, _values, max_size=5))
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_no_params_key_or_value_adds_an_undeclared_argument(params) -> None:
    """Pure check of the submit-time rule plus the argv mapping: params either
    are refused, or every argv item they produce is a declared ``--key[=value]``."""
    from rota.domain.params import validate_params
    from rota.errors import InvalidInput

    try:
        validate_params(DECLARED, params, kind="command")
    except InvalidInput:
        return
    argv = params_to_argv(params)
    assert _allowed(argv, set(DECLARED["properties"])), (params, argv)


@given(params=st.dictionaries(_keys, _values, max_size=4))
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_through_a_real_process(params) -> None:
    """The same, with the argv the real process sees: what the executor runs
    for params that passed validation."""
    import asyncio

    from rota.domain.params import validate_params
    from rota.domain.snapshot import RunSnapshot
    from rota.errors import InvalidInput

    try:
        validate_params(DECLARED, params, kind="command")
    except InvalidInput:
        return
    snap = RunSnapshot(
        run_id="fuzz",
        job="fuzz",
        kind="command",
        target=sys.executable,
        args=["-c", ARGV_SCRIPT],
        params=params,
    )
    out = asyncio.run(CommandExecutor(kill_grace=0.5).run(snap, asyncio.Event()))
    assert out.state == "SUCCEEDED", out
    assert _allowed(json.loads(out.stdout), set(DECLARED["properties"])), (params, out.stdout)
