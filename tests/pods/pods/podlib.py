"""What the test pods share: read frames from stdin (fd 0, unbuffered, so a
pod can tell whether the host wrote to it while it was busy) and print lines."""

from __future__ import annotations

import os
import select
from typing import TextIO


def quote(topic: str) -> str:
    return '"' + topic.replace("\\", "\\\\").replace('"', '\\"') + '"'


IDLE = '"system.idle":'


def out(*lines: str) -> None:
    """Print ``lines`` in one write (one pipe write: the host sees them together)."""
    os.write(1, "".join(line + "\n" for line in lines).encode())


class Stdin:
    def __init__(self) -> None:
        self.buf = b""

    def _fill(self) -> None:
        data = os.read(0, 65536)
        if not data:
            raise EOFError
        self.buf += data

    def line(self) -> str:
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def frame(self) -> tuple[str, list[str]]:
        topic = self.line()
        n = int(self.line())
        return topic, [self.line() for _ in range(n)]

    def written_while_busy(self) -> bool:
        """True if the host sent something before this pod said it is idle."""
        if self.buf:
            return True
        if not select.select([0], [], [], 0)[0]:
            return False
        data = os.read(0, 65536)
        if not data:
            raise EOFError  # the host closed stdin: shutting down, not a violation
        self.buf += data
        return True


def open_log(pod_id: str) -> TextIO | None:
    """POD_LOG_DIR/<pod_id>.log, line-buffered, open for the pod's whole life."""
    log_dir = os.environ.get("POD_LOG_DIR")
    if not log_dir:
        return None
    return open(os.path.join(log_dir, pod_id + ".log"), "a", buffering=1)  # noqa: SIM115
