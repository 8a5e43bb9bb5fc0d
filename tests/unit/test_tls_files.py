"""TlsFiles against a Secret volume as the kubelet updates it (symlink swap)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rota.control.certs import make_ca, make_node_cert
from rota.control.tls import TlsError, TlsFiles, TlsMaterial
from tests.secret_volume import SecretVolume


@pytest.fixture(scope="module")
def ca():
    return make_ca()


def _node(ca, name: str) -> dict[str, bytes]:
    key, cert = make_node_cert(ca[0], ca[1], [name])
    return {"tls.crt": cert, "tls.key": key, "ca.crt": ca[1]}


def _files(root: Path) -> TlsFiles:
    return TlsFiles(root / "tls.crt", root / "tls.key", root / "ca.crt")


def _subject(m: TlsMaterial) -> str:
    return x509.load_pem_x509_certificate(m.cert).subject.rfc4514_string()


def _pair_matches(m: TlsMaterial) -> bool:
    cert_pub = x509.load_pem_x509_certificate(m.cert).public_key()
    key_pub = serialization.load_pem_private_key(m.key, password=None).public_key()
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert_pub.public_bytes(*der) == key_pub.public_bytes(*der)


def test_a_swap_of_the_data_link_is_noticed_and_read(ca, tmp_path):
    vol = SecretVolume(tmp_path / "tls")
    vol.write(_node(ca, "first"))
    tls = _files(vol.root)
    assert _subject(tls.load()) == "CN=first"
    assert not tls.changed()
    vol.write(_node(ca, "second"))
    assert tls.changed()
    assert _subject(tls.load()) == "CN=second"
    assert not tls.changed()


def test_a_swap_while_the_files_are_read_gives_no_mixed_pair(ca, tmp_path, monkeypatch):
    vol = SecretVolume(tmp_path / "tls")
    vol.write(_node(ca, "first"))
    renewal = _node(ca, "second")
    read_bytes = Path.read_bytes
    swapped = []

    def read_then_renew(self: Path) -> bytes:
        data = read_bytes(self)
        if self.name == "tls.crt" and not swapped:  # the kubelet swaps between two reads
            swapped.append(True)
            vol.write(renewal)
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_renew)
    material = _files(vol.root).load()
    assert swapped
    assert _pair_matches(material), "certificate of one renewal, key of another"
    assert _subject(material) == "CN=second"


def test_a_key_that_does_not_fit_the_certificate_is_not_taken(ca, tmp_path):
    vol = SecretVolume(tmp_path / "tls")
    first, second = _node(ca, "first"), _node(ca, "second")
    vol.write(first)
    tls = _files(vol.root)
    tls.load()
    vol.write({**second, "tls.key": first["tls.key"]})  # a half-done renewal
    assert _subject(tls.load()) == "CN=first"  # keeps what works
    assert not tls.changed()  # no reload on every call while the files stay wrong
    vol.write(second)
    assert tls.changed()
    assert _subject(tls.load()) == "CN=second"


def test_a_first_load_of_a_mismatched_pair_says_so(ca, tmp_path):
    vol = SecretVolume(tmp_path / "tls")
    first, second = _node(ca, "first"), _node(ca, "second")
    vol.write({**first, "tls.key": second["tls.key"]})
    with pytest.raises(TlsError, match="does not belong"):
        _files(vol.root).load()
