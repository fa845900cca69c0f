"""The fleet's TLS material: a private CA, the broker's server certificate, gateway client certificates.

The only module that imports ``cryptography``. Keys are ECDSA P-256: Debian's Mosquitto 2.0.11 with
OpenSSL 3 accepts it for server and client certificates (tested), and every MQTT client library's TLS
stack does, unlike Ed25519 certificates, which older embedded TLS stacks refuse.

Everything lives under the data directory's ``tls/`` (keys 0600). The CA is made once and lives 20 years:
gateways carry its certificate, so a new CA means re-enrolling every gateway. The server certificate lives
about a year and is renewed at start when it expires within 30 days, names other hosts than asked for, or
was not signed by the current CA. Client certificates (CN = gateway id, 5 years) are issued on enrolment;
the private key goes into the gateway's credentials file only. Revoked client certificates go into
``crl.pem``.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bmsgate.errors import BmsgateError
from bmsgate.fleet.server.datadir import write_private

__all__ = ["RENEW_BEFORE", "ClientCertificate", "FleetPki", "TlsError", "default_server_names"]

_LOGGER = logging.getLogger(__name__)

RENEW_BEFORE: Final = datetime.timedelta(days=30)
_CA_LIFETIME: Final = datetime.timedelta(days=20 * 365)
_SERVER_LIFETIME: Final = datetime.timedelta(days=397)
_CLIENT_LIFETIME: Final = datetime.timedelta(days=5 * 365)
_CRL_LIFETIME: Final = datetime.timedelta(days=3650)
_BACKDATE: Final = datetime.timedelta(minutes=5)
"""Certificates start a little in the past: a gateway whose clock lags a bit still accepts them."""


class TlsError(BmsgateError):
    """TLS material in the data directory is unreadable or damaged, or cannot be written."""


@dataclasses.dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A gateway's client certificate and its private key (both PEM)."""

    cert_pem: str
    key_pem: str
    serial: int


