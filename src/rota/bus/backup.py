"""Backup and restore of everything rota keeps in JetStream, with JetStream's own
snapshot API and no Go ``nats`` CLI.

Why snapshots and not a logical export (reading every message and publishing it
again): a restored stream must keep its sequence numbers. A KV entry's revision
*is* its stream sequence, every run transition is a compare-and-set on that
revision, and each dispatch message carries the revision it was read at
(``Rota-Rev``); republished messages would get new sequences and every queued run
would fail its claim. A snapshot also carries the durable consumers (the work
consumers' and the projector's positions) and deleted-message gaps, which an
export cannot recreate.

The protocol (``$JS.API.STREAM.SNAPSHOT.<stream>``, ``$JS.API.STREAM.RESTORE.<stream>``):
a snapshot request names a deliver subject; the stream's leader answers with the
stream's config and state, then sends the snapshot (an S2-compressed tar) in
chunks, each with a reply subject the receiver acks for flow control, and an
empty message at the end. A restore request with the config and state answers
with a subject to send the chunks to, each as a request the server acks; an empty
request ends it and is answered with the restored stream's info.

Layout of a backup directory (each stream's part is laid out like the Go CLI's
``nats stream backup``)::

    manifest.json           {"format": "rota-nats-backup/1", "created": ..., "streams": [
                              {"stream", "kind", "resource", "messages", "first_seq",
                               "last_seq", "bytes", "sha256"}, ...]}
    <stream>/backup.json    the snapshot answer: {"config": ..., "state": ...}
    <stream>/stream.tar.s2  the snapshot itself

Streams are snapshotted one after another, ``ROTA_WORK`` first: a run submitted
during the backup then has its snapshot in ``rota_runs`` without a dispatch
message, which the leader's reconciler re-dispatches, rather than a dispatch
message for a run the bucket does not know. For a backup of a still moment, stop
rota's processes first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError

from rota.bus import subjects
from rota.errors import InvalidInput, RotaError

FORMAT = "rota-nats-backup/1"
MANIFEST = "manifest.json"
CHUNK = 128 * 1024


class BackupError(RotaError):
    pass


@dataclass(frozen=True)
class Entry:
    stream: str
    kind: str
    resource: str
    messages: int
    first_seq: int
    last_seq: int
    bytes: int
    sha256: str


async def _api(nc: Client, subject: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    answer = json.loads(msg.data)
    if answer.get("error"):
        err = answer["error"]
        raise BackupError(
            f"{subject}: {err.get('description', err)} (JetStream error {err.get('err_code')})"
        )
    return answer


async def snapshot_stream(
    nc: Client, stream: str, target: Path, *, timeout: float = 30.0
) -> dict[str, Any]:
    """Write ``stream``'s snapshot to ``target``; return the server's answer
    (config and state)."""
    inbox = nc.new_inbox()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    last_chunk = time.monotonic()
    with target.open("wb") as out:

        async def on_chunk(msg: Any) -> None:
            nonlocal last_chunk
            last_chunk = time.monotonic()
            if not msg.data:
                # The end: an empty message, from newer servers with status 204.
                status = (msg.headers or {}).get("Status")
                if status and status != "204" and not done.done():
                    done.set_exception(
                        BackupError(f"snapshot of {stream} ended with status {status}")
                    )
                elif not done.done():
                    done.set_result(None)
                return
            out.write(msg.data)
            if msg.reply:
                await nc.publish(msg.reply, b"")

        sub = await nc.subscribe(inbox, cb=on_chunk)
        try:
            answer = await _api(
                nc,
                f"$JS.API.STREAM.SNAPSHOT.{stream}",
                {"deliver_subject": inbox, "chunk_size": CHUNK, "jsck": True},
                timeout,
            )
            # The answer comes once the snapshot is prepared (and checked): the
            # stall clock starts now.
            last_chunk = max(last_chunk, time.monotonic())
            while not done.done():
                if time.monotonic() - last_chunk > timeout:
                    raise BackupError(f"snapshot of {stream} stalled for {timeout}s")
                await asyncio.wait({done}, timeout=0.5)
            done.result()
        finally:
            await sub.unsubscribe()
    return {"config": answer["config"], "state": answer["state"]}


async def restore_stream(
    nc: Client, answer: dict[str, Any], source: Path, *, timeout: float = 60.0
) -> dict[str, Any]:
    """Create a stream from a snapshot file and its saved config/state; return the
    restored stream's info."""
    stream = answer["config"]["name"]
    start = await _api(nc, f"$JS.API.STREAM.RESTORE.{stream}", answer, timeout)
    deliver = start["deliver_subject"]
    with source.open("rb") as f:
        while chunk := f.read(CHUNK):
            ack = await _send_chunk(nc, deliver, chunk, timeout)
            if ack.data:
                raise BackupError(f"restore of {stream}: {ack.data.decode(errors='replace')}")
    end = await _send_chunk(nc, deliver, b"", timeout)
    info = json.loads(end.data)
    if info.get("error"):
        raise BackupError(f"restore of {stream}: {info['error'].get('description')}")
    return info


