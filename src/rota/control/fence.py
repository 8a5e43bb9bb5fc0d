"""Epoch fencing of control calls. Pure: no gRPC here but the metadata shape."""

from __future__ import annotations

from collections.abc import Iterable

#: Metadata key carrying the caller's leader epoch.
EPOCH_KEY = "rota-epoch"
#: Start of the status detail of a refused call (FAILED_PRECONDITION).
STALE_EPOCH = "stale epoch"


def epoch_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> int:
    """The epoch a call carries; 0 when it carries none (not a leader's call)."""
    for key, value in metadata or ():
        if key == EPOCH_KEY:
            try:
                return int(value)
            except (TypeError, ValueError):
                return 0
    return 0


class EpochFence:
    """Remembers the highest leader epoch seen and refuses older ones.

    A call without an epoch (0) comes from the web server or the CLI, not a
    leader, and is admitted without changing anything."""

    def __init__(self) -> None:
        self.highest = 0

    def admit(self, epoch: int) -> bool:
        if epoch <= 0:
            return True
        if epoch < self.highest:
            return False
        self.highest = epoch
        return True
