"""Browser hardening of the ops UI and /docs (issue 13).

:class:`ContentSecurityPolicyMiddleware` gives every HTML response a
Content-Security-Policy: scripts only from this origin's files (the pages have
no inline script and no inline event handler; data for scripts travels in
``<script type="application/json">`` blocks, which are not executed), no
plugins, no framing, forms and fetches only to this origin. Styles allow
inline ``style`` attributes: Bootstrap, DataTables and Swagger UI set them, and
CSS cannot run code.

Failed logins are audited (:func:`audit_failed_login`, connected in
``rota.apps``); throttling them is django-axes' job (see the standalone settings).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _with_csp(response: Any) -> Any:
    if response.get("Content-Type", "").startswith("text/html"):
        response.headers.setdefault("Content-Security-Policy", CSP)
    return response


class ContentSecurityPolicyMiddleware:
    """Add :data:`CSP` to HTML responses that have none (sync and async)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return _with_csp(self.get_response(request))

    async def __acall__(self, request: Any) -> Any:
        return _with_csp(await self.get_response(request))


def client_address(request: Any) -> str:
    return (getattr(request, "META", None) or {}).get("REMOTE_ADDR", "") if request else ""


def audit_failed_login(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    """``user_login_failed`` receiver: one audit row per failed login, with the
    user name tried and the address; never the password (Django has already
    masked it in ``credentials``, and it is not read here)."""
    from rota.models import AdminActionLog

    username = str(credentials.get("username", ""))[:300]
    AdminActionLog.objects.create(
        actor=username[:150] or "anonymous",
        action="login.failed",
        target=username,
        detail_json={"address": client_address(request)},
    )
