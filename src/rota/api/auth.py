"""API authentication: ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``
(seed 003's header), checked against the SHA-256 stored in ApiToken; a logged-in
session (the ops UI) is accepted too. Lookups are cached briefly so the hot path
does not pay a query per request; a revoked token stops working within the TTL."""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest
from ninja.security.base import AuthBase

from rota.models import ApiToken, hash_token

CACHE_SECONDS = 30.0
_cache: dict[str, tuple[Any, float]] = {}


def _user_for(raw: str):  # type: ignore[no-untyped-def]
    digest = hash_token(raw)
    hit = _cache.get(digest)
    now = time.monotonic()
    if hit and hit[1] > now:
        return hit[0]
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=digest, revoked=False, user__is_active=True)
        .first()
    )
    user = token.user if token else None
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[digest] = (user, now + CACHE_SECONDS)
    return user


class TokenOrSession(AuthBase):
    openapi_type = "http"
    openapi_scheme = "bearer"

    def __call__(self, request: HttpRequest) -> Any:
        header = request.headers.get("Authorization", "")
        raw = ""
        if header.lower().startswith("bearer "):
            raw = header[7:].strip()
        elif request.headers.get("X-API-Key"):
            raw = request.headers["X-API-Key"].strip()
        if raw:
            user = _user_for(raw)
            if user is not None:
                request.user = user
                return user
            return None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return user
        return None
