"""Executors run one run's work and return an :class:`Outcome`.

The registry maps a job kind to the executor instance the worker uses for it.
"""

from __future__ import annotations

from rota.worker.executors.base import Executor, Outcome

__all__ = ["Executor", "Outcome"]
