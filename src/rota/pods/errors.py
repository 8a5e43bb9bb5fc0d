"""The errors of rota's pods and topics. Each says whether a retry can help."""

from __future__ import annotations

from rota.errors import InvalidInput, NotFound, RotaError


class PodError(RotaError):
    """Base of every pods/topics error."""


class PodConfigError(PodError):
    """A pods config file rota cannot use. Names the file, the task and the key,
    so the message alone points at the line to fix."""

    def __init__(self, message: str, *, file: str = "", task: str = "", key: str = "") -> None:
        where = [p for p in (file, f"task {task!r}" if task else "", key) if p]
        super().__init__(": ".join([*where, message]))
        self.file = file
        self.task = task
        self.key = key
        self.reason = message


class InvalidTopic(PodError, InvalidInput):
    """A topic name that can never be published (empty, a line break, too long)."""


class NoSubscribers(PodError, NotFound):
    """Nothing subscribes to the topic: no pod task on any host will answer."""


class ResultTimeout(PodError):
    """No ``.result`` arrived in time. The request may still be queued or running."""

    retryable = True


class PodStartError(PodError):
    """A pod's command could not be started (missing, not executable, bad
    working directory). The replica set keeps retrying with backoff."""

    retryable = True
