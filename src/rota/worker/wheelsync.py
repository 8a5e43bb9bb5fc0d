"""A worker's sync of the wheel registry (seed 003 F-20, UC-15; docs/wheels.md).

Per package, the worker installs the newest wheel whose tags intersect its own
(a wheel without tags is for every worker) and whose interpreter tags it
supports. It installs the set into a directory of its own, never into its own
site-packages: ``pip install --target`` with ``--no-index --find-links`` over
the synced files only, so the registry is the only source and an offline
cluster works.

Differential by digest: the set is the (file, sha256) pairs chosen; when it is
the set already installed, nothing is downloaded or installed. A file already
downloaded with the right sha256 is not fetched again. Each change is installed
into a new directory and switched to only when pip succeeded, so a failed
install keeps the previous set; it is retried with exponential backoff
(``wheel_sync_seconds`` doubled per failure, at most :data:`MAX_BACKOFF`) and
shown in the worker's registry entry (``wheel_sync``). The previous directory is
kept until the next switch, for command runs still using it.

The sync runs every ``wheel_sync_seconds`` and at once when the registry
changes (the object store's meta subject). :meth:`WheelSync.step` is one sync;
tests call it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from packaging.tags import Tag, sys_tags

from rota.bus import subjects
from rota.conf import RotaSettings
from rota.domain import wheels as domain
from rota.domain.ids import safe_token
from rota.errors import RotaError
from rota.wheels.registry import WheelRegistry
from rota.worker.executors.base import Environment, without_secrets

log = logging.getLogger(__name__)

#: Longest wait between two attempts of a failing install.
MAX_BACKOFF = 300.0
#: How many entries each list of the sync state shows, at most.
STATE_ITEMS = 50
#: Characters of pip's output kept in a sync error.
ERROR_CHARS = 2000


class SyncError(RotaError):
    """A sync that could not install the chosen set; the next one retries."""

    retryable = True


def initial_state() -> dict[str, Any]:
    """``wheel_sync`` of a registry entry before the first sync (pyoco-server's keys)."""
    return {
        "enabled": True,
        "last_result": "idle",
        "last_attempt_at": None,
        "last_success_at": None,
        "last_synced_at": None,
        "last_error": None,
        "next_retry_at": None,
        "selected_count": 0,
        "updated_count": 0,
        "removed_count": 0,
        "skipped_incompatible_count": 0,
        "selected_wheels": [],
        "updated_wheels": [],
        "removed_wheels": [],
        "skipped_incompatible": [],
        "installed_wheels": [],
    }


class WheelSync:
    """Keeps one worker's environment equal to the registry's choice for its tags.

    :param on_change: awaited with the new :class:`Environment` after each switch.
    :param on_error: awaited after a failed sync (the worker shows its state).
    """

    def __init__(
        self,
        js: JetStreamContext,
        settings: RotaSettings,
        *,
        worker_id: str,
        tags: Iterable[str],
        on_change: Callable[[Environment], Awaitable[None]],
        on_error: Callable[[], Awaitable[None]] | None = None,
        supported: Iterable[Tag] | None = None,
    ) -> None:
        self.registry = WheelRegistry(js)
        self.settings = settings
        self.tags = list(tags)
        self.on_change = on_change
        self.on_error = on_error
        self.supported = frozenset(supported if supported is not None else sys_tags())
        # Absolute: runs may start in another working directory (django jobs).
        self.root = (settings.wheels_path / safe_token(worker_id)).absolute()
        self.files = self.root / "files"
        self.envs = self.root / "envs"
        self.environment = Environment()
        self.state = initial_state()
        self.wake = asyncio.Event()
        self._installed_key: tuple[tuple[str, str], ...] = ()
        self._installed: list[dict[str, Any]] = []
        self._failures = 0
        self._failed_key: tuple[tuple[str, str], ...] | None = None
        self._retry_at = 0.0
        self._install_seconds: float | None = None

    # -- the loop --------------------------------------------------------------

    async def run(self, nc: NATS, stop: asyncio.Event) -> None:
        """Sync now, then every ``wheel_sync_seconds`` and on every registry change."""
        sub = await nc.subscribe(subjects.wheels_meta_subject(), cb=self._changed)
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("wheel sync failed")
                wait = self.settings.wheel_sync_seconds
                if self._failed_key is not None:
                    wait = max(0.05, min(wait, self._retry_at - time.monotonic()))
                waiters = [
                    asyncio.ensure_future(self.wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                try:
                    await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _changed(self, _msg: Any) -> None:
        # A change retries a failing set at once too: it may be the fix.
        self._retry_at = 0.0
        self.wake.set()

    # -- one sync --------------------------------------------------------------

    async def step(self) -> bool:
        """Sync once; True if the installed set changed."""
        attempted = time.time()
        selection = domain.select(await self.registry.stored(), self.tags, self.supported)
        key = selection.key()
        if key == self._installed_key:
            # Nothing to do. The state changes only when it was not "ok" (the
            # registry went back to what we have), so an idle worker's registry
            # entry stays as it is and is not rewritten.
            if self.state["last_result"] != "ok":
                self._failed_key, self._failures = None, 0
                self._note_ok(attempted, selection, updated=[], removed=[])
            return False
        if key == self._failed_key and time.monotonic() < self._retry_at:
            return False
        before = {w["wheel_name"] for w in self._installed}
        started = time.monotonic()
        try:
            await self._fetch(selection)
            env = await self._install(selection)
        except Exception as exc:
            self._failed(attempted, key, exc)
            if self.on_error is not None:
                await self.on_error()
            return False
        previous = self.environment
        self.environment = env
        self._installed_key = key
        self._failed_key, self._failures = None, 0
        now = time.time()
        self._installed = [
            {
                "wheel_name": c.filename,
                "package_name": c.package,
                "package_version": c.version,
                "sha256_hex": c.sha256,
                "tags": list(c.tags),
                "nuid": c.nuid,
                "installed_at": now,
            }
            for c in selection.chosen.values()
        ]
        chosen = {c.filename for c in selection.chosen.values()}
        self._note_ok(
            attempted,
            selection,
            updated=sorted(chosen - before),
            removed=sorted(before - chosen),
        )
        self._install_seconds = round(time.monotonic() - started, 3)
        self.state["install_seconds"] = self._install_seconds
        log.info(
            "wheels synced in %.1fs: %s",
            self._install_seconds,
            ", ".join(f"{c.package} {c.version}" for c in selection.chosen.values()) or "none",
        )
        await self.on_change(env)
        await asyncio.to_thread(self._prune, {env.root, previous.root})
        return True

    async def _fetch(self, selection: domain.Selection) -> None:
        """Download what is not here yet, checked against its sha256; remove
        what is no longer chosen, so pip finds nothing else."""
        self.files.mkdir(parents=True, exist_ok=True)
        for choice in selection.chosen.values():
            path = self.files / choice.filename
            if path.is_file() and choice.sha256 and _sha256(path) == choice.sha256:
                continue
            data, _ = await self.registry.download(choice.filename)
            got = hashlib.sha256(data).hexdigest()
            if choice.sha256 and got != choice.sha256:
                raise SyncError(f"{choice.filename} changed while it was synced; retrying")
            partial = path.with_suffix(".part")
            partial.write_bytes(data)
            partial.replace(path)
        chosen = {c.filename for c in selection.chosen.values()}
        for path in self.files.iterdir():
            if path.name not in chosen:
                path.unlink(missing_ok=True)

    async def _install(self, selection: domain.Selection) -> Environment:
        generation = self.environment.generation + 1
        if not selection.chosen:
            return Environment(None, generation)
        for choice in selection.chosen.values():
            # Checked again right before pip reads it: the file on disk is the one uploaded.
            if choice.sha256 and _sha256(self.files / choice.filename) != choice.sha256:
                raise SyncError(f"{choice.filename}: sha256 differs from the registry's")
        self.envs.mkdir(parents=True, exist_ok=True)
        target = self.envs / str(generation)
        partial = self.envs / f"{generation}.part"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-index",
            "--find-links",
            str(self.files),
            "--target",
            str(partial),
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--no-input",
            *(str(self.files / c.filename) for c in selection.chosen.values()),
        ]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=without_secrets(),
            start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(
                proc.communicate(), self.settings.wheel_install_timeout_seconds
            )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            shutil.rmtree(partial, ignore_errors=True)
            raise SyncError(
                f"pip install did not finish within {self.settings.wheel_install_timeout_seconds:g}s"
            ) from None
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            text = out.decode("utf-8", "replace").strip()
            errors = [line for line in text.splitlines() if line.startswith("ERROR")]
            detail = "\n".join(errors) or text[-ERROR_CHARS:]
            raise SyncError(f"pip install failed (exit {proc.returncode}): {detail[-ERROR_CHARS:]}")
        partial.rename(target)
        return Environment(target, generation)

    def _prune(self, keep: set[Path | None]) -> None:
        if not self.envs.is_dir():
            return
        for path in self.envs.iterdir():
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def remove(self) -> None:
        """Delete this worker's directory (at shutdown, after its runs ended)."""
        shutil.rmtree(self.root, ignore_errors=True)

    # -- state ---------------------------------------------------------------

    def _failed(self, attempted: float, key: tuple[tuple[str, str], ...], exc: Exception) -> None:
        if key != self._failed_key:
            self._failures = 0
        self._failures += 1
        self._failed_key = key
        backoff = min(MAX_BACKOFF, self.settings.wheel_sync_seconds * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + backoff
        message = str(exc) if isinstance(exc, RotaError) else f"{type(exc).__name__}: {exc}"
        log.warning(
            "wheel sync failed (attempt %d, next in %.0fs); keeping the previous set: %s",
            self._failures,
            backoff,
            message,
        )
        self.state.update(
            last_result="error",
            last_attempt_at=attempted,
            last_error=message[:ERROR_CHARS],
            next_retry_at=time.time() + backoff,
            failures=self._failures,
        )

    def _note_ok(
        self,
        attempted: float,
        selection: domain.Selection,
        *,
        updated: list[str],
        removed: list[str],
    ) -> None:
        now = time.time()
        chosen = sorted(c.filename for c in selection.chosen.values())
        self.state = {
            **initial_state(),
            "last_result": "ok",
            "last_attempt_at": attempted,
            "last_success_at": now,
            "last_synced_at": now,
            "selected_count": len(chosen),
            "updated_count": len(updated),
            "removed_count": len(removed),
            "skipped_incompatible_count": len(selection.incompatible),
            "selected_wheels": chosen[:STATE_ITEMS],
            "updated_wheels": updated[:STATE_ITEMS],
            "removed_wheels": removed[:STATE_ITEMS],
            "skipped_incompatible": [
                {"wheel_name": n, "reason": "unsupported_wheel_tags"}
                for n in selection.incompatible[:STATE_ITEMS]
            ],
            "installed_wheels": self._installed[:STATE_ITEMS],
            "generation": self.environment.generation,
            #: How long the last change took to download and install.
            "install_seconds": self._install_seconds,
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
