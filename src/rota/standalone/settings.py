"""Settings of the standalone rota server. Everything comes from ``ROTA_*``
variables so the same image runs anywhere; embedders use their own settings and
add ``"rota"`` to INSTALLED_APPS instead (docs/embedding.md)."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url

DATA_DIR = Path(os.environ.get("ROTA_DATA_DIR", ".rota")).resolve()


def _secret_key() -> str:
    if os.environ.get("ROTA_SECRET_KEY"):
        return os.environ["ROTA_SECRET_KEY"]
    path = Path(os.environ.get("ROTA_SECRET_KEY_FILE") or DATA_DIR / "secret_key")
    try:
        return path.read_text().strip()
    except OSError:
        # Not persisted here: `rota up` writes one on first start.
        return "rota-ephemeral-" + secrets.token_urlsafe(32)


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("ROTA_DEBUG", "") == "1"
ALLOWED_HOSTS = [h for h in os.environ.get("ROTA_ALLOWED_HOSTS", "*").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Login throttling of the ops UI (issue 13): failures counted per user and
    # per address in the database, so every web process sees the same counts.
    "axes",
    "rota",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "rota.ops.security.ContentSecurityPolicyMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into a 429.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
#: A user name, or an address, with this many failed logins in a row is locked
#: out for AXES_COOLOFF_TIME (a success before that resets the count).
AXES_FAILURE_LIMIT = int(os.environ.get("ROTA_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("ROTA_LOGIN_LOCKOUT_MINUTES", "15")))
#: Each its own lock: per user name (from any address) and per address (any name).
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
#: Addresses are REMOTE_ADDR; behind a proxy, set AXES_IPWARE_* (django-axes docs).
AXES_HTTP_RESPONSE_CODE = 429

ROOT_URLCONF = "rota.standalone.urls"
ASGI_APPLICATION = "rota.standalone.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ]
        },
    }
]


def database_config(url: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=600))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside the one writer; IMMEDIATE takes the write
        # lock at BEGIN so concurrent writers queue instead of failing to upgrade.
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    return config


DATABASES = {
    "default": database_config(
        os.environ.get("ROTA_DATABASE_URL") or f"sqlite:///{DATA_DIR / 'rota.sqlite3'}"
    )
}
if "ROTA_TEST_DATABASE_NAME" in os.environ:
    DATABASES["default"]["TEST"] = {"NAME": os.environ["ROTA_TEST_DATABASE_NAME"]}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ja", "日本語")]
USE_I18N = True
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
LOGIN_URL = "/ops/login/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("ROTA_LOG_LEVEL", "INFO")},
    "loggers": {"nats": {"level": "WARNING"}, "django.db.backends": {"level": "WARNING"}},
}

ROTA: dict = {}
