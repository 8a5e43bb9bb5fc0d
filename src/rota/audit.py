"""The audit log: every operator action writes one AdminActionLog row."""

from __future__ import annotations

from typing import Any

from rota.runs.sqlwriter import sql_writer


def _write(actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
    from rota.models import AdminActionLog

    AdminActionLog.objects.create(actor=actor, action=action, target=target, detail_json=detail)


async def record(actor: str, action: str, target: str = "", /, **detail: Any) -> None:
    await sql_writer().call(_write, actor, action, target, detail)


def actor_of(request: Any) -> str:
    user = getattr(request, "auth", None) or getattr(request, "user", None)
    return getattr(user, "username", "") or "anonymous"
