from __future__ import annotations

from django.contrib.staticfiles.views import serve
from django.urls import include, path, re_path

urlpatterns = [
    # `rota server` has no separate file server: the ops UI's static files are
    # served from the apps' static dirs (a host project serves its own).
    re_path(r"^static/(?P<path>.*)$", serve, {"insecure": True}),
    path("", include("rota.urls")),
]
