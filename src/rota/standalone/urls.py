from __future__ import annotations

from django.contrib.staticfiles.views import serve
from django.urls import include, path, re_path
from django.views.generic import RedirectView

urlpatterns = [
    # The address `rota up` prints: people land on the ops UI (its login first).
    path("", RedirectView.as_view(pattern_name="rota-ops:dashboard"), name="rota-root"),
    # `rota server` has no separate file server: the ops UI's static files are
    # served from the apps' static dirs (a host project serves its own).
    re_path(r"^static/(?P<path>.*)$", serve, {"insecure": True}),
    path("", include("rota.urls")),
]
