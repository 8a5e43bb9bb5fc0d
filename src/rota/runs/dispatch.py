"""The dispatch message: a run's snapshot published on the work stream, with its
KV revision so the claim needs no extra read. No Django here: execute-only
workers use it without a database."""

from __future__ import annotations

from nats.js import JetStreamContext

from rota.bus.subjects import pinned_subject, work_subject
from rota.domain.ids import msg_id
from rota.runs.transitions import Versioned

#: Header carrying the KV revision the snapshot in the body was read at.
REV_HEADER = "Rota-Rev"


async def publish_dispatch(
    js: JetStreamContext, v: Versioned, *, pinned_to: str | None = None
) -> None:
    """Publish ``v`` to its tag's work subject (or one worker's pinned subject).

    ``Nats-Msg-Id`` is ``<run_id>:<attempt>``: publishing the same attempt twice
    (a retry, the reconciler) is dropped by JetStream's duplicate window."""
    subject = pinned_subject(pinned_to) if pinned_to else work_subject(v.snap.tag)
    await js.publish(
        subject,
        v.snap.encode(),
        headers={"Nats-Msg-Id": msg_id(v.snap.run_id, v.snap.attempt), REV_HEADER: str(v.rev)},
    )
