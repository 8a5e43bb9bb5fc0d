"""Runs of Pyoco flows over HTTP (seed 003): ``POST /runs`` with ``flow_name``
(delegated here by :func:`rota.api.app.submit_run`), ``POST /runs/yaml`` (a
flow.yaml upload) and ``GET /runs/{id}/tasks``."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpRequest
from ninja import File, Form, Router, Status
from ninja.files import UploadedFile

from rota.api.schemas import ErrorOut, RunIn, RunOut, TasksOut
from rota.conf import get_settings
from rota.domain.params import PARAMS_LIMIT, check_params
from rota.domain.states import seed003_status
from rota.errors import InvalidInput, NotFound
from rota.flows import FLOW_YAML_LIMIT, FlowError, UnknownFlow, flow_from_yaml, registry
from rota.models import JobRun
from rota.runs.service import RunService, prepare_flow
from rota.runs.transitions import RunStore

router = Router(tags=["runs"])


_ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}


def _check_params(params: Any, *, what: str = "params") -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidInput("params must be a JSON object", field="params")
    if len(orjson.dumps(params)) > PARAMS_LIMIT:
        raise InvalidInput(f"{what} are larger than {PARAMS_LIMIT} bytes", field="params")
    check_params(params)  # plain-name keys, depth, no NUL: as for a job's params
    return params


def _idempotency_key(request: HttpRequest) -> str | None:
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 200:
        raise InvalidInput("Idempotency-Key is longer than 200 characters", field="Idempotency-Key")
    return key


async def _submit(request: HttpRequest, row: JobRun, snap: Any) -> Status:
    from rota.api.app import get_bus, run_from_row, run_from_snapshot

    bus = await get_bus()
    run, created = await RunService(bus).submit_prepared(row, snap)
    if created:
        return Status(201, run_from_row(run))
    current = await RunStore(bus.runs).get(run.id)
    return Status(200, run_from_snapshot(current.snap, run) if current else run_from_row(run))


async def submit_flow(request: HttpRequest, body: RunIn) -> Status:
    """``POST /runs`` with ``flow_name``: a run of a registered flow."""
    assert body.flow_name is not None
    try:
        registry(get_settings().flow_modules).flow(body.flow_name)
    except UnknownFlow as exc:
        raise NotFound(str(exc)) from None
    params = _check_params(body.params)
    row, snap = prepare_flow(
        body.flow_name,
        params,
        tag=body.tag,
        tags=body.tags,
        idempotency_key=_idempotency_key(request),
    )
    return await _submit(request, row, snap)


#: Responses of ``POST /runs/yaml``. It is registered in :mod:`rota.api.app`, before
#: ``/runs/{run_id}``, whose pattern would otherwise take the path.
YAML_RESPONSES = {201: RunOut, 200: RunOut, 413: ErrorOut, **_ERRORS}


async def submit_flow_yaml(
    request: HttpRequest,
    flow: UploadedFile | None = File(None),
    file: UploadedFile | None = File(None),
    params: str | None = Form(None),
    tag: str | None = Form(None),
    flow_name: str | None = Form(None),
):
    """Run a flow.yaml (multipart field ``flow`` or ``file``), with optional
    ``params`` (a JSON object, merged over the file's ``flow.defaults``), ``tag``
    and ``flow_name`` (default ``main``). The file is parsed with Pyoco's loader,
    never executed; every task it names must be a registered task. Larger than
    64 KB: 413; invalid YAML, an unknown task or a bad graph: 422."""
    upload = flow or file
    if upload is None:
        raise InvalidInput("upload the flow.yaml as multipart field 'flow'", field="flow")
    if (upload.size or 0) > FLOW_YAML_LIMIT:
        return Status(413, {"detail": f"flow.yaml is larger than {FLOW_YAML_LIMIT} bytes"})
    data = upload.read(FLOW_YAML_LIMIT + 1)
    if len(data) > FLOW_YAML_LIMIT:
        return Status(413, {"detail": f"flow.yaml is larger than {FLOW_YAML_LIMIT} bytes"})
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("flow.yaml is not UTF-8 text", field="flow") from None
    try:
        given = orjson.loads(params) if params else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"params are not JSON: {exc}", field="params") from None
    given = _check_params(given)
    name = flow_name or "main"
    if len(name) > 200:
        raise InvalidInput("flow_name is longer than 200 characters", field="flow_name")
    if tag is not None and not 0 < len(tag) <= 100:
        raise InvalidInput("tag must be 1 to 100 characters", field="tag")
    try:
        spec = flow_from_yaml(text, registry(get_settings().flow_modules), flow_name=name)
    except FlowError as exc:
        raise InvalidInput(str(exc), field="flow") from None
    # The file's defaults count too: the run carries them merged.
    merged = _check_params(
        {**spec.defaults, **given}, what="params merged over the flow's defaults"
    )
    row, snap = prepare_flow(
        name,
        merged,
        tag=tag,
        flow_yaml=text,
        idempotency_key=_idempotency_key(request),
    )
    return await _submit(request, row, snap)


@router.get("/runs/{run_id}/tasks", response={200: TasksOut, **_ERRORS})
async def get_run_tasks(request: HttpRequest, run_id: str, include: str | None = None):
    """Task states of a flow run, and their records with ``include=records``
    (records may be cut past the size limit: ``task_records_truncated``)."""
    from rota.api.app import get_bus

    row = await JobRun.objects.filter(id=run_id).afirst()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    current = await RunStore((await get_bus()).runs).get(run_id)
    if current is not None:
        s = current.snap
        state, tasks, records, truncated = (
            s.state,
            s.tasks,
            s.task_records,
            s.task_records_truncated,
        )
    else:
        state, tasks = row.state, row.tasks
        records, truncated = row.task_records, row.task_records_truncated
    return {
        "run_id": row.id,
        "flow_name": row.flow_name,
        "state": state,
        "status": seed003_status(state),
        "tasks": tasks,
        "task_records": records if wants_records(include) else None,
        "task_records_truncated": truncated,
    }


def wants_records(include: str | None) -> bool:
    """``include=records`` (a comma-separated list may name more)."""
    return bool(include) and "records" in {p.strip() for p in include.split(",")}  # type: ignore[union-attr]
