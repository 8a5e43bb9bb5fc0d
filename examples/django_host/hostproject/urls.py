"""The host's URLs. rota's API lives under a prefix the host chooses: here
``/jobs/`` (so its endpoints are /jobs/health, /jobs/jobs, /jobs/runs, ...)."""

from django.contrib import admin
from django.urls import include, path
from shop import views

urlpatterns = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    path("jobs/", include("rota.urls")),
]
