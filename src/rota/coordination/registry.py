"""Reading the worker registry as operators see it, and the operator's marks.

States come from :func:`rota.domain.workers.worker_state` with heartbeat ages
measured by the server's timestamps. Entries outlive heartbeats, so stopped and
lost workers stay listed until someone hides them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from rota.bus import subjects
from rota.coordination.clock import server_now
from rota.coordination.lease import current_holder
from rota.coordination.mirror import Item
from rota.domain.workers import ACTIVE_STATES, Thresholds, worker_state


async def _read(js: JetStreamContext, bucket: str, pattern: str = ">") -> dict[str, Item]:
    """Every live key matching ``pattern`` with its value and stored time.

    Read from the stream's subject list, then one get per key: a KV watch
    started just now can report its initial values complete before the last
    ones arrive (nats-py compares against a pending count the client may
    already hold), which would drop workers from a listing."""
    stream = f"KV_{bucket}"
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(stream, subjects_filter=prefix + pattern)
    subjects_ = list((info.state.subjects or {}).keys())

    async def one(subject: str) -> tuple[str, Item] | None:
        from nats.js.errors import NotFoundError

        try:
            msg = await js.get_msg(stream, subject=subject)
        except NotFoundError:
            return None
        if not msg.data or (msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE")):
            return None
        stored = msg.time.timestamp() if msg.time else 0.0
        return subject[len(prefix) :], Item(msg.data, stored, 0.0, msg.seq or 0)

    found = await asyncio.gather(*(one(s) for s in subjects_))
    return dict(f for f in found if f is not None)


async def thresholds(js: JetStreamContext) -> Thresholds:
    coord = await js.key_value(subjects.COORD_BUCKET)
    try:
        entry = await coord.get(subjects.SETTINGS_KEY)
        return Thresholds.from_mapping(orjson.loads(entry.value or b"{}"))
    except KeyNotFoundError:
        return Thresholds()


async def list_workers(js: JetStreamContext) -> list[dict[str, Any]]:
    """Every registered worker with its computed state, heartbeat age, marks."""
    registry, heartbeats, marks = await asyncio.gather(
        _read(js, subjects.WORKERS_BUCKET),
        _read(js, subjects.HEARTBEATS_BUCKET),
        _read(js, subjects.COORD_BUCKET, "*.>"),
    )
    now, t = await asyncio.gather(server_now(js), thresholds(js))
    out = []
    for worker_id, item in registry.items():
        entry = orjson.loads(item.value)
        beat = heartbeats.get(worker_id)
        age = max(0.0, now - beat.stored_at) if beat is not None else None
        detached = subjects.detached_key(worker_id) in marks
        state = worker_state(
            entry.get("state", ""),
            heartbeat_age=age,
            ttl=t.heartbeat_ttl_seconds,
            detached=detached,
        )
        out.append(
            {
                **entry,
                "reported_state": entry.get("state"),
                "state": state.value,
                "active": state in ACTIVE_STATES,
                "heartbeat_age": age,
                "detached": detached,
                "hidden": subjects.hidden_key(worker_id) in marks,
            }
        )
    out.sort(key=lambda w: (not w["active"], w.get("node_id", ""), w["worker_id"]))
    return out


async def leadership(js: JetStreamContext) -> dict[str, Any]:
    """The leader (with its epoch) and the subleader of each node, for display."""
    leases = await js.key_value(subjects.LEASES_BUCKET)
    leader = await current_holder(leases, subjects.LEADER_KEY)
    if leader and not leader.get("epoch"):
        # Taken a moment ago, its epoch not yet written: not acting as leader yet.
        leader = None
    subs = await _read(js, subjects.LEASES_BUCKET, "subleader.>")
    coord = await js.key_value(subjects.COORD_BUCKET)
    try:
        epoch = int((await coord.get(subjects.EPOCH_KEY)).value or b"0")
    except KeyNotFoundError:
        epoch = 0
    return {
        "leader": leader,
        "epoch": leader.get("epoch", 0) if leader else 0,
        "latest_epoch": epoch,
        "subleaders": [orjson.loads(i.value) for i in subs.values()],
    }


async def set_mark(
    js: JetStreamContext, key: str, on: bool, value: dict[str, Any] | None = None
) -> None:
    coord = await js.key_value(subjects.COORD_BUCKET)
    if on:
        await coord.put(key, orjson.dumps(value or {"at": True}))
    else:
        try:
            await coord.delete(key)
        except KeyNotFoundError:
            pass


async def request_degrade(js: JetStreamContext, epoch: int | None, actor: str) -> None:
    coord = await js.key_value(subjects.COORD_BUCKET)
    await coord.put(subjects.DEGRADE_KEY, orjson.dumps({"epoch": epoch, "actor": actor}))


async def endpoint_of(js: JetStreamContext, worker_id: str) -> str | None:
    """The gRPC endpoint a worker advertises in its registry entry."""
    kv = await js.key_value(subjects.WORKERS_BUCKET)
    try:
        entry = await kv.get(worker_id)
    except KeyNotFoundError:
        return None
    return orjson.loads(entry.value or b"{}").get("grpc_endpoint") or None


def listed(worker: dict[str, Any]) -> bool:
    """Whether an operator's default list shows the worker: the active ones,
    and the detached ones (they still finish their runs)."""
    return bool(worker["active"]) or worker["state"] == "DETACHED"
