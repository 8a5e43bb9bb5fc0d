"""The Django project ``rota up`` and ``rota server`` run: settings, URLs, ASGI."""
