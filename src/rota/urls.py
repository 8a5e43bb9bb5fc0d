"""rota's URLs. A host project includes them under a prefix of its choosing:
``path("jobs/", include("rota.urls"))``."""

from __future__ import annotations

from django.urls import include, path

from rota.api.app import api

urlpatterns = [path("ops/", include("rota.ops.urls")), path("", api.urls)]
