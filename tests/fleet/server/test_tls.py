"""The fleet PKI: a P-256 CA, the broker's certificate (names, renewal), client certificates, the CRL."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bmsgate.fleet.server.tls import RENEW_BEFORE, FleetPki, TlsError, default_server_names

NAMES = ["localhost", "127.0.0.1", "fleet.example"]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def pki(tmp_path: Path) -> FleetPki:
    pki = FleetPki(tmp_path / "tls")
    assert pki.ensure_ca() is True
    return pki


def test_ca_and_server_certificate_are_p256_with_the_names_and_private_keys(pki: FleetPki) -> None:
    assert pki.ensure_server_certificate(NAMES) is True
    ca, server = load(pki.ca_file), load(pki.server_cert_file)
    for certificate in (ca, server):
        public_key = certificate.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "fleet.example"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    for key in (pki.ca_key_file, pki.server_key_file):
        assert key.stat().st_mode & 0o777 == 0o600
    # Python's own TLS stack (the one the gateway's MQTT client uses) loads the chain and the key.
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.load_cert_chain(str(pki.server_cert_file), str(pki.server_key_file))


def test_the_server_certificate_is_kept_while_it_fits_and_renewed_otherwise(pki: FleetPki) -> None:
    assert pki.ensure_server_certificate(NAMES) is True
    first = pki.server_cert_file.read_bytes()
    assert pki.ensure_server_certificate(NAMES) is False
    assert pki.server_cert_file.read_bytes() == first
    assert pki.ensure_server_certificate([*NAMES, "other.example"]) is True
    assert pki.server_cert_file.read_bytes() != first


def test_an_expiring_server_certificate_is_renewed(pki: FleetPki, monkeypatch: pytest.MonkeyPatch) -> None:
    pki.ensure_server_certificate(NAMES)
    expires = load(pki.server_cert_file).not_valid_after_utc
    now = datetime.datetime.now(datetime.UTC)
    assert expires - now > datetime.timedelta(days=365)
    later = expires - RENEW_BEFORE + datetime.timedelta(hours=1)
    monkeypatch.setattr("bmsgate.fleet.server.tls._now", lambda: later)
    assert pki.ensure_server_certificate(NAMES) is True
    assert load(pki.server_cert_file).not_valid_after_utc > expires


def test_a_new_ca_means_a_new_server_certificate(pki: FleetPki, monkeypatch: pytest.MonkeyPatch) -> None:
    pki.ensure_server_certificate(NAMES)
    assert pki.ensure_ca() is False
    ca_expires = load(pki.ca_file).not_valid_after_utc
    monkeypatch.setattr("bmsgate.fleet.server.tls._now", lambda: ca_expires - datetime.timedelta(days=1))
    assert pki.ensure_ca() is True
    assert pki.ensure_server_certificate(NAMES) is True
    load(pki.server_cert_file).verify_directly_issued_by(load(pki.ca_file))


def test_client_certificates_carry_the_gateway_id_and_revoked_ones_the_crl(pki: FleetPki) -> None:
    issued = pki.issue_client_certificate("site-042")
    certificate = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "site-042"
    assert certificate.serial_number == issued.serial
    certificate.verify_directly_issued_by(load(pki.ca_file))
    assert "PRIVATE KEY" in issued.key_pem
    assert "PRIVATE KEY" not in pki.client_cert_file("site-042").read_text()
    pki.write_crl([issued.serial])
    crl = x509.load_pem_x509_crl(pki.crl_file.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(issued.serial) is not None
    assert crl.is_signature_valid(load(pki.ca_file).public_key())  # type: ignore[arg-type]


def test_damaged_or_missing_material_is_a_clear_error(tmp_path: Path) -> None:
    pki = FleetPki(tmp_path / "tls")
    with pytest.raises(TlsError, match="no fleet CA"):
        pki.issue_client_certificate("gw")
    with pytest.raises(TlsError, match="no fleet CA"):
        _ = pki.ca_pem
    pki.ensure_ca()
    pki.ca_file.write_text("not a certificate")
    with pytest.raises(TlsError, match="not a PEM certificate"):
        pki.ensure_server_certificate(NAMES)
    with pytest.raises(TlsError, match="at least one"):
        pki.ensure_server_certificate([])


def test_default_names_start_with_localhost_and_have_no_duplicates() -> None:
    names = default_server_names(["LOCALHOST", "fleet.example", " "])
    assert names[:2] == ["localhost", "127.0.0.1"]
    assert names.count("localhost") == 1
    assert "fleet.example" in names and "" not in names
