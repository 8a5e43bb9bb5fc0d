"""Every NATS name the pods subsystem uses, in one place; docs/pods.md documents
each one. Pure.

Topics map to subjects under :data:`TOPIC_PREFIX`. A topic's dots stay token
separators (so ``rota.topic.work.>`` watches every topic under ``work.``); inside
each dot-separated part, every byte other than ASCII letters, digits, ``-`` and
``_`` is written ``=XX`` (two upper-case hex digits of its UTF-8 byte), and an
empty part is ``=``. So ``work.queue`` → ``rota.topic.work.queue``, ``a b.c`` →
``rota.topic.a=20b.c``, ``x..y`` → ``rota.topic.x.=.y``. The mapping is one to
one, never produces wildcards, and is also a valid KV key.

Subjects
  rota.topic.<topic>                    messages of a topic. Reply subject: where a
                                        ``.result`` goes (a pod's, below, or a
                                        client's ``_INBOX``).
  rota.pods.reply.<host>.<task>.<pod_id>
                                        ``.result`` replies for one pod instance; as
                                        the reply subject of what a pod publishes it
                                        also names the publishing task (a task never
                                        receives its own messages). Header
                                        Rota-Topic: the result's topic, encoded.
  rota.pods.status                      request; every pod host answers with its
                                        status (JSON).
Queue groups
  rota.pods.<task>                      one per task name, for round_robin tasks:
                                        the task's instances on all hosts share the
                                        load. Broadcast tasks subscribe without one.
KV bucket
  rota_topics                           <topic> → its latest message (history 1),
                                        for ``system.pull`` on any host.
"""

from __future__ import annotations

from rota.pods.protocol import check_topic

TOPIC_PREFIX = "rota.topic"
PODS_PREFIX = "rota.pods"
REPLY_PREFIX = "rota.pods.reply"
STATUS_SUBJECT = "rota.pods.status"
LATEST_BUCKET = "rota_topics"

#: Header of a reply naming the topic it answers on (``T.result``).
TOPIC_HEADER = "Rota-Topic"

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_HEX = frozenset("0123456789ABCDEF")


def escape_token(text: str) -> str:
    """``text`` as one subject token: safe bytes kept, others ``=XX``. Dots too."""
    if text.isascii() and all(b in _SAFE for b in text.encode()):
        return text
    return "".join(chr(b) if b in _SAFE else f"={b:02X}" for b in text.encode("utf-8"))


def unescape_token(token: str) -> str:
    if "=" not in token:
        return token
    out = bytearray()
    i = 0
    while i < len(token):
        c = token[i]
        if c == "=":
            pair = token[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise ValueError(f"bad escape in subject token {token!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out += c.encode()
            i += 1
    return out.decode("utf-8")


def encode_topic(topic: str) -> str:
    """``topic`` → the part of its subject after :data:`TOPIC_PREFIX` (also its KV key)."""
    return ".".join(escape_token(part) or "=" for part in topic.split("."))


def decode_topic(encoded: str) -> str:
    return ".".join("" if tok == "=" else unescape_token(tok) for tok in encoded.split("."))


def topic_subject(topic: str) -> str:
    """The NATS subject of ``topic``; :class:`InvalidTopic` if it cannot be one."""
    return f"{TOPIC_PREFIX}.{encode_topic(check_topic(topic))}"


def topic_from_subject(subject: str) -> str:
    return decode_topic(subject[len(TOPIC_PREFIX) + 1 :])


def queue_group(task: str) -> str:
    """The queue group the round_robin instances of ``task`` share on every host."""
    return f"{PODS_PREFIX}.{escape_token(task)}"


def reply_prefix(host_id: str) -> str:
    return f"{REPLY_PREFIX}.{escape_token(host_id)}"


def reply_subject(host_id: str, task: str, pod_id: str) -> str:
    """Where ``.result`` replies for pod ``pod_id`` of ``task`` on host ``host_id`` go."""
    return f"{reply_prefix(host_id)}.{escape_token(task)}.{escape_token(pod_id)}"


_REPLY_START = REPLY_PREFIX + "."


def task_of_reply(reply: str) -> str | None:
    """The (escaped) task token of a pod's reply subject; ``None`` for any other
    subject (a client's inbox)."""
    if not reply.startswith(_REPLY_START):
        return None
    parts = reply.split(".")
    if len(parts) != 6:
        return None
    token = parts[4]
    # A malformed escape (a client's own subject under our prefix) names no task.
    return token if "=" not in token or _valid_escapes(token) else None


def _valid_escapes(token: str) -> bool:
    try:
        unescape_token(token)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def latest_subject(topic: str) -> str:
    """The subject a KV put of ``topic``'s latest message is published on."""
    return f"$KV.{LATEST_BUCKET}.{encode_topic(topic)}"
