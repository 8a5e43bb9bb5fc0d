"""URLs of the ops UI, included by ``rota.urls`` under ``ops/``. Every name is in
the ``rota-ops`` namespace; templates and scripts reverse them, never hard-code."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.i18n import set_language

from rota.ops import nats, pages, runs, workers

app_name = "rota-ops"

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="rota_ops/login.html",
            redirect_authenticated_user=True,
            next_page="rota-ops:dashboard",
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="rota-ops:login"), name="logout"),
    path("language/", set_language, name="set-language"),
    path("", pages.dashboard, name="dashboard"),
    path("jobs/", pages.jobs_page, name="jobs"),
    path("jobs/<str:name>/run", pages.job_run_now, name="job-run"),
    path("schedules/", pages.schedules_page, name="schedules"),
    path("runs/", runs.runs_page, name="runs"),
    path("runs/data", runs.runs_data, name="runs-data"),
    path("runs/<str:run_id>/", runs.run_page, name="run"),
    path("runs/<str:run_id>/reassign", runs.reassign, name="run-reassign"),
    path("workers/", workers.workers_page, name="workers"),
    path("workers/<str:worker_id>/", workers.worker_page, name="worker"),
    path("workers/<str:worker_id>/ping", workers.worker_ping, name="worker-ping"),
    path("workers/<str:worker_id>/status", workers.worker_status, name="worker-status"),
    path("leader/", workers.leader_page, name="leader"),
    path("nats/", nats.nats_page, name="nats"),
    path("settings/", pages.settings_page, name="settings"),
    path("audit/", pages.audit_page, name="audit"),
    path("events/", pages.events_page, name="events"),
    path("dlq/", pages.dlq_page, name="dlq"),
]
