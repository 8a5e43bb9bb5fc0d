"""rota's URLs. A host project includes them under a prefix of its choosing:
``path("jobs/", include("rota.urls"))``."""

from __future__ import annotations

from django.urls import path

from rota.api.app import api

urlpatterns = [path("", api.urls)]
