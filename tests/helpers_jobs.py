"""Callables for the python executor's tests: children import them by name."""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def noop() -> None:
    return None


def add(a: int, b: int) -> int:
    return a + b


def boom() -> None:
    raise ValueError("bad")


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def exit_hard(code: int) -> None:
    os._exit(code)


def echo_print(msg: str) -> str:
    print(msg)
    print(f"err: {msg}", file=sys.stderr)
    return msg


def not_json() -> Any:
    return {1, 2, 3}


def pid() -> int:
    return os.getpid()


def env(name: str) -> str | None:
    return os.environ.get(name)


async def async_add(a: int, b: int) -> int:
    return a + b


#: A module global the fresh_process test mutates; a pooled child would keep it.
COUNTER = {"n": 0}


def bump() -> int:
    COUNTER["n"] += 1
    return COUNTER["n"]


NOT_CALLABLE = 42


def chatty(pause: float = 0.8) -> str:
    """Writes a line to each stream, pauses, writes another line: for the live tail."""
    print("first", flush=True)
    print("oops", file=sys.stderr)
    time.sleep(pause)
    print("second")
    return "done"


def fork_and_shout(chars: int = 70_000) -> str:
    """Forks a process that prints ``chars`` characters (more than a live chunk)
    and waits for it: the fork's output is its own, not the run's."""
    print("parent line", flush=True)
    pid = os.fork()
    if pid == 0:
        try:
            print("x" * chars)
            sys.stdout.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return "forked"