def default_server_names(extra: Iterable[str] = ()) -> list[str]:
    """The broker certificate's names: ``localhost``, ``127.0.0.1``, this host's name, then `extra`."""
    names = ["localhost", "127.0.0.1", socket.gethostname(), *extra]
    return list(dict.fromkeys(name.strip().lower() for name in names if name.strip()))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bmsgate fleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class FleetPki:
    """The CA and certificates in one ``tls/`` directory.

    Args:
        directory: the data directory's ``tls/`` (created by :class:`~bmsgate.fleet.server.datadir.DataDir`).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM): what gateways trust."""
        return self.directory / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        """The CA's private key."""
        return self.directory / "ca.key"

    @property
    def server_cert_file(self) -> Path:
        """The broker's certificate."""
        return self.directory / "server.pem"

    @property
    def server_key_file(self) -> Path:
        """The broker's private key."""
        return self.directory / "server.key"

    @property
    def crl_file(self) -> Path:
        """Revoked client certificates (PEM CRL)."""
        return self.directory / "crl.pem"

    def client_cert_file(self, gateway_id: str) -> Path:
        """The last client certificate issued to `gateway_id` (no key: that is the gateway's)."""
        return self.directory / "clients" / f"{gateway_id}.pem"

    # -- reading ----------------------------------------------------------------------------------------

    def _read_cert(self, path: Path) -> x509.Certificate | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TlsError(f"{path}: {exc.strerror or exc}") from exc
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise TlsError(f"{path}: not a PEM certificate ({exc})") from None

    def _read_key(self, path: Path) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise TlsError(f"{path}: {exc.strerror or exc}") from exc
        except (ValueError, TypeError) as exc:
            raise TlsError(f"{path}: not a PEM private key ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError(f"{path}: not an EC private key")
        return key

    @property
    def ca_pem(self) -> str:
        """The CA certificate as PEM text.

        Raises:
            TlsError: there is no CA yet (call :meth:`ensure_ca`) or it is unreadable.
        """
        certificate = self._read_cert(self.ca_file)
        if certificate is None:
            raise TlsError(f"{self.ca_file}: no fleet CA yet (start the server once or run `bmsgate fleet enroll`)")
        return _cert_pem(certificate)

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        certificate = self._read_cert(self.ca_file)
        if certificate is None:
            raise TlsError(f"{self.ca_file}: no fleet CA yet")
        return certificate, self._read_key(self.ca_key_file)

    # -- making -----------------------------------------------------------------------------------------

    def ensure_ca(self) -> bool:
        """Create the CA when missing (or expiring within 30 days); True when a new one was made."""
        current = self._read_cert(self.ca_file)
        if current is not None and self.ca_key_file.exists() and current.not_valid_after_utc - _now() > RENEW_BEFORE:
            return False
        if current is not None:
            _LOGGER.warning(
                "the fleet CA expires %s: making a new one; every gateway must be re-enrolled",
                current.not_valid_after_utc.date(),
            )
        key = _new_key()
        now = _now()
        name = _name("bmsgate fleet CA")
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        self._write(self.ca_key_file, _key_pem(key))
        self._write(self.ca_file, _cert_pem(certificate))
        return True

    def ensure_server_certificate(self, names: Sequence[str]) -> bool:
        """Make the broker's certificate for `names` unless a fitting one exists; True when it was renewed.

        Raises:
            TlsError: the CA is missing or damaged, or `names` is empty.
        """
        if not names:
            raise TlsError("the server certificate needs at least one host name")
        ca_cert, ca_key = self._ca()
        current = self._read_cert(self.server_cert_file)
        if current is not None and self.server_key_file.exists() and self._fits(current, ca_cert, names):
            return False
        key = _new_key()
        certificate = self._issue(
            ca_cert, ca_key, key, names[0], _SERVER_LIFETIME, ExtendedKeyUsageOID.SERVER_AUTH, alt_names=names
        )
        self._write(self.server_key_file, _key_pem(key))
        self._write(self.server_cert_file, _cert_pem(certificate))
        _LOGGER.info(
            "broker certificate issued for %s, valid until %s", ", ".join(names), certificate.not_valid_after_utc.date()
        )
        return True

    def issue_client_certificate(self, gateway_id: str) -> ClientCertificate:
        """A new client certificate with CN = `gateway_id` (the broker takes the CN as the user name).

        Raises:
            TlsError: the CA is missing or damaged.
        """
        ca_cert, ca_key = self._ca()
        key = _new_key()
        certificate = self._issue(ca_cert, ca_key, key, gateway_id, _CLIENT_LIFETIME, ExtendedKeyUsageOID.CLIENT_AUTH)
        cert_pem = _cert_pem(certificate)
        self._write(self.client_cert_file(gateway_id), cert_pem)
        return ClientCertificate(cert_pem, _key_pem(key), certificate.serial_number)

    def write_crl(self, revoked_serials: Iterable[int]) -> None:
        """Rewrite ``crl.pem`` listing `revoked_serials` (an empty list is a valid CRL too).

        Raises:
            TlsError: the CA is missing or damaged.
        """
        ca_cert, ca_key = self._ca()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + _CRL_LIFETIME)
        )
        for serial in sorted(set(revoked_serials)):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        self._write(self.crl_file, crl.public_bytes(serialization.Encoding.PEM).decode(), private=False)

    @staticmethod
    def _issue(
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        key: ec.EllipticCurvePrivateKey,
        common_name: str,
        lifetime: datetime.timedelta,
        usage: x509.ObjectIdentifier,
        *,
        alt_names: Sequence[str] = (),
    ) -> x509.Certificate:
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if alt_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(name) for name in alt_names]), critical=False
            )
        return builder.sign(ca_key, hashes.SHA256())

    @staticmethod
    def _fits(certificate: x509.Certificate, ca_cert: x509.Certificate, names: Sequence[str]) -> bool:
        if certificate.not_valid_after_utc - _now() <= RENEW_BEFORE:
            return False
        try:
            certificate.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        try:
            present = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        wanted = {_general_name(name) for name in names}
        return wanted == set(present)

    @staticmethod
    def _write(path: Path, text: str, *, private: bool = True) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_private(path, text)
            if not private:
                path.chmod(0o644)
        except OSError as exc:
            raise TlsError(f"{path}: {exc.strerror or exc}") from exc
