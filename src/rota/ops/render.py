"""Rendering an ops page: the shared context (access, navigation, the API's
root, the strings ops.js shows, the theme) and fragments for live refresh."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

#: (url name, label, section) of the navigation, in order.
NAV = (
    ("rota-ops:dashboard", gettext_lazy("Dashboard"), "dashboard"),
    ("rota-ops:jobs", gettext_lazy("Jobs"), "jobs"),
    ("rota-ops:schedules", gettext_lazy("Schedules"), "schedules"),
    ("rota-ops:runs", gettext_lazy("Runs"), "runs"),
    ("rota-ops:workers", gettext_lazy("Workers"), "workers"),
    ("rota-ops:leader", gettext_lazy("Leader"), "leader"),
    ("rota-ops:nats", gettext_lazy("NATS"), "nats"),
    ("rota-ops:events", gettext_lazy("Events"), "events"),
    ("rota-ops:dlq", gettext_lazy("DLQ"), "dlq"),
    ("rota-ops:settings", gettext_lazy("Settings"), "settings"),
    ("rota-ops:audit", gettext_lazy("Audit log"), "audit"),
)

THEME_COOKIE = "rota_ops_theme"


def js_strings() -> dict[str, str]:
    """Every string ops.js shows, translated for the request's language."""
    return {
        "ok": _("Done"),
        "failed": _("Failed"),
        "cancel": _("Cancel"),
        "confirm": _("Confirm"),
        "close": _("Close"),
        "saved": _("Saved"),
        "invalid_json": _("This is not valid JSON"),
        "network_error": _("The server could not be reached"),
        "unauthorized": _("Your session has ended; log in again"),
        "about": _("about {n}"),
        "more_than": _("more than {n}"),
        "info": _("Showing _START_ to _END_ of _TOTAL_ runs"),
        "info_empty": _("No runs"),
        "info_filtered": _("(filtered from _MAX_)"),
        "search": _("Search:"),
        "search_placeholder": _("run id, job or worker prefix"),
        "length_menu": _("_MENU_ per page"),
        "zero_records": _("No matching runs"),
        "loading": _("Loading..."),
        "processing": _("Loading..."),
        "first": _("First"),
        "last": _("Last"),
        "next": _("Next"),
        "previous": _("Previous"),
        "live_tail": _("live"),
        "tail_ended": _("ended"),
        "ping_ok": _("Ping answered"),
        "status_ok": _("Status received"),
    }


def api_root() -> str:
    """Where the JSON API is mounted (a host may include rota under a prefix)."""
    return reverse("rota-api:api-root")


def page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    section: str = "",
    fragment: str | None = None,
    status: int = 200,
) -> HttpResponse:
    """The page, or only its ``fragment`` template when ``?fragment=1`` (the
    live refresh of lists)."""
    ctx: dict[str, Any] = {
        "ops": getattr(request, "ops", None),
        "api_root": api_root(),
        "section": section,
        **(context or {}),
    }
    if fragment is not None and request.GET.get("fragment"):
        return render(request, fragment, ctx, status=status)
    ctx.update(
        nav=[(reverse(name), label, key) for name, label, key in NAV],
        js_strings=js_strings(),
        theme=request.COOKIES.get(THEME_COOKIE, "light"),
    )
    return render(request, template, ctx, status=status)
