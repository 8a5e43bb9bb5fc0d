"""``/docs``: Swagger UI from the ops UI's local assets (``rota assets``), never a CDN."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ninja.openapi.docs import Swagger


class LocalSwagger(Swagger):
    """django-ninja's Swagger page, loading swagger-ui-dist from
    ``rota_ops/vendor/swagger-ui/`` (installed from npm like Bootstrap)."""

    template = "rota_ops/swagger.html"

    def render_page(self, request: HttpRequest, api: Any, **kwargs: Any) -> HttpResponse:
        self.settings["url"] = self.get_openapi_url(api, kwargs)
        # The settings go into a <script type="application/json">: no "<" may end it.
        settings = json.dumps(self.settings).replace("<", "\\u003c")
        context = {"swagger_settings": settings, "api": api}
        return render(request, self.template, context)
