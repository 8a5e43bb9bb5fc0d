"""Making certificates for the control plane's mutual TLS (``rota certs init``).

A cluster CA and node certificates signed by it, with the cryptography library.
Every node certificate is good for both ends of a connection (serverAuth and
clientAuth), because the leader, the web server and the workers all call each
other with the same identity: membership of the cluster CA. Each also names
:data:`~rota.control.tls.CLUSTER_NAME`, the name clients verify.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rota.control.tls import CLUSTER_NAME


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name: str = "rota cluster CA", days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed CA: (key PEM, certificate PEM)."""
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), _cert_pem(cert)


def make_node_cert(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    names: list[str],
    *,
    days: int = 825,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A node certificate signed by the CA, for ``names`` plus the cluster name,
    localhost and 127.0.0.1: (key PEM, certificate PEM)."""
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = _key()
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = []
    seen: set[str] = set()
    for n in [*names, CLUSTER_NAME, "localhost", "127.0.0.1"]:
        if n in seen:
            continue
        seen.add(n)
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    common = names[0] if names else CLUSTER_NAME
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return _key_pem(key), _cert_pem(cert)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 600 (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_node(directory: Path, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> None:
    """Write ``tls.key``, ``tls.crt`` and ``ca.crt`` (the Kubernetes secret layout)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(directory / "ca.crt", ca_pem)
    write_private(directory / "tls.key", key_pem)
    write_private(directory / "tls.crt", cert_pem)


def init_certs(directory: Path, nodes: list[str] | None = None) -> list[Path]:
    """Create (or reuse) the CA in ``directory`` and write node certificates.

    ``directory/{tls.crt,tls.key,ca.crt}`` is a certificate for every node named
    (the shared one, as a Kubernetes Secret for all pods would be); each
    ``--node NAME`` also gets its own in ``directory/NAME/``. An existing CA is
    kept, so adding nodes later keeps the old certificates valid. Returns the
    directories written.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key_path, ca_cert_path = directory / "ca.key", directory / "ca.crt"
    if ca_key_path.exists() and ca_cert_path.exists():
        ca_key, ca_cert = ca_key_path.read_bytes(), ca_cert_path.read_bytes()
    else:
        ca_key, ca_cert = make_ca()
        write_private(ca_key_path, ca_key)
        write_private(ca_cert_path, ca_cert)
    nodes = nodes or []
    written = [directory]
    write_node(directory, *make_node_cert(ca_key, ca_cert, nodes), ca_cert)
    for node in nodes:
        sub = directory / node
        write_node(sub, *make_node_cert(ca_key, ca_cert, [node]), ca_cert)
        written.append(sub)
    return written
