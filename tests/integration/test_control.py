"""The control plane on real engines: a worker's gRPC server with real mutual TLS,
real NATS, real processes."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import ssl
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc import aio

from rota.control.certs import init_certs, make_node_cert, write_node
from rota.control.client import ControlClient, RunNotHere, StaleEpoch, WorkerUnreachable
from rota.control.tls import TlsFiles
from rota.control.v1 import control_pb2 as pb
from rota.control.v1 import control_pb2_grpc as pb_grpc
from rota.domain.states import RunState
from rota.models import JobDefinition
from rota.runs.service import RunRequest, RunService
from rota.runs.transitions import RunStore
from rota.worker.daemon import Worker
from rota.worker.executors.command import CommandExecutor
from rota.worker.executors.python import PythonExecutor
from tests.conftest import eventually
from tests.secret_volume import SecretVolume

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def worker(rota_settings, bus):
    w = Worker(
        rota_settings,
        tags=["ctl"],
        capacity=4,
        roles={"execute"},
        executors={"command": CommandExecutor(kill_grace=0.5), "python": PythonExecutor(size=1)},
    )
    await w.start()
    yield w
    await w.shutdown(grace=1)


@pytest.fixture
async def client(tls_dir):
    c = ControlClient(
        TlsFiles(tls_dir / "tls.crt", tls_dir / "tls.key", tls_dir / "ca.crt"), retries=0, timeout=2
    )
    yield c
    await c.close()


def _client_for(directory: Path, **kw) -> ControlClient:
    return ControlClient(
        TlsFiles(directory / "tls.crt", directory / "tls.key", directory / "ca.crt"),
        retries=0,
        timeout=2,
        **kw,
    )


async def _job(name: str, **kw) -> JobDefinition:
    kw.setdefault("tags", ["ctl"])
    return await JobDefinition.objects.acreate(name=name, **kw)


async def _state(bus, run_id: str, want: set[str], timeout: float = 10.0):
    store = RunStore(bus.runs)

    async def check():
        v = await store.get(run_id)
        return v if v and v.snap.state in want else None

    return await eventually(check, timeout=timeout)


# -- mutual TLS ------------------------------------------------------------------------


async def test_ping_over_mtls_echoes_epoch_and_worker(worker, client):
    reply, rtt = await client.ping(worker.grpc_endpoint)
    assert reply.worker_id == worker.worker_id
    assert reply.epoch == 0 and rtt > 0
    leader = ControlClient(client.tls, epoch=7, retries=0)
    try:
        reply, _ = await leader.ping(worker.grpc_endpoint)
        assert reply.epoch == 7 and reply.highest_epoch == 7
    finally:
        await leader.close()


async def test_client_without_certificate_is_refused(worker, tls_dir):
    creds = grpc.ssl_channel_credentials(root_certificates=(tls_dir / "ca.crt").read_bytes())
    async with aio.secure_channel(
        worker.grpc_endpoint, creds, options=[("grpc.ssl_target_name_override", "rota")]
    ) as ch:
        with pytest.raises(aio.AioRpcError) as err:
            await pb_grpc.WorkerControlStub(ch).Ping(pb.PingRequest(), timeout=2)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_certificate_from_another_ca_is_refused(worker, tmp_path):
    init_certs(tmp_path / "other", ["intruder"])
    intruder = _client_for(tmp_path / "other")
    try:
        with pytest.raises(WorkerUnreachable):
            await intruder.ping(worker.grpc_endpoint)
    finally:
        await intruder.close()


async def test_expired_certificate_is_refused(worker, tls_dir, tmp_path):
    now = dt.datetime.now(dt.UTC)
    key, cert = make_node_cert(
        (tls_dir / "ca.key").read_bytes(),
        (tls_dir / "ca.crt").read_bytes(),
        ["old-node"],
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    write_node(tmp_path / "expired", key, cert, (tls_dir / "ca.crt").read_bytes())
    expired = _client_for(tmp_path / "expired")
    try:
        with pytest.raises(WorkerUnreachable):
            await expired.ping(worker.grpc_endpoint)
    finally:
        await expired.close()
    # The same CA's valid certificate is accepted: it was the expiry that failed.
    key, cert = make_node_cert(
        (tls_dir / "ca.key").read_bytes(), (tls_dir / "ca.crt").read_bytes(), ["new-node"]
    )
    write_node(tmp_path / "valid", key, cert, (tls_dir / "ca.crt").read_bytes())
    valid = _client_for(tmp_path / "valid")
    try:
        reply, _ = await valid.ping(worker.grpc_endpoint)
        assert reply.worker_id == worker.worker_id
    finally:
        await valid.close()


def _presented_serial(endpoint: str, client_dir: Path) -> int:
    """Handshake with the server and return the serial of the certificate it shows."""
    host, port = endpoint.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(client_dir / "ca.crt"))
    ctx.load_cert_chain(client_dir / "tls.crt", client_dir / "tls.key")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="rota") as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


async def test_server_presents_renewed_certificate_without_restart(
    rota_settings, tls_dir, tmp_path
):
    # A worker with its own copy of the files, so renewing them touches no other test.
    own = tmp_path / "server-tls"
    shutil.copytree(tls_dir, own)
    import dataclasses

    settings = dataclasses.replace(rota_settings, tls_dir=own)
    w = Worker(settings, tags=["renew"], roles={"execute"}, executors={})
    await w.start()
    try:
        before = await asyncio.to_thread(_presented_serial, w.grpc_endpoint, tls_dir)
        assert (
            before == x509.load_pem_x509_certificate((own / "tls.crt").read_bytes()).serial_number
        )
        key, cert = make_node_cert(
            (own / "ca.key").read_bytes(), (own / "ca.crt").read_bytes(), ["renewed"]
        )
        write_node(own, key, cert, (own / "ca.crt").read_bytes())  # in place, as cert-manager does
        after = await asyncio.to_thread(_presented_serial, w.grpc_endpoint, tls_dir)
        assert after == x509.load_pem_x509_certificate(cert).serial_number != before
    finally:
        await w.shutdown(grace=1)


async def test_both_ends_follow_a_secret_volume_swap_without_restart(
    rota_settings, tls_dir, tmp_path
):
    """cert-manager renews the Secret; the kubelet swaps the mounted files by a
    symlink (tests/secret_volume.py). The worker presents the new certificate and
    a client calls with its new one, with no restart of either."""
    import dataclasses

    ca_key, ca_cert = (tls_dir / "ca.key").read_bytes(), (tls_dir / "ca.crt").read_bytes()

    def issue(name: str) -> dict[str, bytes]:
        key, cert = make_node_cert(ca_key, ca_cert, [name])
        return {"tls.crt": cert, "tls.key": key, "ca.crt": ca_cert}

    server_vol, client_vol = SecretVolume(tmp_path / "server"), SecretVolume(tmp_path / "client")
    server_vol.write(issue("pod-a"))
    client_vol.write(issue("web-a"))
    settings = dataclasses.replace(rota_settings, tls_dir=server_vol.root)
    w = Worker(settings, tags=["swap"], roles={"execute"}, executors={})
    await w.start()
    c = _client_for(client_vol.root)
    try:
        await c.ping(w.grpc_endpoint)
        renewed = issue("pod-a")
        server_vol.write(renewed)
        shown = await asyncio.to_thread(_presented_serial, w.grpc_endpoint, tls_dir)
        assert shown == x509.load_pem_x509_certificate(renewed["tls.crt"]).serial_number

        # The client's Secret now holds another CA's identity: its next call uses it
        # (and is refused), then the renewed one from our CA (and is accepted).
        init_certs(tmp_path / "foreign", ["x"])
        client_vol.write_dir(tmp_path / "foreign")
        with pytest.raises(WorkerUnreachable):
            await c.ping(w.grpc_endpoint)
        client_vol.write(issue("web-a"))
        reply, _ = await c.ping(w.grpc_endpoint)
        assert reply.worker_id == w.worker_id
    finally:
        await c.close()
        await w.shutdown(grace=1)


async def test_client_picks_up_replaced_files(worker, tls_dir, tmp_path):
    mine = tmp_path / "client-tls"
    shutil.copytree(tls_dir, mine)
    c = _client_for(mine)
    try:
        await c.ping(worker.grpc_endpoint)
        init_certs(tmp_path / "foreign", ["x"])  # replace with another CA's files
        for name in ("tls.crt", "tls.key", "ca.crt"):
            shutil.copy(tmp_path / "foreign" / name, mine / name)
        with pytest.raises(WorkerUnreachable):
            await c.ping(worker.grpc_endpoint)
        for name in ("tls.crt", "tls.key", "ca.crt"):
            shutil.copy(tls_dir / name, mine / name)
        reply, _ = await c.ping(worker.grpc_endpoint)
        assert reply.worker_id == worker.worker_id
    finally:
        await c.close()


# -- fencing ---------------------------------------------------------------------------


async def test_older_epoch_is_refused_with_a_distinct_status(worker, client):
    new, old = (
        ControlClient(client.tls, epoch=12, retries=0),
        ControlClient(client.tls, epoch=11, retries=0),
    )
    try:
        await new.ping(worker.grpc_endpoint)
        with pytest.raises(StaleEpoch) as err:
            await old.cancel_job(worker.grpc_endpoint, "01ANYRUN")
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        # Calls without an epoch (web server, CLI) are not fenced.
        reply, _ = await client.ping(worker.grpc_endpoint)
        assert reply.highest_epoch == 12
    finally:
        await new.close()
        await old.close()


# -- semantics -------------------------------------------------------------------------


async def test_status_start_confirm_and_cancel_of_a_command(bus, worker, client, tmp_path):
    pidfile = tmp_path / "pid"
    job = await _job(
        "sleeper", kind="command", target="sh", args=["-c", f"echo $$ > {pidfile}; exec sleep 600"]
    )
    # Routed to a tag nobody serves: only StartJob can put it on our worker.
    run, _ = await RunService(bus).submit(RunRequest(job=job, tag="nobody"))
    reply = await client.start_job(worker.grpc_endpoint, run.id)
    assert reply.started and reply.attempt == 1
    await eventually(lambda: asyncio.sleep(0, pidfile.exists() and pidfile.read_text().strip()))

    status = await client.status(worker.grpc_endpoint)
    assert status.worker_id == worker.worker_id and status.tags == ["ctl"] and status.capacity == 4
    assert [(r.run_id, r.attempt) for r in status.runs] == [(run.id, 1)]
    assert status.versions["rota"]

    assert (await client.confirm_continuation(worker.grpc_endpoint, run.id, 1)).executing
    assert not (await client.confirm_continuation(worker.grpc_endpoint, run.id, 2)).executing

    pid = int(pidfile.read_text())
    t0 = time.monotonic()
    await RunStore(bus.runs).request_cancel(run.id)  # what POST /runs/{id}/cancel does first
    assert (await client.cancel_job(worker.grpc_endpoint, run.id)).found
    final = await _state(bus, run.id, {RunState.CANCELLED}, timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    assert final.snap.finished_at
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (await client.confirm_continuation(worker.grpc_endpoint, run.id, 1)).executing


async def test_start_job_of_unknown_or_finished_run(bus, worker, client):
    with pytest.raises(RunNotHere):
        await client.start_job(worker.grpc_endpoint, "01NOSUCHRUN")
    job = await _job("quick", kind="command", target="true")
    run, _ = await RunService(bus).submit(RunRequest(job=job))
    await _state(bus, run.id, {RunState.SUCCEEDED})
    reply = await client.start_job(worker.grpc_endpoint, run.id)
    assert not reply.started and reply.state == RunState.SUCCEEDED


async def test_cancel_of_a_python_run_replaces_the_pool_child(bus, worker, client):
    job = await _job("pysleep", kind="python", target="tests.helpers_jobs:sleep")
    run, _ = await RunService(bus).submit(RunRequest(job=job, params={"seconds": 600}))
    await _state(bus, run.id, {RunState.RUNNING})
    t0 = time.monotonic()
    await RunStore(bus.runs).request_cancel(run.id)
    await client.cancel_job(worker.grpc_endpoint, run.id)
    await _state(bus, run.id, {RunState.CANCELLED}, timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    add = await _job("pyadd", kind="python", target="tests.helpers_jobs:add")
    after, _ = await RunService(bus).submit(RunRequest(job=add, params={"a": 1, "b": 2}))
    done = await _state(bus, after.id, {RunState.SUCCEEDED, RunState.FAILED})
    assert done.snap.state == RunState.SUCCEEDED and done.snap.result == 3


async def test_cancel_through_the_snapshot_alone(bus, worker):
    """No gRPC call at all: the worker notices CANCELLING in the snapshot."""
    job = await _job("nogrpc", kind="command", target="sleep", args=["600"])
    run, _ = await RunService(bus).submit(RunRequest(job=job))
    await _state(bus, run.id, {RunState.RUNNING})
    marked = await RunStore(bus.runs).request_cancel(run.id)
    assert marked.snap.state == RunState.CANCELLING
    await _state(bus, run.id, {RunState.CANCELLED}, timeout=5.0)


async def test_cancel_of_a_pending_run_is_immediate_and_idempotent(bus):
    job = await _job("queued", kind="command", target="true", tags=["nobody-serves-this"])
    run, _ = await RunService(bus).submit(RunRequest(job=job))
    store = RunStore(bus.runs)
    first = await store.request_cancel(run.id)
    assert first.snap.state == RunState.CANCELLED
    again = await store.request_cancel(run.id)
    assert again.snap.state == RunState.CANCELLED and again.rev == first.rev


async def test_drain_takes_no_new_work_and_finishes_current(bus, worker, client, tmp_path):
    job = await _job("drainme", kind="command", target="sleep", args=["1"])
    running, _ = await RunService(bus).submit(RunRequest(job=job))
    await _state(bus, running.id, {RunState.RUNNING})
    reply = await client.drain(worker.grpc_endpoint)
    assert reply.running == 1
    later, _ = await RunService(bus).submit(RunRequest(job=job))
    await _state(bus, running.id, {RunState.SUCCEEDED}, timeout=10)
    await asyncio.sleep(1.0)
    assert (await RunStore(bus.runs).get(later.id)).snap.state == RunState.PENDING
    status = await client.status(worker.grpc_endpoint)
    assert status.draining
    # Leave nothing queued for other tests on this tag.
    await RunStore(bus.runs).request_cancel(later.id)


async def test_registry_advertises_the_endpoint(bus, worker, client):
    import orjson

    entry = await (await bus.js.key_value("rota_workers")).get(worker.worker_id)
    endpoint = orjson.loads(entry.value)["grpc_endpoint"]
    assert endpoint == worker.grpc_endpoint
    reply, _ = await client.ping(endpoint)
    assert reply.worker_id == worker.worker_id


def test_generated_stubs_are_current():
    import subprocess

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
