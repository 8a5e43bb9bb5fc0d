"""Settings of the example host project: an ordinary Django project (as
``django-admin startproject`` makes it) that embeds rota.

What embedding takes is marked "rota:"; everything else is the host's own.
Deployment values come from the host's own environment variables (SHOP_*); rota
additionally reads ROTA_* variables, which override the ROTA dict below (secrets
belong there: see the NATS token).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "django-insecure-example-only-change-me")
DEBUG = os.environ.get("SHOP_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "shop",
    "rota",  # rota: its models, migrations, system checks and management commands
]

# The host's ordinary list. rota adds no middleware of its own.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hostproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Listed before the apps' templates: a file here overrides rota's.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "hostproject.wsgi.application"
ASGI_APPLICATION = "hostproject.asgi.application"

# The host's database; rota's tables are created in it by `manage.py migrate`.
# SQLite here: WAL and IMMEDIATE transactions let the web server and the worker
# write to the same file. PostgreSQL works the same way.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DB_PATH", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Log to the console, so `manage.py rota_worker` under a process manager says
# what it does (rota logs under the "rota" logger; nats-py is chatty at INFO).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("SHOP_LOG_LEVEL", "INFO")},
    "loggers": {"nats": {"level": "WARNING"}},
}

# rota: every key is optional (docs/embedding.md lists them with their defaults).
ROTA = {
    "nats_url": os.environ.get("SHOP_NATS_URL", "nats://127.0.0.1:4222"),
    # The NATS token is not set here: give it as ROTA_NATS_TOKEN or
    # ROTA_NATS_TOKEN_FILE, which rota removes from every job's environment.
    # Certificates of the worker's control plane: `manage.py rota_certs init --dir ...`.
    "tls_dir": os.environ.get("SHOP_TLS_DIR", str(BASE_DIR / "tls")),
    # Where rota's API is, for `manage.py rota_doctor`: the host's URL plus the prefix.
    "api_url": os.environ.get("SHOP_API_URL", "http://127.0.0.1:8000/jobs"),
    # One machine: the worker's control plane listens on loopback only.
    "grpc_host": "127.0.0.1",
}
if os.environ.get("SHOP_NODE_ID"):
    ROTA["node_id"] = os.environ["SHOP_NODE_ID"]  # default: the host name
if os.environ.get("SHOP_MANAGE_PY"):
    # Default: the manage.py the worker was started with (`python manage.py rota_worker`).
    ROTA["manage_py"] = os.environ["SHOP_MANAGE_PY"]
