"""rota's errors as the ops endpoints answer them: ``{"detail": ...}`` with the
status the JSON API uses for the same error."""

from __future__ import annotations

from django.http import JsonResponse

from rota.errors import BackendUnavailable, Conflict, InvalidInput, NotFound, RotaError


def error_response(exc: RotaError) -> JsonResponse:
    status = 400
    if isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, Conflict):
        status = 409
    elif isinstance(exc, InvalidInput):
        status = 422
    elif isinstance(exc, BackendUnavailable):
        status = 503
    return JsonResponse({"detail": exc.message}, status=status)
