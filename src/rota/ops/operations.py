"""The operations the ops UI performs itself, because the JSON API has no
endpoint for them: reassigning a run, and a worker's Ping and GetStatus."""

from __future__ import annotations

from typing import Any

from rota.bus.subjects import pinned_subject, work_subject
from rota.coordination import registry
from rota.domain.snapshot import RunSnapshot
from rota.domain.states import RunState
from rota.errors import BackendUnavailable, Conflict, NotFound, RotaError


async def reassign_run(run_id: str, worker_id: str | None) -> RunSnapshot:
    """Publish a run that no worker holds (PENDING or ORPHANED) to its tag's work
    subject again, or to one worker's pinned subject.

    The message id differs from the run's dispatch id (``<run_id>:<attempt>``),
    so JetStream's duplicate window does not drop it; a copy that arrives
    beside another is harmless, because only one claim's compare-and-set wins."""
    import time

    from rota.api.app import get_bus
    from rota.runs.dispatch import REV_HEADER
    from rota.runs.transitions import RunStore

    bus = await get_bus()
    current = await RunStore(bus.runs).get(run_id)
    if current is None:
        raise NotFound(f"run {run_id} has no live snapshot (it ended, or it is held back)")
    if current.snap.state not in (RunState.PENDING, RunState.ORPHANED):
        raise Conflict(
            f"run {run_id} is {current.snap.state}: only a PENDING or ORPHANED run can be "
            "reassigned (cancel a running one instead)"
        )
    if worker_id is not None:
        workers = {w["worker_id"]: w for w in await registry.list_workers(bus.js)}
        if worker_id not in workers:
            raise NotFound(f"no worker {worker_id!r}")
        if workers[worker_id]["state"] not in ("RUNNING", "IDLE"):
            raise Conflict(f"worker {worker_id} is {workers[worker_id]['state']}; pick another")
    subject = pinned_subject(worker_id) if worker_id else work_subject(current.snap.tag)
    await bus.js.publish(
        subject,
        current.snap.encode(),
        headers={
            "Nats-Msg-Id": f"{run_id}:{current.snap.attempt}:reassign:{time.time_ns()}",
            REV_HEADER: str(current.rev),
        },
    )
    return current.snap


async def worker_endpoint(worker_id: str) -> str:
    from rota.api.app import get_bus

    bus = await get_bus()
    endpoint = await registry.endpoint_of(bus.js, worker_id)
    if not endpoint:
        raise NotFound(f"worker {worker_id} advertises no control endpoint")
    return endpoint


async def ping(worker_id: str) -> dict[str, Any]:
    """gRPC Ping of one worker: its reply and the round trip in milliseconds."""
    from google.protobuf.json_format import MessageToDict

    from rota.api.app import control_client

    endpoint = await worker_endpoint(worker_id)
    try:
        reply, seconds = await (await control_client()).ping(endpoint)
    except RotaError as exc:
        raise BackendUnavailable(f"worker {worker_id} did not answer: {exc}") from None
    return {
        "endpoint": endpoint,
        "round_trip_ms": round(seconds * 1000, 2),
        "reply": MessageToDict(reply, preserving_proto_field_name=True),
    }


async def status(worker_id: str) -> dict[str, Any]:
    """gRPC GetStatus of one worker."""
    from google.protobuf.json_format import MessageToDict

    from rota.api.app import control_client

    endpoint = await worker_endpoint(worker_id)
    try:
        reply = await (await control_client()).status(endpoint)
    except RotaError as exc:
        raise BackendUnavailable(f"worker {worker_id} did not answer: {exc}") from None
    return {"endpoint": endpoint, "reply": MessageToDict(reply, preserving_proto_field_name=True)}
