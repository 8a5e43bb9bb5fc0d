"""Small job targets for walkthroughs, smoke tests and benchmarks
(``--kind python --target rota.contrib.examples:add``)."""

from __future__ import annotations

import time


def noop() -> None:
    """Does nothing: measures the cost of the run path itself."""


def add(a: float, b: float) -> float:
    return a + b


def sleep(seconds: float = 1.0) -> float:
    time.sleep(seconds)
    return seconds
