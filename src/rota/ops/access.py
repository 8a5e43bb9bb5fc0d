"""Who may see and do what in the ops UI: the API's levels (rota.api.auth) on
Django's session login.

Every page needs a logged-in user in an ops group (or a superuser); every
operation needs the operator level, changes of jobs, schedules and settings the
admin level, exactly as the JSON API decides for the same user. The operations
the pages trigger are API calls (already authorized and audited there); the few
operations that live here (reassign, Ping, GetStatus) use the same check.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from rota.api.auth import ADMIN, OPERATE, VIEW, allowed


@dataclass(frozen=True)
class Access:
    """What the current user may do; templates show operation buttons by it."""

    username: str
    can_view: bool
    can_operate: bool
    can_admin: bool

    @property
    def role(self) -> str:
        if self.can_admin:
            return "ops_admin"
        if self.can_operate:
            return "ops_operator"
        return "ops_view" if self.can_view else ""


def access_of(user: Any) -> Access:
    """The levels of ``user`` (one query for its groups)."""
    if user is None or not user.is_authenticated:
        return Access("", False, False, False)
    groups = frozenset(user.groups.values_list("name", flat=True))
    return Access(
        user.get_username(),
        allowed(user, groups, VIEW),
        allowed(user, groups, OPERATE),
        allowed(user, groups, ADMIN),
    )


def _wants_json(request: HttpRequest) -> bool:
    return request.method not in ("GET", "HEAD") or "application/json" in request.headers.get(
        "Accept", ""
    )


def _refusal(request: HttpRequest, access: Access, level: str) -> HttpResponse | None:
    """None when ``access`` allows ``level``; else the response to send."""
    if not access.username:
        if _wants_json(request):
            return JsonResponse({"detail": "log in first"}, status=401)
        return redirect_to_login(request.get_full_path(), reverse("rota-ops:login"))
    ok = {VIEW: access.can_view, OPERATE: access.can_operate, ADMIN: access.can_admin}[level]
    if ok:
        return None
    group = {VIEW: "ops_view", OPERATE: "ops_operator", ADMIN: "ops_admin"}[level]
    message = f"{access.username} may not do this: it needs the {group} group"
    if _wants_json(request):
        return JsonResponse({"detail": message}, status=403)
    raise PermissionDenied(message)


def ops_required(level: str = VIEW, post_level: str = OPERATE):
    """Guard an ops view, sync or async: ``level`` for reads, ``post_level`` for
    any other method. Sets ``request.ops`` (an :class:`Access`)."""

    def decorate(view):
        def needed(request: HttpRequest) -> str:
            return level if request.method in ("GET", "HEAD") else post_level

        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapped(request, *args, **kwargs):
                user = await request.auser()
                request.user = user
                request.ops = await sync_to_async(access_of)(user)
                refused = _refusal(request, request.ops, needed(request))
                if refused is not None:
                    return refused
                return await view(request, *args, **kwargs)

            return async_wrapped

        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            request.ops = access_of(request.user)
            refused = _refusal(request, request.ops, needed(request))
            if refused is not None:
                return refused
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
