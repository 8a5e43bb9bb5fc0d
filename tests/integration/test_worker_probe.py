"""`rota workers ping --local`, the exec probe of a worker pod, run as a real
process against a real worker over mutual TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rota.bus.server import free_port
from rota.control.certs import init_certs
from tests.conftest import running_worker
from tests.secret_volume import SecretVolume

pytestmark = pytest.mark.django_db(transaction=True)


async def _probe(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the probe as the kubelet would: a fresh process with the pod's variables."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rota",
        "workers",
        "ping",
        "--local",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def _pod_env(port: int, tls_dir: Path) -> dict[str, str]:
    # Nothing about NATS or the database: the probe must not need them.
    return {
        "ROTA_GRPC_PORT": str(port),
        "ROTA_TLS_DIR": str(tls_dir),
        "ROTA_NATS_URL": "nats://127.0.0.1:1",
        "ROTA_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
    }


async def test_probe_answers_while_the_worker_runs_and_fails_when_it_is_gone(
    rota_settings, tls_dir
):
    port = free_port()
    settings = dataclasses.replace(rota_settings, grpc_host="0.0.0.0", grpc_port=port)
    async with running_worker(settings, tags=["probe"], executors={}) as w:
        code, out, err = await _probe(_pod_env(port, tls_dir), "--count", "2")
        assert code == 0, err
        assert out.count(f"pong from {w.worker_id} at 127.0.0.1:{port}") == 2
    code, out, err = await _probe(_pod_env(port, tls_dir), "--timeout", "1")
    assert code == 2
    assert "no answer from the local worker" in err and "hint:" in err


async def test_probe_with_another_cas_certificate_fails(rota_settings, tls_dir, tmp_path):
    port = free_port()
    settings = dataclasses.replace(rota_settings, grpc_port=port)
    init_certs(tmp_path / "foreign", ["intruder"])
    async with running_worker(settings, tags=["probe"], executors={}):
        code, _, err = await _probe(_pod_env(port, tmp_path / "foreign"), "--timeout", "1")
    assert code == 2 and "no answer from the local worker" in err


async def test_probe_needs_a_fixed_port(tls_dir):
    code, _, err = await _probe(_pod_env(0, tls_dir))
    assert code == 2
    assert "ROTA_GRPC_PORT is 0" in err


# -- certificates as cert-manager issues them ------------------------------------------


def _ku(**on: bool) -> x509.KeyUsage:
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


def _cert_manager_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """What the Certificate rota-ca (isCA, ECDSA P-256) from the selfSigned
    Issuer looks like: CA:TRUE, keyUsage digitalSignature, keyEncipherment,
    certSign (cert-manager's defaults for a CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rota cluster CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            _ku(digital_signature=True, key_encipherment=True, key_cert_sign=True), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _cert_manager_node(ca_key, ca_cert) -> dict[str, bytes]:
    """The Secret rota-tls as the CA Issuer fills it for the Certificate rota-node
    (deploy/kubernetes/base/certificates.yaml): CN and the only DNS name "rota",
    keyUsage digitalSignature, extKeyUsage serverAuth and clientAuth; ca.crt the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rota")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_ku(digital_signature=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("rota")]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return {
        "tls.crt": cert.public_bytes(pem),
        "tls.key": key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "ca.crt": ca_cert.public_bytes(pem),
    }


async def test_a_pod_with_the_cert_manager_secret_serves_probes_and_calls_across_renewal(
    rota_settings, tmp_path
):
    """Every pod mounts the same rota-tls Secret: the worker serves with it, the
    probe and other pods call with it. cert-manager renews it (a new key, the
    kubelet swaps the files) and all of that goes on, with no restart."""
    from rota.control.client import ControlClient
    from rota.control.tls import TlsFiles

    ca_key, ca_cert = _cert_manager_ca()
    volume = SecretVolume(tmp_path / "rota-tls")
    volume.write(_cert_manager_node(ca_key, ca_cert))
    port = free_port()
    settings = dataclasses.replace(rota_settings, grpc_port=port, tls_dir=volume.root)
    peer = ControlClient(TlsFiles.from_settings(settings), retries=0, timeout=2)
    async with running_worker(settings, tags=["cm"], executors={}) as w:
        try:
            for _renewal in range(2):
                code, out, err = await _probe(_pod_env(port, volume.root))
                assert code == 0, err
                assert f"pong from {w.worker_id}" in out
                reply, _ = await peer.ping(w.grpc_endpoint)  # another pod, same Secret
                assert reply.worker_id == w.worker_id
                volume.write(_cert_manager_node(ca_key, ca_cert))
        finally:
            await peer.close()
