"""The control plane's TLS files.

:class:`TlsFiles` reads the three PEM files of an identity (``tls.crt``,
``tls.key``, ``ca.crt``) and notices when they change on disk (``rota certs
init`` replaces them in place; in a pod, the kubelet swaps a mounted Secret's
files by a symlink when cert-manager renews it), so servers and clients pick up
new certificates without a restart. Making certificates is :mod:`rota.control.certs`' job; this module
stays light, as every worker imports it.

Every node certificate carries the DNS name :data:`CLUSTER_NAME` besides the
node's own names, and clients verify the server against that name. The trust
boundary is the CA: any certificate it signed belongs to the cluster, whatever
address the worker advertises (pod IPs change; certificates issued by
cert-manager for a Deployment are shared by its pods).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rota.errors import RotaError

log = logging.getLogger(__name__)

#: The name every node certificate carries and every client verifies.
CLUSTER_NAME = "rota"


class TlsError(RotaError):
    pass


@dataclass(frozen=True)
class TlsMaterial:
    key: bytes
    cert: bytes
    ca: bytes


class TlsFiles:
    """The three PEM files of one identity, re-read when they change on disk.

    A Secret mounted in a pod changes by a symlink swap: the kubelet writes the
    new files into a new directory and renames a ``..data`` link over the old
    one, and ``tls.crt`` and friends are links through ``..data``. So a file is
    known by what its path resolves to (device, inode) as well as by its mtime
    and size, the three files are read again if they changed while being read
    (else a certificate of one renewal could be paired with the key of
    another), and a key that does not belong to its certificate is never taken
    (a renewal half done, or files written one by one): the last good pair is
    kept and the files are looked at again on the next call.
    """

    #: Attempts at a consistent read while the files keep changing under us.
    READ_ATTEMPTS = 5

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self.paths = (Path(cert), Path(key), Path(ca))
        self._stamp: tuple[tuple[int, ...], ...] | None = None
        self._material: TlsMaterial | None = None
        # Files seen with a key that does not fit: not taken, not looked at
        # again until they change once more.
        self._rejected: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def from_settings(cls, settings) -> TlsFiles:
        return cls(settings.tls_cert_path, settings.tls_key_path, settings.tls_ca_path)

    def _current_stamp(self) -> tuple[tuple[int, ...], ...]:
        stamps = []
        for p in self.paths:
            try:
                st = p.stat()  # follows the symlinks to the file they name now
            except FileNotFoundError:
                raise TlsError(
                    f"TLS file {p} does not exist",
                    hint="run `rota certs init --dir DIR` and set ROTA_TLS_DIR, or mount the certificates there",
                ) from None
            stamps.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def _read_consistent(self) -> tuple[tuple[tuple[int, ...], ...], TlsMaterial]:
        for _ in range(self.READ_ATTEMPTS):
            stamp = self._current_stamp()
            cert, key, ca = (p.read_bytes() for p in self.paths)
            if self._current_stamp() == stamp:
                return stamp, TlsMaterial(key=key, cert=cert, ca=ca)
        raise TlsError(f"TLS files {self.paths[0].parent} keep changing while being read")

    def load(self) -> TlsMaterial:
        """The current material, re-read if any file changed since the last call."""
        if self._material is not None and self._current_stamp() in (self._stamp, self._rejected):
            return self._material
        stamp, material = self._read_consistent()
        if not key_fits_certificate(material):
            if self._material is not None:
                log.warning(
                    "TLS files in %s: the key does not fit the certificate; keeping the current pair",
                    self.paths[0].parent,
                )
                self._rejected = stamp
                return self._material
            raise TlsError(
                f"{self.paths[1]} does not belong to the certificate {self.paths[0]}",
                hint="write the key and certificate of one node together "
                "(`rota certs init`, or a cert-manager Certificate's Secret)",
            )
        self._material, self._stamp = material, stamp
        return material

    def changed(self) -> bool:
        """True if the files differ from what :meth:`load` returned last."""
        try:
            return self._current_stamp() not in (self._stamp, self._rejected)
        except TlsError:
            return False  # a renewal in progress; keep what works


def key_fits_certificate(material: TlsMaterial) -> bool:
    """True if the private key is the one the certificate was issued for. False
    also for PEM that does not parse (a file caught half written)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        cert_key = x509.load_pem_x509_certificate(material.cert).public_key()
        key = serialization.load_pem_private_key(material.key, password=None)
    except (ValueError, TypeError):
        return False
    return cert_key.public_bytes(*der) == key.public_key().public_bytes(*der)
