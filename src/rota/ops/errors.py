"""rota's errors as the ops endpoints answer them: the body and status the JSON
API answers (``RotaError.http_status``, ``http_body``)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from rota.errors import InvalidInput, RotaError


def error_response(exc: RotaError) -> JsonResponse:
    return JsonResponse(exc.http_body(), status=exc.http_status)


def json_object(request: HttpRequest) -> dict[str, Any]:
    """The JSON object an ops POST sends (an empty body is ``{}``)."""
    from rota.api.strict import body_of, loads_strict

    try:
        body = loads_strict(body_of(request) or b"{}")
    except ValueError:
        raise InvalidInput("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body
