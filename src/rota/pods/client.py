"""Publishing to topics from outside the pods: the CLI (``rota topics publish``),
the HTTP API (``POST /topics/{topic}/messages``), the ``pod`` executor, and any
Python code holding a :class:`~rota.bus.connection.Bus`."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from rota.bus.connection import Bus
from rota.pods import subjects
from rota.pods.errors import NoSubscribers, ResultTimeout


async def publish(
    bus: Bus, topic: str, data: str | bytes, *, wait_result: float | None = None
) -> str | None:
    """Publish ``data`` on ``topic``.

    With ``wait_result`` (seconds; ``math.inf`` waits for ever) the message carries
    a reply address and this returns the text of the first ``<topic>.result`` a
    pod publishes in answer. Without it, returns ``None`` once the message is
    handed to the connection (fire and forget: ``bus.close()`` flushes).

    Raises :class:`~rota.pods.errors.InvalidTopic` for a topic that cannot be
    published, :class:`~rota.pods.errors.NoSubscribers` when waiting and no
    task on any host subscribes to it, :class:`~rota.pods.errors.ResultTimeout`
    when no result came in time (the message may still be queued or running).
    """
    subject = subjects.topic_subject(topic)
    payload = data.encode() if isinstance(data, str) else bytes(data)
    nc = bus.nc
    # The latest message of each topic is kept for ``system.pull`` (a KV put
    # without waiting for its ack: a lost one only makes the latest older).
    await nc.publish(subjects.latest_subject(topic), payload)
    if wait_result is None:
        await nc.publish(subject, payload)
        return None
    timeout = None if math.isinf(wait_result) else wait_result
    try:
        msg = await nc.request(subject, payload, timeout=timeout)  # type: ignore[arg-type]
    except NoRespondersError:
        raise NoSubscribers(
            f"no pod task subscribes to topic {topic!r}",
            hint="check subscribe_topics in the pods config, and that a pod host runs",
        ) from None
    except (TimeoutError, NatsTimeout):
        raise ResultTimeout(
            f"no {topic}.result within {wait_result:g}s",
            hint="are the task's pods busy or crash-looping? see `rota pods status`",
        ) from None
    return msg.data.decode("utf-8", "replace")


async def latest(bus: Bus, topic: str) -> str | None:
    """The latest message published on ``topic`` (what ``system.pull`` returns)."""
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError

    subjects.topic_subject(topic)  # validates
    try:
        kv = await bus.js.key_value(subjects.LATEST_BUCKET)
        entry = await kv.get(subjects.encode_topic(topic))
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    return entry.value.decode("utf-8", "replace") if entry.value is not None else None


async def hosts_status(bus: Bus, *, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Ask every pod host for its status; collect answers for ``timeout`` seconds."""
    nc = bus.nc
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        if msg.headers and msg.headers.get("Status"):
            return  # "503 no responders": no pod host runs at all
        answers.append(orjson.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(subjects.STATUS_SUBJECT, b"", reply=inbox)
        await nc.flush()
        await asyncio.sleep(timeout)
    finally:
        await sub.unsubscribe()
    return sorted(answers, key=lambda a: a.get("host_id", ""))
