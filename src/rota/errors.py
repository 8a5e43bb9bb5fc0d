"""rota's error hierarchy. Errors carry a hint for the operator and say whether a
retry can help."""

from __future__ import annotations


class RotaError(Exception):
    retryable = False

    def __init__(self, message: str, *, hint: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NotFound(RotaError):
    pass


class Conflict(RotaError):
    pass


class InvalidInput(RotaError):
    """Input that can never succeed as given; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.field = field


class BackendUnavailable(RotaError):
    retryable = True
