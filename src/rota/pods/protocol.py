"""MiclowStdIO, the line protocol between rota and a pod. Pure: bytes in, events
or bytes out; no I/O (tested by feeding bytes, like nats.py's protocol parser).

Pod → system (the pod's stdout; stderr is parsed the same way)
    ``"topic": value``    publishes ``value``, trimmed. Inside the quotes ``\\"``
                          is a quote and ``\\\\`` a backslash (a backslash escapes
                          whatever follows it). Spaces around the colon are fine.
    ``"topic"::``         (the whole line) opens a block; every following line is
                          kept as it is, newline included, until a line that is
                          exactly ``::"topic"`` with the same topic. The block's
                          lines are published as one message. A block still open
                          when the stream ends is published as it is.
    anything else         a plain line: the host publishes it on the task's stdout
                          (stderr) topic. A line that starts with a space or a tab
                          is always plain.

System → pod (the pod's stdin), one frame per message::

    <topic>\\n<N>\\n<line 1>\\n...<line N>\\n

where the lines are the data split at ``\\n`` (a trailing newline does not make an
extra empty line; a ``\\r`` before the ``\\n`` is dropped). Empty data is ``N = 0``.

System commands are topics under ``system.``: :data:`IDLE`, :data:`PULL`; any
other gets :func:`unknown_command_reply`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rota.pods.errors import InvalidTopic

SYSTEM_PREFIX = "system."
#: "I am ready for the next message." A pod starts busy and receives nothing
#: until it publishes this; every delivery makes it busy again.
IDLE = "system.idle"
#: ``"system.pull": T`` asks for the latest message published on topic T.
PULL = "system.pull"
#: A message on topic T is answered by publishing on ``T + RESULT_SUFFIX``.
RESULT_SUFFIX = ".result"

#: Longest topic name, in characters (its subject must fit a NATS control line).
MAX_TOPIC_LENGTH = 1024
#: A line longer than this (bytes, without its newline) is cut here and handled
#: as if it ended: a pod that never prints a newline must not exhaust memory.
MAX_LINE_BYTES = 4 * 1024 * 1024
#: A block that grows beyond this many bytes is published as it stands and
#: closed; what follows is read as plain lines again.
MAX_BLOCK_BYTES = 8 * 1024 * 1024


# -- what a line is ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SingleLine:
    topic: str
    value: str


@dataclass(frozen=True, slots=True)
class BlockStart:
    topic: str


@dataclass(frozen=True, slots=True)
class BlockEnd:
    topic: str


LineKind = SingleLine | BlockStart | BlockEnd


def _quoted(text: str, start: int) -> tuple[str, int] | None:
    """The topic quoted at ``text[start]`` (a ``"``) and the index after its
    closing quote; ``None`` when unterminated or empty."""
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                return None
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return ("".join(out), i + 1) if out else None
        out.append(c)
        i += 1
    return None


def parse_line(line: str) -> LineKind | None:
    """Classify one line (without its line break). ``None``: a plain line."""
    if not line:
        return None
    first = line[0]
    if first == '"':
        quoted = _quoted(line, 0)
        if quoted is None:
            return None
        topic, end = quoted
        rest = line[end:]
        if rest == "::":
            return BlockStart(topic)
        rest = rest.lstrip()
        if rest.startswith(":"):
            return SingleLine(topic, rest[1:].strip())
        return None
    if first == ":" and line.startswith('::"'):
        quoted = _quoted(line, 2)
        if quoted is not None and quoted[1] == len(line):
            return BlockEnd(quoted[0])
    return None


# -- the stream parser --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """The pod published ``data`` on ``topic``."""

    topic: str
    data: str


@dataclass(frozen=True, slots=True)
class Plain:
    """A line that is not protocol: it goes to the task's stdout/stderr topic."""

    text: str


Event = Message | Plain


class LineParser:
    """Turns one output stream of a pod into :class:`Message` and :class:`Plain`
    events. Feed it bytes as they arrive, in any chunks; call :meth:`close` at
    end of stream. One parser per stream: stdout and stderr keep separate blocks.
    """

    __slots__ = ("_partial", "_block_topic", "_block", "_block_size", "max_line", "max_block")

    def __init__(self, *, max_line: int = MAX_LINE_BYTES, max_block: int = MAX_BLOCK_BYTES) -> None:
        self.max_line = max_line
        self.max_block = max_block
        self._partial = b""
        self._block_topic: str | None = None
        self._block: list[str] = []
        self._block_size = 0

    @property
    def in_block(self) -> bool:
        return self._block_topic is not None

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        if self._partial:
            data = self._partial + data
        parts = data.split(b"\n")
        tail = parts.pop()
        for raw in parts:
            self._line(raw, True, out)
        while len(tail) > self.max_line:
            self._line(tail[: self.max_line], False, out)
            tail = tail[self.max_line :]
        self._partial = tail
        return out

    def close(self) -> list[Event]:
        """End of stream: the last unterminated line, then any open block."""
        out: list[Event] = []
        if self._partial:
            tail, self._partial = self._partial, b""
            self._line(tail, False, out)
        if self._block_topic is not None:
            out.append(self._finish())
        return out

    def _line(self, raw: bytes, newline: bool, out: list[Event]) -> None:
        text = raw.decode("utf-8", "replace")
        bare = text[:-1] if text.endswith("\r") else text
        if self._block_topic is not None:
            kind = parse_line(bare) if bare.startswith("::") else None
            if isinstance(kind, BlockEnd) and kind.topic == self._block_topic:
                out.append(self._finish())
                return
            # Kept raw: "publishes the lines in between with their newlines".
            self._block.append(text + "\n" if newline else text)
            self._block_size += len(raw) + newline
            if self._block_size > self.max_block:
                out.append(self._finish())
            return
        kind = parse_line(bare)
        if kind is None or isinstance(kind, BlockEnd):
            out.append(Plain(bare))
        elif isinstance(kind, SingleLine):
            out.append(Message(kind.topic, kind.value))
        else:
            self._block_topic = kind.topic
            self._block = []
            self._block_size = 0

    def _finish(self) -> Message:
        assert self._block_topic is not None
        msg = Message(self._block_topic, "".join(self._block))
        self._block_topic, self._block, self._block_size = None, [], 0
        return msg


# -- encoders ---------------------------------------------------------------------


def check_topic(topic: str) -> str:
    """``topic`` if it can be published; else :class:`InvalidTopic`."""
    if not isinstance(topic, str) or not topic:
        raise InvalidTopic("a topic must be a non-empty string", field="topic")
    if "\n" in topic or "\r" in topic:
        raise InvalidTopic(f"topic {topic!r} contains a line break", field="topic")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidTopic(
            f"topic is {len(topic)} characters long; at most {MAX_TOPIC_LENGTH}", field="topic"
        )
    return topic


def quote_topic(topic: str) -> str:
    """``topic`` in quotes, escaped so that :func:`parse_line` reads it back."""
    return '"' + topic.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_publish(topic: str, data: str) -> bytes:
    """What a pod prints to publish ``data`` on ``topic``: one line when ``data``
    is one line without surrounding blanks, else a block. A block's data is read
    back with a final newline (a block's lines keep theirs)."""
    check_topic(topic)
    if "\n" not in data and "\r" not in data and data == data.strip():
        return f"{quote_topic(topic)}: {data}\n".encode()
    end = f"::{quote_topic(topic)}"
    body = data if data.endswith("\n") else data + "\n"
    if any(line.rstrip("\r") == end for line in body.split("\n")):
        raise ValueError(f"data contains the block's end line {end!r}")
    return f"{quote_topic(topic)}::\n{body}{end}\n".encode()


def frame_lines(data: str) -> list[str]:
    """The lines of ``data`` as a frame carries them (see the module docstring)."""
    if not data:
        return []
    lines = data.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def encode_frame(topic: str, data: str) -> bytes:
    """The frame that delivers ``data`` on ``topic`` to a pod's stdin."""
    lines = frame_lines(data)
    head = f"{topic}\n{len(lines)}\n"
    if not lines:
        return head.encode()
    return (head + "\n".join(lines) + "\n").encode()


def system_reply(command: str, status: str, data: str) -> bytes:
    """A status reply: the command's topic, then ``success``/``error``, then data."""
    return encode_frame(command, f"{status}\n{data}" if data else status)


def pull_reply(topic: str, latest: str | None) -> bytes:
    """The answer to ``"system.pull": topic``."""
    if latest is None:
        return system_reply(PULL, "error", f"No message found for topic '{topic}'")
    return system_reply(PULL, "success", latest)


def unknown_command_reply(command: str) -> bytes:
    """The answer to an unknown ``system.X``."""
    return encode_frame(command + RESULT_SUFFIX, "Unknown Command")


def is_result(topic: str) -> bool:
    return topic.endswith(RESULT_SUFFIX) and len(topic) > len(RESULT_SUFFIX)


def request_topic(result_topic: str) -> str:
    """``T.result`` → ``T``."""
    return result_topic[: -len(RESULT_SUFFIX)]


# -- the pod's side, for pods written in Python and for tests ------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    topic: str
    lines: tuple[str, ...]

    @property
    def data(self) -> str:
        return "\n".join(self.lines)


class FrameDecoder:
    """Reads the frames of :func:`encode_frame` back (what a pod does with its stdin)."""

    __slots__ = ("_buf", "_topic", "_count", "_lines")

    def __init__(self) -> None:
        self._buf = b""
        self._topic: str | None = None
        self._count = -1
        self._lines: list[str] = []

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        parts = (self._buf + data).split(b"\n")
        self._buf = parts.pop()
        for raw in parts:
            line = raw.decode("utf-8", "replace")
            if self._topic is None:
                self._topic = line
            elif self._count < 0:
                self._count = int(line)
            else:
                self._lines.append(line)
            if self._topic is not None and len(self._lines) == self._count:
                out.append(Frame(self._topic, tuple(self._lines)))
                self._topic, self._count, self._lines = None, -1, []
        return out