async def _send_chunk(nc: Client, deliver: str, chunk: bytes, timeout: float) -> Any:
    """Send one restore chunk. In a cluster the server that receives the restore
    may be another node than ours, and its subscription reaches our node a moment
    after the answer that names it: "no responders" then means nobody got the
    chunk, so sending it again is safe."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await nc.request(deliver, chunk, timeout=timeout)
        except NoRespondersError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def stream_exists(nc: Client, stream: str, timeout: float = 10.0) -> bool:
    msg = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=timeout)
    answer = json.loads(msg.data)
    err = answer.get("error")
    if err and err.get("code") == 404:
        return False
    if err:
        raise BackupError(f"stream info {stream}: {err.get('description')}")
    return True


async def backup(nc: Client, directory: Path, *, timeout: float = 30.0) -> list[Entry]:
    """Snapshot every rota stream, bucket and object store into ``directory``
    (which must be new or empty). A resource that does not exist is skipped."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise InvalidInput(
            f"{directory} is not empty",
            hint="give a new directory for each backup",
        )
    directory.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    for stream, kind, resource in subjects.jetstream_streams():
        if not await stream_exists(nc, stream, timeout):
            continue
        part = directory / stream
        part.mkdir()
        answer = await snapshot_stream(nc, stream, part / "stream.tar.s2", timeout=timeout)
        (part / "backup.json").write_text(json.dumps(answer, indent=2))
        state = answer["state"]
        data = (part / "stream.tar.s2").read_bytes()
        entries.append(
            Entry(
                stream=stream,
                kind=kind,
                resource=resource,
                messages=int(state.get("messages") or 0),
                first_seq=int(state.get("first_seq") or 0),
                last_seq=int(state.get("last_seq") or 0),
                bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "streams": [e.__dict__ for e in entries],
    }
    # The manifest last: a directory without one is an unfinished backup.
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return entries


def read_manifest(directory: Path) -> list[Entry]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise InvalidInput(
            f"{path} not found: {directory} is not a finished rota NATS backup",
            hint="give the directory `rota nats backup` wrote",
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise InvalidInput(f"{path}: unknown format {manifest.get('format')!r}")
    return [Entry(**e) for e in manifest["streams"]]


async def restore(
    nc: Client,
    directory: Path,
    *,
    replicas: int | None = None,
    replace: bool = False,
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """Restore every stream of a backup. ``replicas`` overrides the saved replica
    count (restoring a single server's backup into a cluster); ``replace`` deletes
    a stream that exists first, otherwise an existing stream stops the restore
    before anything changed."""
    directory = Path(directory)
    entries = read_manifest(directory)
    for e in entries:
        data = (directory / e.stream / "stream.tar.s2").read_bytes()
        if hashlib.sha256(data).hexdigest() != e.sha256:
            raise BackupError(
                f"{e.stream}/stream.tar.s2 does not match its checksum",
                hint="the backup is damaged; use another one",
            )
    existing = [e.stream for e in entries if await stream_exists(nc, e.stream, timeout)]
    if existing and not replace:
        raise BackupError(
            f"these already exist: {', '.join(existing)}",
            hint="stop rota's processes and pass --replace to delete them first",
        )
    restored = []
    for e in entries:
        if e.stream in existing:
            await _api(nc, f"$JS.API.STREAM.DELETE.{e.stream}", {}, timeout)
        answer = json.loads((directory / e.stream / "backup.json").read_text())
        if replicas:
            answer["config"]["num_replicas"] = replicas
        info = await restore_stream(nc, answer, directory / e.stream / "stream.tar.s2")
        got = info.get("state", {})
        if int(got.get("last_seq") or 0) != e.last_seq:
            raise BackupError(
                f"{e.stream} restored to last sequence {got.get('last_seq')}, "
                f"the backup has {e.last_seq}"
            )
        restored.append(info)
    return restored
