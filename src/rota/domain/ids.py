"""Identifiers. Run ids are ULIDs: unique without coordination, sortable by
creation time (so ``ORDER BY id`` is creation order), and safe as NATS KV keys
and subject tokens (Crockford base32, no dots or wildcards)."""

from __future__ import annotations

import secrets

from ulid import ULID


def new_run_id() -> str:
    return str(ULID())


def new_worker_id(node_id: str) -> str:
    """A fresh id for every worker process start (a restarted worker rejoins as new)."""
    return f"{safe_token(node_id)}-{secrets.token_hex(4)}"


def new_event_id() -> str:
    return str(ULID())


def safe_token(text: str) -> str:
    """Make ``text`` usable as one NATS subject token / KV key part."""
    # ASCII only: NATS keys and subject tokens reject other letters.
    out = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in text)
    return out or "_"


def msg_id(run_id: str, attempt: int) -> str:
    """JetStream de-duplication id of a run's dispatch message (DESIGN §4)."""
    return f"{run_id}:{attempt}"
