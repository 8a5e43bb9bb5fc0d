"""Definitions of rota's streams, KV buckets and object stores, and their
idempotent creation: a first start creates them, a later start verifies them and
updates a definition that changed (docs/nats.md lists them all).

Replicas follow the cluster unless a setting fixes them: R3 on three or more
nodes, R1 alone, and never fewer than a resource already has (a node that is
down while rota starts does not shrink anything). Growing one node to three and
calling :func:`ensure_resources` again (``rota nats scale``, or any start of a
lead worker or ``rota up``) moves every resource to R3 in place: JetStream adds
the replicas and catches them up while the stream keeps serving."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from rota.bus import subjects
from rota.conf import RotaSettings
from rota.domain.workers import Thresholds

log = logging.getLogger(__name__)

#: The live output stream keeps a day, at most 1 GiB; finished runs' output is in SQL.
LIVE_LOGS_MAX_AGE = 24 * 3600.0
LIVE_LOGS_MAX_BYTES = 1 << 30


def cluster_size(nc: Client) -> int:
    """How many servers the connected server's cluster has (1 when alone)."""
    info = nc._server_info  # the INFO of the connected server; nats-py has no public getter
    if not info.get("cluster"):
        return 1
    return max(1, len(set(info.get("connect_urls") or ())))


def replicas_for_cluster(nodes: int) -> int:
    """rota's replica count for a cluster of ``nodes`` JetStream servers."""
    return 3 if nodes >= 3 else 1


