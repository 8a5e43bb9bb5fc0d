"""WSGI entry of the host project: ``gunicorn hostproject.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hostproject.settings")

application = get_wsgi_application()
