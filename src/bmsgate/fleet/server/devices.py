"""Enrolled gateways (``devices.json``) and enrolment: credentials for one gateway, rotation, revocation.

``devices.json`` keeps per gateway its id, when it was enrolled, whether it is revoked, the ``$7$`` hash of
its broker password and the serial of its client certificate; never a plain password or a private key.
Those go into the one credentials file :func:`enroll_gateway` returns. Re-enrolling rotates: a new
password, a new certificate, and the old certificate's serial joins the revoked list (the CRL), so a copy
of an old credentials file stops working.

The broker's password file and ACL are generated from this file (see ``broker.py``): changing it and
then calling ``broker.apply_device_changes`` is what makes an enrolment or a revocation take effect.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from bmsgate.errors import BmsgateError
from bmsgate.fleet.credentials import GatewayCredentials
from bmsgate.fleet.protocol import GATEWAY_ID_PATTERN, is_gateway_id
from bmsgate.fleet.server.datadir import DataDir, write_private
from bmsgate.fleet.server.passwords import PasswordFormatError, check_hash, hash_password, new_password
from bmsgate.fleet.server.tls import FleetPki

__all__ = ["Device", "DeviceError", "DeviceRegistry", "enroll_gateway"]

_VERSION: Final = 1
_MAX_FILE_BYTES: Final = 64 * 1024 * 1024


class DeviceError(BmsgateError):
    """``devices.json`` is damaged, or a gateway id is not valid or not enrolled."""


@dataclasses.dataclass(frozen=True, slots=True)
class Device:
    """One enrolled gateway as the server keeps it."""

    gateway_id: str
    enrolled_at: float
    revoked: bool = False
    revoked_at: float | None = None
    password_hash: str | None = None
    """``$7$`` hash of its broker password (None: it authenticates by certificate only, or is revoked)."""
    cert_serial: int | None = None
    """Serial of its current client certificate, if it has one."""
    revoked_serials: tuple[int, ...] = ()
    """Serials of its earlier certificates (rotated or revoked): listed in the CRL."""

    @property
    def active(self) -> bool:
        """Whether the broker lets it in."""
        return not self.revoked


def _check_id(gateway_id: str) -> str:
    if not is_gateway_id(gateway_id):
        raise DeviceError(
            f"not a gateway id: {gateway_id!r} (lower-case letters, digits, - and _; {GATEWAY_ID_PATTERN})"
        )
    return gateway_id


def _device_from(gateway_id: str, entry: Any) -> Device:
    if not isinstance(entry, dict):
        raise TypeError("entry is not an object")
    password_hash = entry.get("password_hash")
    cert_serial = entry.get("cert_serial")
    revoked_at = entry.get("revoked_at")
    return Device(
        gateway_id=_check_id(gateway_id),
        enrolled_at=float(entry["enrolled_at"]),
        revoked=bool(entry.get("revoked", False)),
        revoked_at=None if revoked_at is None else float(revoked_at),
        password_hash=None if password_hash is None else check_hash(str(password_hash)),
        cert_serial=None if cert_serial is None else int(cert_serial),
        revoked_serials=tuple(int(serial) for serial in entry.get("revoked_serials", ())),
    )


def _entry(device: Device) -> dict[str, Any]:
    entry: dict[str, Any] = {"enrolled_at": device.enrolled_at, "revoked": device.revoked}
    optional = {
        "revoked_at": device.revoked_at,
        "password_hash": device.password_hash,
        "cert_serial": device.cert_serial,
    }
    entry.update((key, value) for key, value in optional.items() if value is not None)
    if device.revoked_serials:
        entry["revoked_serials"] = list(device.revoked_serials)
    return entry


class DeviceRegistry:
    """``devices.json`` of one data directory: changes are locked (threads and processes) and written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the registry for a read-modify-write, against other threads *and* other processes.

        ``bmsgate fleet enroll`` runs beside a server that may enrol through its API: without the lock one
        of two concurrent enrolments would be lost.
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._lock:
            try:
                descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise DeviceError(f"{lock_path}: {exc.strerror or exc}") from exc
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                yield
            finally:
                os.close(descriptor)  # closing releases the lock

    def load(self) -> dict[str, Device]:
        """Every gateway ever enrolled, by id (revoked ones included).

        Raises:
            DeviceError: the file is unreadable or damaged (nothing is guessed: the broker keeps its files).
        """
        try:
            with self.path.open("rb") as file:
                raw = file.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise DeviceError(f"{self.path}: {exc.strerror or exc}") from exc
        if len(raw) > _MAX_FILE_BYTES:
            raise DeviceError(f"{self.path}: larger than {_MAX_FILE_BYTES} bytes")
        try:
            data = json.loads(raw)
            version = data.get("v")
            devices = {gateway_id: _device_from(gateway_id, entry) for gateway_id, entry in data["devices"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, DeviceError, PasswordFormatError) as exc:
            raise DeviceError(f"{self.path}: damaged device file ({exc})") from None
        if version != _VERSION:
            raise DeviceError(f"{self.path}: unknown device file version {version!r}")
        return devices

    def list(self) -> list[Device]:
        """Every gateway, oldest enrolment first."""
        return sorted(self.load().values(), key=lambda device: (device.enrolled_at, device.gateway_id))

    def get(self, gateway_id: str) -> Device | None:
        """One gateway, or None when it was never enrolled."""
        return self.load().get(gateway_id)

    def _save(self, devices: dict[str, Device]) -> None:
        data = {"v": _VERSION, "devices": {gateway_id: _entry(devices[gateway_id]) for gateway_id in sorted(devices)}}
        try:
            write_private(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise DeviceError(f"{self.path}: {exc.strerror or exc}") from exc

    def enroll(self, gateway_id: str, *, password_hash: str | None, cert_serial: int | None) -> Device:
        """Record (or re-record) `gateway_id` with new credentials; an earlier certificate is revoked.

        Raises:
            DeviceError: the id is not valid or the file is damaged.
        """
        _check_id(gateway_id)
        with self._exclusive():
            devices = self.load()
            earlier = devices.get(gateway_id)
            revoked = list(earlier.revoked_serials) if earlier else []
            if earlier is not None and earlier.cert_serial is not None:
                revoked.append(earlier.cert_serial)
            device = Device(
                gateway_id=gateway_id,
                enrolled_at=time.time(),
                password_hash=password_hash,
                cert_serial=cert_serial,
                revoked_serials=tuple(revoked),
            )
            devices[gateway_id] = device
            self._save(devices)
        return device

    def revoke(self, gateway_id: str) -> Device:
        """Revoke `gateway_id`: its password hash is dropped and its certificate joins the CRL.

        Raises:
            DeviceError: it was never enrolled, or the file is damaged.
        """
        with self._exclusive():
            devices = self.load()
            device = devices.get(_check_id(gateway_id))
            if device is None:
                raise DeviceError(f"gateway {gateway_id!r} is not enrolled")
            serials = [*device.revoked_serials, *(() if device.cert_serial is None else (device.cert_serial,))]
            devices[gateway_id] = dataclasses.replace(
                device,
                revoked=True,
                revoked_at=device.revoked_at or time.time(),
                password_hash=None,
                cert_serial=None,
                revoked_serials=tuple(serials),
            )
            self._save(devices)
            return devices[gateway_id]

    def revoked_serials(self) -> set[int]:
        """Every client certificate serial that must no longer be accepted."""
        return {serial for device in self.load().values() for serial in device.revoked_serials}


def enroll_gateway(
    data: DataDir,
    gateway_id: str,
    *,
    broker_url: str,
    client_cert: bool = False,
    server_url: str | None = None,
) -> GatewayCredentials:
    """Enrol (or re-enrol, rotating its secrets) one gateway and return its credentials.

    With `client_cert` the gateway gets a certificate (CN = its id) and no password; `broker_url` must
    then be the broker's certificate listener. The caller writes the credentials file and then applies
    the change to the broker (``broker.apply_device_changes``).

    Raises:
        DeviceError: the id is not valid or ``devices.json`` is damaged.
        TlsError: the CA cannot be made or read.
    """
    _check_id(gateway_id)
    pki = FleetPki(data.tls_dir)
    pki.ensure_ca()
    registry = DeviceRegistry(data.devices_file)
    uses_tls = broker_url.startswith("mqtts://")
    if client_cert:
        if not uses_tls:
            raise DeviceError("a client certificate needs a TLS broker URL (mqtts://)")
        issued = pki.issue_client_certificate(gateway_id)
        registry.enroll(gateway_id, password_hash=None, cert_serial=issued.serial)
        pki.write_crl(registry.revoked_serials())
        return GatewayCredentials.model_validate(
            {
                "gateway": gateway_id,
                "broker_url": broker_url,
                "username": gateway_id,
                "ca_pem": pki.ca_pem,
                "cert_pem": issued.cert_pem,
                "key_pem": issued.key_pem,
                "server_url": server_url,
            }
        )
    password = new_password()
    registry.enroll(gateway_id, password_hash=hash_password(password), cert_serial=None)
    pki.write_crl(registry.revoked_serials())
    return GatewayCredentials.model_validate(
        {
            "gateway": gateway_id,
            "broker_url": broker_url,
            "username": gateway_id,
            "password": password,
            "ca_pem": pki.ca_pem if uses_tls else None,
            "server_url": server_url,
        }
    )
