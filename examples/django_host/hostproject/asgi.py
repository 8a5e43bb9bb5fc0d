"""ASGI entry of the host project: ``uvicorn hostproject.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hostproject.settings")

application = get_asgi_application()
