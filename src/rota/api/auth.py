"""API authentication and authorization.

Who: ``Authorization: Bearer <token>`` or ``X-API-Key: <token>`` (seed 003's
header), checked against the SHA-256 stored in ApiToken, or a logged-in Django
session (the ops UI, or a host project's users) — with Django's CSRF check on
every unsafe method, as for any session-authenticated form.

What: the ops groups (seed 001 §3), ordinary Django groups a host can assign,
created by a migration. ``ops_view`` reads; ``ops_operator`` also operates
(submit, cancel, drain, detach, degrade, events, topics); ``ops_admin`` also
changes jobs, schedules and settings. Superusers may do everything. A token acts
as its user. Authenticated but not allowed → 403.

Token lookups are cached briefly so the hot path does not pay a query per
request; a revoked token stops working within the TTL.
"""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest
from ninja.security.base import AuthBase

from rota.errors import RotaError
from rota.models import ApiToken, hash_token

CACHE_SECONDS = 30.0
_cache: dict[str, tuple[Any, float]] = {}

VIEW, OPERATE, ADMIN = "view", "operate", "admin"
#: The groups that grant each level (a higher group grants the lower levels).
GROUPS = {
    VIEW: {"ops_view", "ops_operator", "ops_admin"},
    OPERATE: {"ops_operator", "ops_admin"},
    ADMIN: {"ops_admin"},
}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class Forbidden(RotaError):
    """Authenticated, but not in an ops group that allows this."""

    http_status = 403


def _lookup(raw: str) -> tuple[Any, frozenset[str]] | None:
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=hash_token(raw), revoked=False, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    return token.user, _groups_of(token.user)


def _groups_of(user: Any) -> frozenset[str]:
    return frozenset(user.groups.values_list("name", flat=True))


def _token_user(raw: str) -> tuple[Any, frozenset[str]] | None:
    digest = hash_token(raw)
    hit = _cache.get(digest)
    now = time.monotonic()
    if hit and hit[1] > now:
        return hit[0]
    found = _lookup(raw)
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[digest] = (found, now + CACHE_SECONDS)
    return found


def allowed(user: Any, groups: frozenset[str], level: str) -> bool:
    return bool(getattr(user, "is_superuser", False)) or bool(groups & GROUPS[level])


class OpsAuth(AuthBase):
    """Authenticate, then authorize for ``level`` (default: view for safe
    methods, operate for the others)."""

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __init__(self, level: str | None = None) -> None:
        super().__init__()
        self.level = level

    def __call__(self, request: HttpRequest) -> Any:
        # Before any lookup: PostgreSQL refuses NUL in text, so a NUL in a path
        # or query parameter would reach it as a 500 (issue 13).
        if "\x00" in request.path or any("\x00" in v for v in request.GET.values()):
            from rota.errors import InvalidInput

            raise InvalidInput("NUL characters are not allowed in a URL", field="path")
        header = request.headers.get("Authorization", "")
        raw = ""
        if header.lower().startswith("bearer "):
            raw = header[7:].strip()
        elif request.headers.get("X-API-Key"):
            raw = request.headers["X-API-Key"].strip()
        if raw:
            found = _token_user(raw)
            if found is None:
                return None
            user, groups = found
            # Who holds event streams (per-token cap): the token, never its text.
            request.rota_principal = "token:" + hash_token(raw)[:16]
        else:
            user = getattr(request, "user", None)
            if user is None or not user.is_authenticated:
                return None
            if request.method not in SAFE_METHODS:
                from ninja.utils import check_csrf

                if check_csrf(request) is not None:
                    raise Forbidden(
                        "CSRF check failed: send the csrftoken cookie's value as X-CSRFToken"
                    )
            groups = _groups_of(user)
        level = self.level or (VIEW if request.method in SAFE_METHODS else OPERATE)
        if not allowed(user, groups, level):
            raise Forbidden(
                f"{getattr(user, 'username', 'this user')} may not do this: it needs the ops_{level if level != 'operate' else 'operator'} group"
            )
        request.user = user
        return user


#: For endpoints that change jobs, schedules or settings.
ADMIN_AUTH = OpsAuth(ADMIN)


def wants_html(request: HttpRequest) -> bool:
    """A browser navigating (it asks for HTML first), not a script or a fetch."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept.split(",")[0]


def require_view(view):
    """Guard a plain Django view (the OpenAPI schema and docs) like an API read:
    /health is the only endpoint anyone may call. A browser without a session
    goes to the login page (``LOGIN_URL``) and comes back; a script without a
    token gets 401."""
    from functools import wraps

    from django.contrib.auth.views import redirect_to_login
    from django.http import JsonResponse

    guard = OpsAuth(VIEW)

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            user = guard(request)
        except Forbidden as exc:
            return JsonResponse({"detail": exc.message}, status=403)
        if user is None:
            if wants_html(request) and "Authorization" not in request.headers:
                return redirect_to_login(request.get_full_path())
            return JsonResponse({"detail": "Unauthorized"}, status=401)
        return view(request, *args, **kwargs)

    return wrapped
