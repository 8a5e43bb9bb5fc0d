"""Strict request bodies for the HTTP API (issue 13): what a body may hold and
how a refusal reads.

- A field a body's schema does not know is a 422 naming it, with the closest
  known name when there is one (``unknown field 'timout'; did you mean
  'timeout'?``), not silently dropped (:class:`rota.api.schemas.StrictSchema`
  forbids it; :meth:`RotaAPI.validation_error_from_error_contexts` words it).
- A body is JSON as RFC 8259 has it: ``NaN`` and ``Infinity`` are refused (a
  float that no JSON encoder can write back); a NUL character anywhere in it
  is refused (PostgreSQL stores none, and a C program's argument ends at one).
- A body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413 with a JSON ``detail``;
  a broken multipart body (``POST /runs/yaml``) a 400 with one.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError, ValidationErrorContext
from ninja.parser import Parser
from pydantic import BaseModel

from rota.api.docs import LocalSwagger
from rota.domain.params import nul_free
from rota.errors import InvalidInput, RotaError, TooLarge


def _refuse_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not JSON: send a finite number (or null)", field="body")


def loads_strict(raw: bytes) -> Any:
    """``raw`` as JSON, refusing NaN/Infinity and NUL characters (InvalidInput);
    ValueError when it is not JSON at all."""
    data = json.loads(raw, parse_constant=_refuse_constant)
    nul_free(data, "body")
    return data


def body_of(request: HttpRequest) -> bytes:
    """``request.body``; TooLarge (413) past ``DATA_UPLOAD_MAX_MEMORY_SIZE``."""
    try:
        return request.body
    except RequestDataTooBig:
        raise TooLarge(
            f"the request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"
        ) from None


class StrictJsonParser(Parser):
    """JSON bodies without NaN/Infinity and without NUL characters."""

    def parse_body(self, request: HttpRequest) -> Any:
        return loads_strict(request.body)


def _known_fields(model: Any, path: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model that ``path`` leads into."""
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            if isinstance(part, int):  # an item of a list: keep the model
                continue
            return []
        model = _model_in(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None`` or ``list[X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def field_path(parts: list[Any]) -> str:
    """``["args", 0, "name"]`` → ``args[0].name``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class RotaAPI(NinjaAPI):
    """NinjaAPI with rota's strict bodies (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser", StrictJsonParser())
        kwargs.setdefault("docs", LocalSwagger())
        super().__init__(*args, **kwargs)
        # ninja types a handler's second argument as "the exception or its class";
        # it only ever passes the instance.
        self.add_exception_handler(RequestDataTooBig, self._too_big)  # type: ignore[arg-type]
        self.add_exception_handler(MultiPartParserError, self._bad_form)  # type: ignore[arg-type]
        self.add_exception_handler(HttpError, self._http_error)  # type: ignore[arg-type]

    def validation_error_from_error_contexts(
        self, error_contexts: list[ValidationErrorContext]
    ) -> ValidationError:
        """Each error's ``loc`` as the request was written (``["body", "kind"]``:
        ninja adds the view's parameter name, ``["body", "body", "kind"]``), a
        ``field`` in the form rota's own 422s use (``args[0]``, ``structured.n``),
        and an unknown field named with the closest known one."""
        errors = []
        for context in error_contexts:
            wrapper = getattr(context.model, "__read_from_single_attr__", None)
            for e in super().validation_error_from_error_contexts([context]).errors:
                loc = list(e["loc"])
                if e.get("type") == "extra_forbidden":
                    name = str(loc[-1])
                    known = _known_fields(context.model, tuple(loc[1:-1]))
                    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                    e["msg"] = f"unknown field {name!r}" + (
                        f"; did you mean {close[0]!r}?" if close else ""
                    )
                if wrapper and len(loc) > 1 and loc[1] == wrapper:
                    del loc[1]
                errors.append({**e, "loc": loc, "field": field_path(loc[1:])})
        return ValidationError(errors)

    def _too_big(self, request: HttpRequest, exc: Exception) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return self.create_response(
            request, {"detail": f"the request body is larger than {limit} bytes"}, status=413
        )

    def _bad_form(self, request: HttpRequest, exc: Exception) -> HttpResponse:
        return self.create_response(
            request,
            {"detail": f"the request body is not valid multipart/form-data: {exc}"},
            status=400,
        )

    def _http_error(self, request: HttpRequest, exc: HttpError) -> HttpResponse:
        # ninja turns whatever the parser raises into "Cannot parse request body"
        # (400); say what was wrong instead.
        cause = exc.__cause__
        if isinstance(cause, RotaError):
            return self.create_response(request, cause.http_body(), status=cause.http_status)
        if isinstance(cause, RequestDataTooBig):
            return self._too_big(request, cause)
        if exc.status_code == 400 and isinstance(cause, json.JSONDecodeError):
            return self.create_response(
                request,
                {
                    "detail": f"the request body is not valid JSON: {cause.msg} "
                    f"at line {cause.lineno}, column {cause.colno}",
                    "line": cause.lineno,
                    "column": cause.colno,
                },
                status=400,
            )
        if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
            return self.create_response(
                request,
                {"detail": f"the request body is not UTF-8 text (byte {cause.start})"},
                status=400,
            )
        if isinstance(cause, ValueError) and exc.status_code == 400:
            return self.create_response(
                request, {"detail": f"the request body is not JSON: {cause}"}, status=400
            )
        return self.create_response(request, {"detail": str(exc)}, status=exc.status_code)
