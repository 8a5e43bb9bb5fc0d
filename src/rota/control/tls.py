"""The control plane's TLS files.

:class:`TlsFiles` reads the three PEM files of an identity (``tls.crt``,
``tls.key``, ``ca.crt``) and notices when they change on disk (cert-manager
renews them in place), so servers and clients pick up new certificates without a
restart. Making certificates is :mod:`rota.control.certs`' job; this module
stays light, as every worker imports it.

Every node certificate carries the DNS name :data:`CLUSTER_NAME` besides the
node's own names, and clients verify the server against that name. The trust
boundary is the CA: any certificate it signed belongs to the cluster, whatever
address the worker advertises (pod IPs change; certificates issued by
cert-manager for a Deployment are shared by its pods).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rota.errors import RotaError

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
    """The three PEM files of one identity, re-read when they change on disk."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self.paths = (Path(cert), Path(key), Path(ca))
        self._stamp: tuple[tuple[int, int], ...] | None = None
        self._material: TlsMaterial | None = None

    @classmethod
    def from_settings(cls, settings) -> TlsFiles:  # type: ignore[no-untyped-def]
        return cls(settings.tls_cert_path, settings.tls_key_path, settings.tls_ca_path)

    def _current_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for p in self.paths:
            try:
                st = p.stat()
            except FileNotFoundError:
                raise TlsError(
                    f"TLS file {p} does not exist",
                    hint="run `rota certs init --dir DIR` and set ROTA_TLS_DIR, or mount the certificates there",
                ) from None
            stamps.append((st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def load(self) -> TlsMaterial:
        """The current material, re-read if any file changed since the last call."""
        stamp = self._current_stamp()
        if self._material is None or stamp != self._stamp:
            cert, key, ca = (p.read_bytes() for p in self.paths)
            self._material = TlsMaterial(key=key, cert=cert, ca=ca)
            self._stamp = stamp
        return self._material

    def changed(self) -> bool:
        """True if the files differ from what :meth:`load` returned last."""
        try:
            return self._current_stamp() != self._stamp
        except TlsError:
            return False  # a renewal in progress; keep what works