def stream_configs(settings: RotaSettings, replicas: int = 1) -> list[StreamConfig]:
    r = replicas
    return [
        StreamConfig(
            name=subjects.WORK_STREAM,
            subjects=[f"{subjects.WORK_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=r,
            duplicate_window=120.0,
            description="rota dispatch messages, one per run attempt",
        ),
        StreamConfig(
            name=subjects.DLQ_STREAM,
            subjects=[f"{subjects.DLQ_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=r,
            max_age=30 * 24 * 3600.0,
            description="rota dead letters: runs that cannot run",
        ),
        StreamConfig(
            name=subjects.LOGS_STREAM,
            subjects=[f"{subjects.LOGS_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=r,
            max_age=LIVE_LOGS_MAX_AGE,
            max_bytes=LIVE_LOGS_MAX_BYTES,
            discard=DiscardPolicy.OLD,
            description="rota live run output (the table and the archive keep it after)",
        ),
    ]


def kv_configs(settings: RotaSettings, replicas: int = 1) -> list[KeyValueConfig]:
    r = replicas
    return [
        KeyValueConfig(
            bucket=subjects.RUNS_BUCKET,
            history=1,
            ttl=settings.snapshot_max_age_seconds,
            storage=StorageType.FILE,
            replicas=r,
            description="rota live run snapshots",
        ),
        KeyValueConfig(
            bucket=subjects.WORKERS_BUCKET,
            history=1,
            storage=StorageType.FILE,
            replicas=r,
            description="rota worker registry",
        ),
        KeyValueConfig(
            bucket=subjects.HEARTBEATS_BUCKET,
            history=1,
            # Ages are judged by the entries' server timestamps against the
            # current TTL setting; the max age only clears long-dead workers.
            ttl=24 * 3600.0,
            storage=StorageType.FILE,
            replicas=r,
            description="rota worker heartbeats",
        ),
        KeyValueConfig(
            bucket=subjects.LEASES_BUCKET,
            history=1,
            ttl=Thresholds().leader_lease_seconds,
            storage=StorageType.FILE,
            replicas=r,
            description="rota leader and subleader leases (max age = lease TTL)",
        ),
        KeyValueConfig(
            bucket=subjects.COORD_BUCKET,
            history=1,
            storage=StorageType.FILE,
            replicas=r,
            description="rota coordination: epoch, settings, operator marks",
        ),
    ]


def object_store_configs(settings: RotaSettings, replicas: int = 1) -> list[ObjectStoreConfig]:
    return [
        ObjectStoreConfig(
            bucket=subjects.LOGS_STORE,
            storage=StorageType.FILE,
            replicas=replicas,
            description="rota archived run logs",
        ),
        ObjectStoreConfig(
            bucket=subjects.WHEELS_STORE,
            storage=StorageType.FILE,
            replicas=settings.nats_replicas,
            description="rota wheel registry (docs/wheels.md)",
        ),
    ]


#: Stream settings rota owns and brings back to its definition on every ensure.
#: Not max_age: the lease bucket's follows a runtime setting (set_lease_ttl).
_OWNED = ("num_replicas", "max_bytes", "discard", "description")


def _changes(
    want: StreamConfig, have: StreamConfig, owned: tuple[str, ...], *, auto_replicas: bool
) -> dict[str, Any]:
    changes = {}
    for name in owned:
        value = getattr(want, name)
        if value is None or value == getattr(have, name):
            continue
        if name == "num_replicas" and auto_replicas and value < (have.num_replicas or 1):
            continue  # taken from the cluster: never shrink what an operator grew
        changes[name] = value
    if want.max_age is not None and want.max_age != have.max_age and want.name in _AGED:
        changes["max_age"] = want.max_age
    return changes


#: What rota owns of a KV bucket's or object store's backing stream.
_BACKING_OWNED = ("num_replicas", "description")

#: Streams whose max age is rota's definition (not a runtime setting).
_AGED = {subjects.DLQ_STREAM, subjects.LOGS_STREAM}


async def _ensure_stream(
    js: JetStreamContext, name: str, config: StreamConfig, *, auto: bool
) -> str:
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(config)
        return "created"
    return await _reconcile(js, config, info.config, auto=auto)


async def _reconcile(
    js: JetStreamContext,
    want: StreamConfig,
    have: StreamConfig,
    *,
    auto: bool,
    owned: tuple[str, ...] = _OWNED,
) -> str:
    if want.retention is not None and have.retention != want.retention:
        # JetStream cannot change retention in place; say so instead of guessing.
        raise RuntimeError(
            f"stream {want.name} exists with retention {have.retention}, "
            f"rota needs {want.retention}: delete it or point rota at another server"
        )
    changes = _changes(want, have, owned, auto_replicas=auto)
    if want.subjects and set(want.subjects) != set(have.subjects or []):
        changes["subjects"] = want.subjects
    if not changes:
        return "verified"
    await js.update_stream(dataclasses.replace(have, **changes))
    log.warning("nats: updated %s: %s", want.name, changes)
    return "updated"


async def _ensure_backing(
    js: JetStreamContext, stream: str, replicas: int, description: str | None, *, auto: bool
) -> str:
    """Bring a KV bucket's or object store's backing stream to rota's definition."""
    info = await js.stream_info(stream)
    want = StreamConfig(name=stream, num_replicas=replicas, description=description)
    # The rest of a bucket's stream is nats-py's to define (from its KV config).
    return await _reconcile(js, want, info.config, auto=auto, owned=_BACKING_OWNED)


async def resource_replicas(js: JetStreamContext, settings: RotaSettings) -> int:
    """The replica count rota asks for: the setting, or the cluster's size."""
    if settings.nats_replicas:
        return settings.nats_replicas
    return replicas_for_cluster(cluster_size(js._nc))


async def ensure_resources(
    js: JetStreamContext, settings: RotaSettings, *, replicas: int | None = None
) -> dict[str, str]:
    """Create, verify or update every stream, bucket and object store. Safe to call
    again; with ``replicas`` (or ``ROTA_NATS_REPLICAS``) it also shrinks."""
    auto = replicas is None and not settings.nats_replicas
    r = replicas or await resource_replicas(js, settings)
    outcome: dict[str, str] = {}
    for sc in stream_configs(settings, r):
        assert sc.name is not None  # every stream rota defines is named
        outcome[sc.name] = await _ensure_stream(js, sc.name, sc, auto=auto)
    for kc in kv_configs(settings, r):
        try:
            await js.key_value(kc.bucket)
        except (NotFoundError, BadRequestError):
            await js.create_key_value(kc)
            outcome[kc.bucket] = "created"
        else:
            outcome[kc.bucket] = await _ensure_backing(
                js, f"KV_{kc.bucket}", r, kc.description, auto=auto
            )
    for oc in object_store_configs(settings, r):
        bucket = oc.bucket
        assert bucket is not None  # every store rota defines is named
        try:
            await js.object_store(bucket)
        except (NotFoundError, BadRequestError):
            await js.create_object_store(bucket=bucket, config=oc)
            outcome[bucket] = "created"
        else:
            outcome[bucket] = await _ensure_backing(
                js, f"OBJ_{bucket}", r, oc.description, auto=auto
            )
    log.info("nats resources (R%d): %s", r, outcome)
    return outcome


async def set_lease_ttl(js: JetStreamContext, seconds: float) -> None:
    """Make the lease bucket's max age follow the lease TTL setting."""
    info = await js.stream_info(f"KV_{subjects.LEASES_BUCKET}")
    if info.config.max_age != seconds:
        info.config.max_age = seconds
        # JetStream refuses a duplicate window longer than the max age.
        if info.config.duplicate_window and info.config.duplicate_window > seconds:
            info.config.duplicate_window = seconds
        await js.update_stream(info.config)
