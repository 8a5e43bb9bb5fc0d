"""ASGI entry of ``rota server``.

Two Django handlers share one project: paths of the ops UI (sessions, CSRF,
messages, languages), and API calls that carry no token (a browser calling the
API with its session: the ops UI's own pages do), go through the full middleware
list; API calls with a token go through none. A token authenticates the call by
itself, and each of Django's sync middleware costs two thread hops per request
under ASGI: without them a POST /runs spends a fraction of the CPU.
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rota.standalone.settings")
django.setup(set_prefix=False)

#: Paths served with the full middleware list (everything a browser session uses).
BROWSER_PREFIXES = ("/ops", "/static", "/docs", "/openapi.json")


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler without middleware."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        get_response = self._get_response_async if is_async else self._get_response
        self._middleware_chain = convert_exception_to_response(get_response)


browser_app = ASGIHandler()
api_app = ApiASGIHandler()


#: Request headers that authenticate an API call without a session.
TOKEN_HEADERS = (b"authorization", b"x-api-key")


def _has_token(scope) -> bool:
    return any(name in TOKEN_HEADERS for name, _ in scope.get("headers", ()))


async def application(scope, receive, send):
    if (
        scope["type"] == "http"
        and not scope["path"].startswith(BROWSER_PREFIXES)
        and _has_token(scope)
    ):
        await api_app(scope, receive, send)
    else:
        await browser_app(scope, receive, send)
