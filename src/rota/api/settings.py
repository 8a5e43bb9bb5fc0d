"""SchedulerSettings over HTTP: read, and change with validation. A change is
saved in SQL and published to KV at once; the leader also republishes whatever
SQL holds, so every process follows within a second or two."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Field, Router

from rota.api.auth import ADMIN_AUTH
from rota.api.schemas import StrictSchema
from rota.audit import actor_of, record
from rota.runs.sqlwriter import sql_writer

router = Router(tags=["settings"])


class SettingsPatch(StrictSchema):
    continuation_retries: int | None = Field(None, ge=1, le=20)
    continuation_interval_seconds: float | None = Field(None, ge=0.05, le=60)
    log_retention_days: int | None = Field(None, ge=1, le=3650)
    heartbeat_interval_seconds: float | None = Field(None, ge=0.1, le=60)
    heartbeat_ttl_seconds: float | None = Field(None, ge=0.3, le=600)
    leader_lease_seconds: float | None = Field(None, ge=1, le=120)
    assign_ahead_seconds: float | None = Field(None, ge=0, le=300)
    grpc_timeout_seconds: float | None = Field(None, ge=0.05, le=60)
    grpc_retries: int | None = Field(None, ge=0, le=10)
    degrade_cooldown_seconds: float | None = Field(None, ge=0, le=3600)


def bounds(name: str) -> tuple[float, float]:
    """The (min, max) a setting takes, as ``SettingsPatch`` checks it (the ops
    settings page shows the same limits)."""
    meta = SettingsPatch.model_fields[name].metadata
    return (
        next(m.ge for m in meta if getattr(m, "ge", None) is not None),
        next(m.le for m in meta if getattr(m, "le", None) is not None),
    )


def _load() -> dict:
    from rota.models import SchedulerSettings

    return SchedulerSettings.load().thresholds().as_dict()


def _save(changes: dict) -> dict:
    from rota.errors import InvalidInput
    from rota.models import SchedulerSettings

    row = SchedulerSettings.load()
    for key, value in changes.items():
        setattr(row, key, value)
    if row.heartbeat_ttl_seconds <= row.heartbeat_interval_seconds:
        raise InvalidInput(
            "heartbeat_ttl_seconds must be longer than heartbeat_interval_seconds",
            field="heartbeat_ttl_seconds",
        )
    row.save()
    return row.thresholds().as_dict()


@router.get("/settings")
async def get_settings_(request: HttpRequest):  # type: ignore[no-untyped-def]
    """The runtime thresholds (seed 001 §2.8)."""
    return await sql_writer().call(_load)


@router.patch("/settings", auth=ADMIN_AUTH)
async def patch_settings(request: HttpRequest, body: SettingsPatch):  # type: ignore[no-untyped-def]
    """Change thresholds; they apply live, no restart."""
    from rota.api.app import get_bus
    from rota.domain.workers import Thresholds
    from rota.leader.duties import publish_thresholds

    changes = body.dict(exclude_none=True)
    saved = await sql_writer().call(_save, changes)
    await publish_thresholds(await get_bus(), Thresholds.from_mapping(saved))
    await record(actor_of(request), "settings.update", "SchedulerSettings", **changes)
    return saved
