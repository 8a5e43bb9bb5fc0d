"""rota's errors as the ops endpoints answer them: ``{"detail": ...}`` with the
status the JSON API uses for the same error."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse

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


def json_object(request: HttpRequest) -> dict[str, Any]:
    """The JSON object an ops POST sends (an empty body is ``{}``)."""
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise InvalidInput("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body
