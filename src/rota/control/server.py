"""The worker's gRPC server: a thin servicer over the worker's own operations.

Mutual TLS with certificates re-read from disk on every new connection when they
changed (``grpc.dynamic_ssl_server_credentials``): a renewed certificate is
presented from the next handshake on, with no restart. A peer without a
certificate signed by the cluster CA is refused during the handshake.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

import grpc

import rota
from rota.control.fence import STALE_EPOCH, EpochFence, epoch_of
from rota.control.tls import TlsFiles
from rota.control.v1 import control_pb2 as pb
from rota.control.v1 import control_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from grpc import aio

log = logging.getLogger(__name__)


class ControlledWorker(Protocol):
    """What the servicer needs from a worker (rota.worker.daemon.Worker)."""

    worker_id: str

    def status(self) -> dict[str, Any]: ...

    async def start_run(self, run_id: str) -> tuple[bool, str, int, str]: ...

    async def cancel_run(self, run_id: str, attempt: int) -> tuple[bool, str]: ...

    async def drain(self) -> int: ...

    def confirm(self, run_id: str, attempt: int, owner: str = "") -> tuple[bool, str, float]: ...


class WorkerControlServicer(pb_grpc.WorkerControlServicer):
    def __init__(self, worker: ControlledWorker, fence: EpochFence) -> None:
        self.worker = worker
        self.fence = fence

    async def _admit(self, context: aio.ServicerContext) -> int:
        """Check the caller's epoch; abort the call with a distinct status if stale."""
        epoch = epoch_of(context.invocation_metadata())
        if not self.fence.admit(epoch):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{STALE_EPOCH}: call carries epoch {epoch}, this worker has seen {self.fence.highest}",
            )
        return epoch

    async def Ping(self, request: pb.PingRequest, context: aio.ServicerContext) -> pb.PingReply:
        epoch = await self._admit(context)
        return pb.PingReply(
            worker_id=self.worker.worker_id,
            epoch=epoch,
            highest_epoch=self.fence.highest,
            server_time=time.time(),
        )

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: aio.ServicerContext
    ) -> pb.WorkerStatus:
        await self._admit(context)
        s = self.worker.status()
        return pb.WorkerStatus(
            worker_id=s["worker_id"],
            node_id=s["node_id"],
            roles=s["roles"],
            tags=s["tags"],
            capacity=s["capacity"],
            load=s["load"],
            runs=[pb.RunningRun(**r) for r in s["runs"]],
            draining=s["draining"],
            detached=s["detached"],
            versions=versions(),
            started_at=s["started_at"],
            grpc_endpoint=s["grpc_endpoint"],
            highest_epoch=self.fence.highest,
        )

    async def StartJob(
        self, request: pb.StartJobRequest, context: aio.ServicerContext
    ) -> pb.StartJobReply:
        await self._admit(context)
        if not request.run_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "run_id is required")
        started, state, attempt, detail = await self.worker.start_run(request.run_id)
        if not started and state == "":
            await context.abort(grpc.StatusCode.NOT_FOUND, detail)
        if not started and detail.startswith("busy"):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, detail)
        return pb.StartJobReply(started=started, state=state, attempt=attempt, detail=detail)

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: aio.ServicerContext
    ) -> pb.CancelJobReply:
        await self._admit(context)
        found, state = await self.worker.cancel_run(request.run_id, request.attempt)
        return pb.CancelJobReply(found=found, state=state)

    async def Drain(self, request: pb.DrainRequest, context: aio.ServicerContext) -> pb.DrainReply:
        await self._admit(context)
        return pb.DrainReply(running=await self.worker.drain())

    async def ConfirmContinuation(
        self, request: pb.ConfirmContinuationRequest, context: aio.ServicerContext
    ) -> pb.ConfirmContinuationReply:
        await self._admit(context)
        executing, state, heartbeat_at = self.worker.confirm(
            request.run_id, request.attempt, request.worker_id
        )
        not_me = (
            bool(request.worker_id) and not executing and request.worker_id != self.worker.worker_id
        )
        return pb.ConfirmContinuationReply(
            executing=executing,
            state=state,
            heartbeat_at=heartbeat_at,
            not_me=not_me,
            worker_id=self.worker.worker_id,
        )


def versions() -> dict[str, str]:
    import platform

    import nats

    return {
        "rota": rota.__version__,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "nats-py": getattr(nats, "__version__", "?"),
    }


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """mTLS credentials that follow the files on disk."""
    first = tls.load()

    def config(m: Any) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(m.key, m.cert)], root_certificates=m.ca)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC before every handshake: cheap unless a file changed.
        try:
            if not tls.changed():
                return None
            material = tls.load()
            log.info("control plane: TLS files changed, presenting the new certificate")
            return config(material)
        except Exception:  # a half-written renewal: keep the current one
            log.warning(
                "control plane: cannot reload TLS files; keeping the current ones", exc_info=True
            )
            return None

    return grpc.dynamic_ssl_server_credentials(
        config(first), fetch, require_client_authentication=True
    )


async def start_control_server(
    worker: ControlledWorker, tls: TlsFiles, *, host: str, port: int, fence: EpochFence
) -> tuple[aio.Server, int]:
    """Start the gRPC server; returns it and the port it listens on."""
    from grpc import aio

    server = aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_WorkerControlServicer_to_server(WorkerControlServicer(worker, fence), server)
    bound = server.add_secure_port(f"{host}:{port}", server_credentials(tls))
    if bound == 0:
        from rota.errors import RotaError

        raise RotaError(
            f"cannot listen for gRPC on {host}:{port}",
            hint="the port is taken: set ROTA_GRPC_PORT to another port, or 0 for any free one",
        )
    await server.start()
    return server, bound
