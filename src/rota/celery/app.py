"""The Celery app rota sends tasks through."""

from __future__ import annotations

import importlib
from typing import Any

from rota.conf import RotaSettings
from rota.errors import RotaError


def import_app(spec: str) -> Any:
    """``proj.celery:app`` (or ``proj.celery``, whose ``app`` or ``celery``
    attribute is taken, as ``celery -A`` does) as the Celery app it names."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RotaError(
            f"cannot import the Celery app module {module_name!r}: {exc}",
            hint="set ROTA_CELERY_APP to module:attribute, importable by this process",
        ) from None
    names = [attr] if attr else ["app", "celery"]
    for name in names:
        app = getattr(module, name, None)
        if app is not None:
            return app
    raise RotaError(
        f"{module_name!r} has no attribute {' or '.join(map(repr, names))}",
        hint="set ROTA_CELERY_APP to module:attribute",
    )


def load_app(settings: RotaSettings) -> Any:
    """The app of ``celery_app``, else one made from ``celery_broker_url`` and
    ``celery_result_backend``; None when neither is set."""
    if settings.celery_app:
        return import_app(settings.celery_app)
    if settings.celery_broker_url:
        from celery import Celery

        return Celery(
            "rota",
            broker=settings.celery_broker_url,
            backend=settings.celery_result_backend or None,
        )
    return None
