"""Definitions of rota's streams, KV buckets and object stores, and their
idempotent creation: a first start creates them, a later start verifies them and
updates a definition that changed (docs/nats.md lists them all)."""

from __future__ import annotations

import logging

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


def stream_configs(settings: RotaSettings) -> list[StreamConfig]:
    r = settings.nats_replicas
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


def kv_configs(settings: RotaSettings) -> list[KeyValueConfig]:
    r = settings.nats_replicas
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


def object_store_configs(settings: RotaSettings) -> list[ObjectStoreConfig]:
    return [
        ObjectStoreConfig(
            bucket=subjects.LOGS_STORE,
            storage=StorageType.FILE,
            replicas=settings.nats_replicas,
            description="rota archived run logs",
        ),
        ObjectStoreConfig(
            bucket=subjects.WHEELS_STORE,
            storage=StorageType.FILE,
            replicas=settings.nats_replicas,
            description="rota wheel registry (docs/wheels.md)",
        ),
    ]


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> str:
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return "created"
    want = set(config.subjects or [])
    have = set(info.config.subjects or [])
    if want != have or info.config.retention != config.retention:
        if info.config.retention != config.retention:
            # JetStream cannot change retention in place; say so instead of guessing.
            raise RuntimeError(
                f"stream {config.name} exists with retention {info.config.retention}, "
                f"rota needs {config.retention}: delete it or point rota at another server"
            )
        await js.update_stream(config)
        return "updated"
    return "verified"


async def ensure_resources(js: JetStreamContext, settings: RotaSettings) -> dict[str, str]:
    """Create or verify every stream, bucket and object store. Safe to call again."""
    outcome: dict[str, str] = {}
    for sc in stream_configs(settings):
        outcome[sc.name] = await _ensure_stream(js, sc)
    for kc in kv_configs(settings):
        try:
            await js.key_value(kc.bucket)
            outcome[kc.bucket] = "verified"
        except (NotFoundError, BadRequestError):
            await js.create_key_value(kc)
            outcome[kc.bucket] = "created"
    for oc in object_store_configs(settings):
        try:
            await js.object_store(oc.bucket)
            outcome[oc.bucket] = "verified"
        except (NotFoundError, BadRequestError):
            await js.create_object_store(bucket=oc.bucket, config=oc)
            outcome[oc.bucket] = "created"
    log.info("nats resources: %s", outcome)
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
