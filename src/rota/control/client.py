"""The control-plane client: calls one worker over mutual TLS.

Channels are kept per endpoint and reused. Before a call the client checks
whether its TLS files changed on disk (a renewal) and, if so, rebuilds its
channels with the new certificate. Transient failures (UNAVAILABLE, deadline)
are retried ``retries`` times; every failure surfaces as a typed
:class:`ControlError`, which says whether a retry makes sense.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from grpc import aio

from rota.control.fence import EPOCH_KEY, STALE_EPOCH
from rota.control.tls import CLUSTER_NAME, TlsFiles
from rota.control.v1 import control_pb2 as pb
from rota.control.v1 import control_pb2_grpc as pb_grpc
from rota.errors import RotaError


class ControlError(RotaError):
    """A control call failed. ``code`` is the gRPC status."""

    def __init__(
        self, message: str, *, code: grpc.StatusCode | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.code = code


class WorkerUnreachable(ControlError):
    """No answer (connection refused, TLS refused, deadline): the worker may be gone."""

    @property
    def refused(self) -> bool:
        """Nothing listens at the endpoint: the process is gone (a paused one
        still accepts connections and times out instead)."""
        return self.code == grpc.StatusCode.UNAVAILABLE and "connection refused" in (
            self.message.lower()
        )


class StaleEpoch(ControlError):
    """The worker has seen a newer leader: this caller must stop acting as leader."""


class RunNotHere(ControlError):
    """The worker does not know the run asked about."""


class WorkerBusy(ControlError):
    """The worker has no free slot (StartJob)."""


_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _typed(exc: aio.AioRpcError, endpoint: str) -> ControlError:
    code, detail = exc.code(), exc.details() or ""
    message = f"{endpoint}: {code.name}: {detail}"
    if code == grpc.StatusCode.FAILED_PRECONDITION and detail.startswith(STALE_EPOCH):
        return StaleEpoch(message, code=code)
    if code == grpc.StatusCode.NOT_FOUND:
        return RunNotHere(message, code=code)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return WorkerBusy(message, code=code, retryable=True)
    if code in _RETRYABLE:
        return WorkerUnreachable(message, code=code, retryable=True)
    return ControlError(message, code=code)


class ControlClient:
    """Calls workers' WorkerControl services.

    :param epoch: the leader epoch to send with every call (None: not a leader).
    :param timeout: deadline of one attempt, seconds (SchedulerSettings.grpc_timeout_seconds).
    :param retries: extra attempts after a transient failure (SchedulerSettings.grpc_retries).
    """

    def __init__(
        self,
        tls: TlsFiles,
        *,
        epoch: int | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        retry_interval: float = 0.1,
    ) -> None:
        self.tls = tls
        self.epoch = epoch
        self.timeout = timeout
        self.retries = retries
        self.retry_interval = retry_interval
        self._channels: dict[str, aio.Channel] = {}
        self._creds: grpc.ChannelCredentials | None = None

    def _credentials(self) -> grpc.ChannelCredentials:
        if self._creds is None or self.tls.changed():
            m = self.tls.load()
            self._creds = grpc.ssl_channel_credentials(
                root_certificates=m.ca, private_key=m.key, certificate_chain=m.cert
            )
            old, self._channels = self._channels, {}
            for ch in old.values():
                # Calls in flight on the old channels finish; new ones use new keys.
                asyncio.ensure_future(ch.close(grace=5))
        return self._creds

    def _stub(self, endpoint: str) -> pb_grpc.WorkerControlStub:
        creds = self._credentials()
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = aio.secure_channel(
                endpoint,
                creds,
                options=[
                    # Workers are verified as members of the cluster CA (see tls.py).
                    ("grpc.ssl_target_name_override", CLUSTER_NAME),
                    ("grpc.default_authority", CLUSTER_NAME),
                    ("grpc.keepalive_time_ms", 30_000),
                    # Reconnect quickly to a worker that came back.
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 2_000),
                ],
            )
            self._channels[endpoint] = channel
        return pb_grpc.WorkerControlStub(channel)

    async def _call(self, endpoint: str, method: str, request: Any) -> Any:
        metadata = ((EPOCH_KEY, str(self.epoch)),) if self.epoch else ()
        attempt = 0
        while True:
            try:
                rpc = getattr(self._stub(endpoint), method)
                return await rpc(request, timeout=self.timeout, metadata=metadata)
            except aio.AioRpcError as exc:
                err = _typed(exc, endpoint)
                if isinstance(err, WorkerUnreachable) and attempt < self.retries:
                    attempt += 1
                    await asyncio.sleep(self.retry_interval * attempt)
                    continue
                raise err from None

    async def ping(self, endpoint: str) -> tuple[pb.PingReply, float]:
        """Ping; returns the reply and the round trip in seconds."""
        t0 = time.perf_counter()
        reply = await self._call(endpoint, "Ping", pb.PingRequest())
        return reply, time.perf_counter() - t0

    async def status(self, endpoint: str) -> pb.WorkerStatus:
        return await self._call(endpoint, "GetStatus", pb.GetStatusRequest())

    async def start_job(self, endpoint: str, run_id: str) -> pb.StartJobReply:
        return await self._call(endpoint, "StartJob", pb.StartJobRequest(run_id=run_id))

    async def cancel_job(self, endpoint: str, run_id: str, attempt: int = 0) -> pb.CancelJobReply:
        return await self._call(
            endpoint, "CancelJob", pb.CancelJobRequest(run_id=run_id, attempt=attempt)
        )

    async def cancel_on_worker(
        self, js: Any, worker_id: str, run_id: str, attempt: int = 0
    ) -> bool:
        """Tell the worker that owns a run to stop it, finding its endpoint in
        the registry. False if the worker advertises none."""
        from rota.coordination.registry import endpoint_of

        endpoint = await endpoint_of(js, worker_id)
        if not endpoint:
            return False
        await self.cancel_job(endpoint, run_id, attempt)
        return True

    async def drain(self, endpoint: str) -> pb.DrainReply:
        return await self._call(endpoint, "Drain", pb.DrainRequest())

    async def confirm_continuation(
        self, endpoint: str, run_id: str, attempt: int, worker_id: str = ""
    ) -> pb.ConfirmContinuationReply:
        """Is the worker instance ``worker_id`` at ``endpoint`` still executing
        ``run_id`` at ``attempt``? ``not_me`` in the reply: another instance answered."""
        return await self._call(
            endpoint,
            "ConfirmContinuation",
            pb.ConfirmContinuationRequest(run_id=run_id, attempt=attempt, worker_id=worker_id),
        )

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(ch.close() for ch in channels.values()), return_exceptions=True)
