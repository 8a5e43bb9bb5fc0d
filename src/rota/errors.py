"""rota's error hierarchy. Errors carry a hint for the operator and say whether a
retry can help."""

from __future__ import annotations


class RotaError(Exception):
    retryable = False
    #: The HTTP status the API and the ops UI answer it with (``{"detail": ...}``).
    http_status = 500

    def __init__(self, message: str, *, hint: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def http_body(self) -> dict[str, str]:
        return {"detail": self.message}


class NotFound(RotaError):
    http_status = 404


class Conflict(RotaError):
    http_status = 409


class InvalidInput(RotaError):
    """Input that can never succeed as given; ``field`` names the culprit."""

    http_status = 422

    def __init__(self, message: str, *, field: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.field = field

    def http_body(self) -> dict[str, str]:
        return {"detail": self.message, "field": self.field}


class TooLarge(RotaError):
    """A request body over the size limit."""

    http_status = 413


class BackendUnavailable(RotaError):
    retryable = True
    http_status = 503

    def http_body(self) -> dict[str, str]:
        return {"detail": str(self)}  # the hint says what to check
