"""Workers and leadership: the registry as operators see it, and the operations
on it (hide, detach, undock, drain, degrade). Every operation is audited."""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema

from rota.api.schemas import ErrorOut, StrictSchema
from rota.audit import actor_of, record
from rota.bus import subjects
from rota.coordination import registry
from rota.errors import BackendUnavailable, NotFound

router = Router(tags=["workers"])


class WorkerPatch(StrictSchema):
    hidden: bool


class WorkerFilter(Schema):
    scope: Literal["active", "all"] = "active"
    state: str | None = None
    include_hidden: bool = False
    limit: int = 200


async def _bus():
    from rota.api.app import get_bus

    return await get_bus()


async def _worker(js, worker_id: str) -> dict[str, Any]:
    for w in await registry.list_workers(js):
        if w["worker_id"] == worker_id:
            return w
    raise NotFound(f"no worker {worker_id!r}")


@router.get("/workers")
async def list_workers(request: HttpRequest, filters: Query[WorkerFilter]):
    """Workers with their state (RUNNING, IDLE, DRAINING, STOPPED_GRACEFUL,
    DISCONNECTED, DETACHED) judged by server-side heartbeat ages. ``scope=all``
    includes stopped and lost workers, which stay listed until hidden."""
    bus = await _bus()
    items = await registry.list_workers(bus.js)
    if filters.scope == "active":
        items = [w for w in items if registry.listed(w)]
    if filters.state:
        wanted = {s.strip().upper() for s in filters.state.split(",")}
        items = [w for w in items if w["state"] in wanted]
    if not filters.include_hidden:
        items = [w for w in items if not w["hidden"]]
    return {"items": items[: max(1, min(filters.limit, 1000))]}


@router.patch("/workers/{worker_id}")
async def patch_worker(request: HttpRequest, worker_id: str, body: WorkerPatch):
    """Hide (or show again) a worker in lists. Hiding changes nothing else."""
    bus = await _bus()
    await _worker(bus.js, worker_id)
    await registry.set_mark(bus.js, subjects.hidden_key(worker_id), body.hidden)
    await record(actor_of(request), "worker.hide" if body.hidden else "worker.show", worker_id)
    return await _worker(bus.js, worker_id)


@router.post("/workers/{worker_id}/detach")
async def detach_worker(request: HttpRequest, worker_id: str):
    """Cut a worker off: it takes no new work, and its runs go through
    supervision (confirmed if it still runs them, else re-dispatched)."""
    bus = await _bus()
    await _worker(bus.js, worker_id)
    await registry.set_mark(
        bus.js, subjects.detached_key(worker_id), True, {"by": actor_of(request)}
    )
    await record(actor_of(request), "worker.detach", worker_id)
    return await _worker(bus.js, worker_id)


@router.post("/workers/{worker_id}/undock")
async def undock_worker(request: HttpRequest, worker_id: str):
    """Clear the detach mark. A running worker rejoins under a new id."""
    bus = await _bus()
    await _worker(bus.js, worker_id)
    await registry.set_mark(bus.js, subjects.detached_key(worker_id), False)
    await record(actor_of(request), "worker.undock", worker_id)
    return await _worker(bus.js, worker_id)


@router.post("/workers/{worker_id}/drain", response={200: dict, 404: ErrorOut, 503: ErrorOut})
async def drain_worker(request: HttpRequest, worker_id: str):
    """Tell a worker (over gRPC) to finish its runs and take no more. 503 when
    the worker does not answer in time (``grpc_timeout_seconds``): try again."""
    from rota.api.app import control_client
    from rota.control.client import ControlError

    bus = await _bus()
    worker = await _worker(bus.js, worker_id)
    if not worker.get("grpc_endpoint"):
        raise BackendUnavailable(f"worker {worker_id} has no control endpoint")
    from rota.errors import RotaError

    try:
        reply = await (await control_client()).drain(worker["grpc_endpoint"])
    except (ControlError, RotaError) as exc:
        raise BackendUnavailable(f"worker {worker_id} did not answer: {exc}") from None
    await record(actor_of(request), "worker.drain", worker_id, running=reply.running)
    return {"worker_id": worker_id, "draining": True, "running": reply.running}


@router.get("/leader", tags=["leader"])
async def get_leader(request: HttpRequest):
    """The leader with its epoch, and the subleader of each node."""
    return await registry.leadership((await _bus()).js)


@router.post("/leader/degrade", tags=["leader"])
async def degrade_leader(request: HttpRequest):
    """Ask the current leader to step down; it stays out of the next election
    for the cool-down, and a subleader takes over."""
    bus = await _bus()
    current = await registry.leadership(bus.js)
    if not current["leader"]:
        raise NotFound("there is no leader right now")
    await registry.request_degrade(bus.js, current["epoch"], actor_of(request))
    await record(
        actor_of(request), "leader.degrade", current["leader"]["worker_id"], epoch=current["epoch"]
    )
    return {"requested": True, **current}
