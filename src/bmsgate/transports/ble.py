"""Bluetooth LE transport on bleak and bleak-retry-connector (the only module importing either).

Connecting (`BleConnection`):

1. On BlueZ, drop a connection a crashed earlier run left behind (a connected device stops advertising).
2. Scan for the device by MAC or by advertised name (``scan_timeout``), which also yields its RSSI. A
   MAC that is not heard (some JBD packs stop advertising when idle) is looked up in BlueZ's cache.
3. Connect with bleak-retry-connector's ``establish_connection`` (its own short retries for BlueZ's
   transient errors), pairing first when the definition requires it or a PIN is configured.
4. Read the GATT tree.

`BleTransport` then picks the protocol's write and notify characteristics (by UUID *and* properties,
so two characteristics sharing one UUID are told apart), writes the profile's connect-time frames to their
own characteristics (engine 6, ``connect_writes``), answers the keep-alive notifications of any
``answer_notify`` ones by itself (`bmsgate.transports.answers`; they never join the stream), runs the profile's
challenge–response with the battery's secret (engine 7, ``authenticate``; `bmsgate.protocols.gattauth` computes
it), subscribes to the notify characteristic and any ``also_notify`` ones (their notifications are one stream of
chunks, each behind its characteristic's tag when the profile has ``tags``), and writes with or without
response. In ``write_mode: auto`` a request that gets no reply at all makes the next write use the
other mode; the first mode that gets a reply is remembered for the transport's lifetime (reconnects
included). `open()` retries the whole sequence a bounded number of times with exponential backoff and
jitter (`ReconnectPolicy`); between polls, reconnecting is the caller's job (BatteryClient reconnects on
its next poll, the supervisor spaces polls with the same policy).

Every library failure becomes one of ours (`ConnectError`, `DeviceTimeout`, `AuthenticationError`,
`TransportError`) with the original chained. The bleak client class and the scanner are constructor
parameters so tests run against `bmsgate.testing`'s fakes.

Why one long module: it is the only place that may import bleak (principle: one adapter per library), and
connecting, characteristic choice, write-mode fallback and error mapping all handle bleak objects.
The pure decisions (which characteristic, which protocol) live in `transports/discovery.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol, cast

import bleak_retry_connector
from bleak import BleakClient, BleakScanner
from bleak.args.bluez import BlueZClientArgs, BlueZScannerArgs
from bleak.exc import (
    BleakCharacteristicNotFoundError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)

from bmsgate.errors import AuthenticationError, ConnectError, DeviceError, DeviceTimeout, TransportError
from bmsgate.protocols.compiled import CompiledProtocol
from bmsgate.protocols.gattauth import challenge_response, configured_key, is_accepted
from bmsgate.runtime.backoff import exponential_delay
from bmsgate.transports.answers import NotificationAnswerer
from bmsgate.transports.base import Transport
from bmsgate.transports.discovery import (
    Advertisement,
    CharacteristicSelection,
    GattCharacteristic,
    GattDescriptor,
    GattService,
    GattTree,
    WriteMode,
    select_characteristics,
    short_uuid,
    write_mode_order,
)

__all__ = [
    "BleConnection",
    "BleDevice",
    "BleScanner",
    "BleTransport",
    "BleakCharacteristicNotFoundError",
    "BleakDBusError",
    "BleakDeviceNotFoundError",
    "BleakError",
    "BleakGATTProtocolError",
    "ClientFactory",
    "ClientLike",
    "ReconnectPolicy",
    "ScannerFactory",
    "ScannerLike",
    "bleak_scanner",
    "map_ble_error",
]
# The bleak exception types are re-exported so that fakes (bmsgate.testing) can raise the real ones
# without importing bleak themselves.

_LOGGER = logging.getLogger(__name__)

_IS_LINUX: Final = sys.platform.startswith("linux")
_DISCONNECT_TIMEOUT: Final = 5.0
PAIRING_HINT: Final = "check the PIN (transport.pin) or pair it once with the system's Bluetooth tools"
KEY_HINT: Final = "check the battery's 'secret' (the key the device authenticates with) or pair it once"
_LATE_VERDICT_WAIT: Final = 0.25
"""Seconds a verdict notified while the authentication response was being written waits for a later one."""
_WRITE_TIMEOUT: Final = 5.0
_ATT_HEADER: Final = 3
_AUTH_CODES: Final = frozenset(
    {
        BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION,
        BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHORIZATION,
        BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION,
        BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION_KEY_SIZE,
    }
)
_AUTH_MARKERS: Final = (
    "authenticationfailed",
    "authenticationrejected",
    "authenticationcanceled",
    "authenticationtimeout",
    "insufficient authentication",
    "insufficient encryption",
    "insufficient authorization",
    "pin or key missing",
    "notauthorized",
)
_MISSING_MARKERS: Final = ("not found", "does not exist", "unknownobject")


# -- the slice of bleak we use, as structural types (bleak's classes and the fakes both satisfy them) --


class BleDevice(Protocol):
    """What a scan yields and a connect consumes (bleak's ``BLEDevice``)."""

    @property
    def address(self) -> str: ...  # noqa: D102

    @property
    def name(self) -> str | None: ...  # noqa: D102

    @property
    def details(self) -> Any: ...  # noqa: D102


class AdvertisementLike(Protocol):
    """bleak's ``AdvertisementData``."""

    @property
    def local_name(self) -> str | None: ...

    @property
    def manufacturer_data(self) -> Mapping[int, bytes]: ...

    @property
    def service_data(self) -> Mapping[str, bytes]: ...

    @property
    def service_uuids(self) -> Sequence[str]: ...

    @property
    def tx_power(self) -> int | None: ...

    @property
    def rssi(self) -> int: ...


class DescriptorLike(Protocol):
    """bleak's ``BleakGATTDescriptor``."""

    @property
    def uuid(self) -> str: ...

    @property
    def handle(self) -> int: ...


class CharacteristicLike(Protocol):
    """bleak's ``BleakGATTCharacteristic``."""

    @property
    def uuid(self) -> str: ...

    @property
    def handle(self) -> int: ...

    @property
    def properties(self) -> Sequence[str]: ...

    @property
    def descriptors(self) -> Sequence[DescriptorLike]: ...


class ServiceLike(Protocol):
    """bleak's ``BleakGATTService``."""

    @property
    def uuid(self) -> str: ...

    @property
    def handle(self) -> int: ...

    @property
    def characteristics(self) -> Sequence[CharacteristicLike]: ...


class ClientLike(Protocol):
    """The part of ``bleak.BleakClient`` this module uses."""

    @property
    def address(self) -> str: ...  # noqa: D102

    @property
    def is_connected(self) -> bool: ...  # noqa: D102

    @property
    def mtu_size(self) -> int: ...  # noqa: D102

    @property
    def services(self) -> Iterable[ServiceLike]: ...  # noqa: D102

    async def connect(self, **kwargs: Any) -> None: ...  # noqa: D102

    async def disconnect(self) -> None: ...  # noqa: D102

    async def read_gatt_char(self, char_specifier: int) -> bytearray: ...  # noqa: D102

    async def write_gatt_char(self, char_specifier: int, data: bytes, response: bool) -> None: ...  # noqa: D102

    async def start_notify(self, char_specifier: int, callback: Callable[[Any, bytearray], None]) -> None: ...  # noqa: D102

    async def stop_notify(self, char_specifier: int) -> None: ...  # noqa: D102


class ScannerLike(Protocol):
    """The part of ``bleak.BleakScanner`` this module uses (detections arrive via the callback)."""

    async def start(self) -> None: ...  # noqa: D102

    async def stop(self) -> None: ...  # noqa: D102


DetectionCallback = Callable[[Any, Any], None]
ClientFactory = Callable[..., ClientLike]
"""Called like ``BleakClient(device, disconnected_callback=..., pair=..., timeout=..., bluez=...)``."""
ScannerFactory = Callable[[DetectionCallback, str | None], ScannerLike]
"""``(detection_callback, adapter) -> scanner``."""


def bleak_scanner(callback: DetectionCallback, adapter: str | None) -> ScannerLike:
    """The real scanner, on `adapter` (``hci0``...) where the platform allows choosing one."""
    bluez = BlueZScannerArgs(adapter=adapter) if adapter else BlueZScannerArgs()
    return BleakScanner(callback, bluez=bluez)


_DEFAULT_CLIENT: Final[ClientFactory] = bleak_retry_connector.BleakClientWithServiceCache


# -- errors ----------------------------------------------------------------------------------------------


def _library_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [BleakError, TimeoutError, EOFError, OSError, AttributeError]
    with contextlib.suppress(ImportError):
        from dbus_fast.errors import DBusError  # noqa: PLC0415 - only present where BlueZ is

        errors.append(DBusError)
    return tuple(errors)


_LIBRARY_ERRORS: Final = _library_errors()
"""What bleak and its D-Bus layer raise. AttributeError: bleak dereferences a dropped link's objects."""


def _is_auth_error(exc: BaseException) -> bool:
    if isinstance(exc, BleakGATTProtocolError) and exc.code in _AUTH_CODES:
        return True
    text = str(exc).lower()
    compact = text.replace(" ", "")
    return any(marker in text or marker.replace(" ", "") in compact for marker in _AUTH_MARKERS)


def _write_refused(exc: BaseException) -> bool:
    """The BMS (or the stack) refused this kind of write, or never acknowledged it."""
    if isinstance(exc, TimeoutError | BleakGATTProtocolError):
        return True
    return isinstance(exc, BleakDBusError) and any(
        name in exc.dbus_error for name in ("NotPermitted", "NotSupported", "Failed")
    )


_NO_BLUEZ_MARKER: Final = "org.bluez was not provided"
"""D-Bus's answer when bluetoothd is not running."""


def map_ble_error(
    exc: BaseException,
    *,
    action: str,
    description: str,
    battery_id: str | None = None,
    fallback: type[TransportError] = ConnectError,
    hint: str = PAIRING_HINT,
) -> DeviceError:
    """Translate a bleak / BlueZ / D-Bus failure into a bmsgate error (the caller chains it).

    Args:
        exc: what the library raised.
        action: what we were doing, for the message (``connecting``, ``writing``...).
        description: the device, for the message.
        battery_id: carried by the error.
        fallback: the type for failures that are neither authentication, timeout nor a lost device
            (`TransportError` for a failed write on a link that is still up).
        hint: what to check when the BMS refused authentication (`KEY_HINT` for a protocol with a key).
    """
    if isinstance(exc, DeviceError):
        return exc
    detail = str(exc) or type(exc).__name__
    where = f"{description}: {action}"
    if _is_auth_error(exc):
        return AuthenticationError(
            f"{where} failed: the BMS refused authentication ({detail}); {hint}", battery_id=battery_id
        )
    if isinstance(exc, TimeoutError):
        return DeviceTimeout(f"{where} timed out", battery_id=battery_id)
    if isinstance(exc, BleakDeviceNotFoundError | bleak_retry_connector.BleakNotFoundError) or any(
        marker in detail.lower() for marker in _MISSING_MARKERS
    ):
        return ConnectError(
            f"{where} failed: device not found ({detail}); is it in range, powered, and not connected to a phone?",
            battery_id=battery_id,
        )
    if isinstance(exc, FileNotFoundError | PermissionError) or _NO_BLUEZ_MARKER in detail.lower():
        # No D-Bus system socket, no bluetoothd, no adapter, or no permission: nothing a retry fixes.
        return ConnectError(
            f"{where} failed: no usable Bluetooth adapter ({detail}); is there an adapter, is bluetoothd "
            "running, and is this user in the 'bluetooth' group? (see docs/deployment.md)",
            battery_id=battery_id,
        )
    if isinstance(exc, EOFError | BrokenPipeError | ConnectionError):
        return ConnectError(f"{where} failed: lost the Bluetooth stack (D-Bus): {detail}", battery_id=battery_id)
    return fallback(f"{where} failed: {detail}", battery_id=battery_id)


# -- reconnect policy ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectPolicy:
    """Exponential backoff with jitter between connection attempts.

    `BleTransport.open` makes at most `attempts` tries, sleeping ``delay(n)`` after the n-th failure
    (0-based). The supervisor can use :meth:`delay` between failed polls too. Jitter (± `jitter` × delay)
    keeps several packs that dropped together (adapter reset) from reconnecting in lock-step.

    Attributes:
        attempts: connection attempts per `open()` (1 = no retry).
        initial_delay: seconds after the first failure.
        factor: growth per further failure.
        max_delay: cap, seconds.
        jitter: relative spread, 0..1.
    """

    attempts: int = 3
    initial_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after `failures` + 1 consecutive failures."""
        return exponential_delay(
            failures,
            initial=self.initial_delay,
            maximum=self.max_delay,
            factor=self.factor,
            jitter=self.jitter,
            rng=rng,
        )


# -- scanning ---------------------------------------------------------------------------------------------


def _advertisement(device: BleDevice, data: AdvertisementLike) -> Advertisement:
    return Advertisement(
        address=device.address,
        name=data.local_name or device.name,
        rssi=data.rssi,
        service_uuids=tuple(data.service_uuids),
        manufacturer_data={company: bytes(payload) for company, payload in data.manufacturer_data.items()},
        service_data={uuid: bytes(payload) for uuid, payload in data.service_data.items()},
        tx_power=data.tx_power,
    )


class BleScanner:
    """Scans for advertisements (for ``bmsgate scan`` and for connecting by name)."""

    def __init__(self, *, adapter: str | None = None, scanner_factory: ScannerFactory = bleak_scanner) -> None:
        self.adapter = adapter
        self._factory = scanner_factory

    async def scan(
        self,
        duration: float,
        *,
        on_advertisement: Callable[[Advertisement], None] | None = None,
    ) -> list[Advertisement]:
        """Listen for `duration` seconds; the newest advertisement per address, strongest first.

        Raises:
            ConnectError: the adapter is missing or Bluetooth is off.
        """
        seen: dict[str, Advertisement] = {}

        def detected(device: BleDevice, data: AdvertisementLike) -> None:
            advertisement = _advertisement(device, data)
            previous = seen.get(device.address)
            if previous is not None and advertisement.name is None and previous.name is not None:
                # Scan responses carry the name; a later bare advertisement must not erase it.
                advertisement = dataclasses.replace(advertisement, name=previous.name)
            seen[device.address] = advertisement
            if on_advertisement is not None:
                on_advertisement(advertisement)

        await self._run(detected, asyncio.sleep(duration))
        return sorted(seen.values(), key=lambda adv: -(adv.rssi if adv.rssi is not None else -999))

    async def find(
        self,
        *,
        address: str | None = None,
        name: str | None = None,
        timeout: float,
    ) -> tuple[BleDevice, Advertisement] | None:
        """The first device with this address or advertised name (case-insensitive), or None."""
        wanted_address = address.upper() if address else None
        wanted_name = name.casefold() if name else None
        found: asyncio.Future[tuple[BleDevice, Advertisement]] = asyncio.get_running_loop().create_future()

        def detected(device: BleDevice, data: AdvertisementLike) -> None:
            if found.done():
                return
            advertisement = _advertisement(device, data)
            if (wanted_address and device.address.upper() == wanted_address) or (
                wanted_name and advertisement.name and advertisement.name.casefold() == wanted_name
            ):
                found.set_result((device, advertisement))

        async def wait() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(found)

        await self._run(detected, wait())
        return found.result() if found.done() else None

    async def _run(self, callback: DetectionCallback, waiting: Any) -> None:
        description = f"scanning on {self.adapter or 'the default adapter'}"
        try:
            scanner = self._factory(callback, self.adapter)
            await scanner.start()
        except _LIBRARY_ERRORS as exc:
            waiting.close()
            raise map_ble_error(exc, action="starting the scan", description=description) from exc
        try:
            await waiting
        finally:
            try:
                await scanner.stop()
            except _LIBRARY_ERRORS as exc:
                _LOGGER.debug("stopping the scan failed: %s", exc)


# -- one connection ------------------------------------------------------------------------------------


def gatt_tree(services: Iterable[ServiceLike]) -> GattTree:
    """Convert bleak's service collection into the pure `GattTree`."""
    built = []
    for service in sorted(services, key=lambda item: item.handle):
        characteristics = tuple(
            GattCharacteristic(
                uuid=characteristic.uuid,
                handle=characteristic.handle,
                properties=tuple(characteristic.properties),
                descriptors=tuple(
                    GattDescriptor(uuid=descriptor.uuid, handle=descriptor.handle)
                    for descriptor in sorted(characteristic.descriptors, key=lambda item: item.handle)
                ),
                service_uuid=service.uuid,
            )
            for characteristic in sorted(service.characteristics, key=lambda item: item.handle)
        )
        built.append(GattService(uuid=service.uuid, handle=service.handle, characteristics=characteristics))
    return GattTree(tuple(built))


class BleConnection:
    """One BLE link: find the device, connect (pairing if asked), read its GATT tree.

    Args:
        address: MAC address (or macOS identifier); give this or `name`.
        name: advertised name to scan for (exact, case-insensitive).
        adapter: ``hci0``, ``hci1``... (BlueZ); None = the system default.
        pair: pair before using GATT (BlueZ and Windows; macOS pairs on demand by itself).
        connect_timeout: seconds for the whole connection set-up including the retry connector's own
            attempts.
        scan_timeout: seconds to look for the device's advertisement.
        connect_attempts: attempts inside bleak-retry-connector's ``establish_connection``.
        client_factory: the bleak client class (a fake in tests).
        scanner_factory: makes scanners (a fake in tests).
        use_retry_connector: connect through ``establish_connection`` (default) or call
            ``client.connect()`` once.
        bluez: use BlueZ helpers (stale-connection clean-up, cached devices); None = on Linux with the
            real bleak client.
        battery_id: carried by errors.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        name: str | None = None,
        adapter: str | None = None,
        pair: bool = False,
        connect_timeout: float = 30.0,
        scan_timeout: float = 10.0,
        connect_attempts: int = 3,
        client_factory: ClientFactory = _DEFAULT_CLIENT,
        scanner_factory: ScannerFactory = bleak_scanner,
        use_retry_connector: bool = True,
        bluez: bool | None = None,
        battery_id: str | None = None,
    ) -> None:
        if not address and not name:
            raise ValueError("give a BLE address or a device name")
        self.address = address
        self.name = name
        self.adapter = adapter
        self.pair = pair
        self.connect_timeout = connect_timeout
        self.scan_timeout = scan_timeout
        self.connect_attempts = max(1, connect_attempts)
        self.battery_id = battery_id
        self._client_factory = client_factory
        self._scanner = BleScanner(adapter=adapter, scanner_factory=scanner_factory)
        self._use_retry_connector = use_retry_connector
        self._bluez = _IS_LINUX and client_factory is _DEFAULT_CLIENT if bluez is None else bluez
        self._client: ClientLike | None = None
        self._closing = False
        self._listeners: list[Callable[[], None]] = []
        self.tree = GattTree(())
        self.advertisement: Advertisement | None = None

    @property
    def description(self) -> str:
        """``ble:AA:BB:...`` or ``ble:name`` (plus ``@hci1``)."""
        target = self.address or f"'{self.name}'"
        return f"ble:{target}" + (f"@{self.adapter}" if self.adapter else "")

    @property
    def client(self) -> ClientLike:
        """The connected client.

        Raises:
            ConnectError: not connected.
        """
        if self._client is None or not self._client.is_connected:
            raise ConnectError(f"{self.description}: not connected", battery_id=self.battery_id)
        return self._client

    @property
    def is_connected(self) -> bool:
        """The link is up."""
        return self._client is not None and self._client.is_connected

    @property
    def rssi(self) -> int | None:
        """RSSI of the last advertisement heard (BLE stacks do not report it once connected)."""
        return self.advertisement.rssi if self.advertisement else None

    @property
    def device_name(self) -> str | None:
        """The name the device advertised when it was found, else the name it was looked for by."""
        if self.advertisement is not None and self.advertisement.name:
            return self.advertisement.name
        return self.name

    def add_disconnect_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when the link drops unexpectedly; returns a function that unregisters it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _error(self, exc: BaseException, action: str) -> DeviceError:
        return map_ble_error(exc, action=action, description=self.description, battery_id=self.battery_id)

    async def connect(self) -> None:
        """Find the device, connect, read the GATT tree.

        Raises:
            ConnectError: not found, refused, or the stack failed.
            DeviceTimeout: the connection set-up took longer than `connect_timeout`.
            AuthenticationError: pairing failed.
        """
        if self.is_connected:
            return
        self._closing = False
        deadline = asyncio.timeout(self.connect_timeout + self.scan_timeout)
        try:
            async with deadline:
                device = await self._resolve()
                client = await self._establish(device)
        except TimeoutError as exc:
            if isinstance(exc, DeviceError) or not deadline.expired():
                raise
            raise DeviceTimeout(
                f"{self.description}: connecting took longer than {self.connect_timeout:.0f} s",
                battery_id=self.battery_id,
            ) from exc
        self._client = client
        try:
            self.tree = gatt_tree(client.services)
        except _LIBRARY_ERRORS as exc:
            await self.disconnect()
            raise self._error(exc, "reading the GATT services") from exc
        _LOGGER.debug("%s: connected, %d services", self.description, len(self.tree.services))

    async def _resolve(self) -> BleDevice:
        if self._bluez and self.address:
            # A link left open by a crashed run keeps the device from advertising and connecting.
            with contextlib.suppress(*_LIBRARY_ERRORS):
                await bleak_retry_connector.close_stale_connections_by_address(self.address)
        found = await self._scanner.find(address=self.address, name=self.name, timeout=self.scan_timeout)
        if found is not None:
            device, self.advertisement = found
            return device
        if self._bluez and self.address:
            cached = await self._bluez_cached(self.address)
            if cached is not None:
                _LOGGER.debug("%s: not advertising; using BlueZ's cached device", self.description)
                return cached
        what = f"address {self.address}" if self.address else f"name '{self.name}'"
        raise ConnectError(
            f"{self.description}: no device with {what} heard within {self.scan_timeout:.0f} s; out of range, "
            "asleep (some packs stop advertising when idle), or connected to another device such as a phone",
            battery_id=self.battery_id,
        )

    async def _bluez_cached(self, address: str) -> BleDevice | None:
        try:
            if self.adapter:
                return await bleak_retry_connector.get_device_by_adapter(address, self.adapter)
            return await bleak_retry_connector.get_device(address)
        except _LIBRARY_ERRORS as exc:
            _LOGGER.debug("%s: BlueZ cache lookup failed: %s", self.description, exc)
            return None

    async def _establish(self, device: BleDevice) -> ClientLike:
        kwargs: dict[str, Any] = {"timeout": self.connect_timeout}
        if self.adapter:
            kwargs["bluez"] = BlueZClientArgs(adapter=self.adapter)
        try:
            if self._use_retry_connector:
                client: ClientLike = await bleak_retry_connector.establish_connection(
                    cast(type[BleakClient], self._client_factory),
                    cast(Any, device),
                    self.description,
                    disconnected_callback=self._on_disconnect,
                    max_attempts=self.connect_attempts,
                    pair=self.pair,
                    **kwargs,
                )
            else:
                client = self._client_factory(
                    device, disconnected_callback=self._on_disconnect, pair=self.pair, **kwargs
                )
                await client.connect()
        except _LIBRARY_ERRORS as exc:
            raise self._error(exc, "connecting") from exc
        return client

    def _on_disconnect(self, client: Any) -> None:
        if client is not self._client or self._closing:
            return
        _LOGGER.info("%s: link lost", self.description)
        for listener in list(self._listeners):
            listener()

    async def disconnect(self) -> None:
        """Disconnect; never raises (a dropped link is already gone)."""
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        try:
            async with asyncio.timeout(_DISCONNECT_TIMEOUT):
                await client.disconnect()
        except _LIBRARY_ERRORS as exc:
            _LOGGER.debug("%s: disconnect failed (ignored): %s", self.description, exc)


# -- the transport -------------------------------------------------------------------------------------


class BleTransport(Transport):
    """Moves a protocol's frames over BLE GATT: writes requests, delivers notifications as chunks.

    Args:
        protocol: the definition whose GATT profiles, ``write_mode`` and ``pairing`` apply.
        address: MAC address (or macOS identifier); give this or `name`.
        name: advertised name to scan for.
        adapter: ``hci0``, ``hci1``... (BlueZ).
        pin: the BMS's PIN. bleak cannot hand a PIN to BlueZ: a PIN makes bmsgate pair, and the system's
            Bluetooth agent (``bluetoothctl``) must supply it, or the pack is paired once beforehand.
        write_mode: overrides the definition's ``write_mode``.
        battery_id: carried by errors.
        connect_timeout: seconds for one connection set-up (see `BleConnection`).
        scan_timeout: seconds to look for the advertisement.
        connect_attempts: attempts inside bleak-retry-connector per set-up.
        reconnect: how often `open()` retries a failed set-up and how long it waits in between.
        write_timeout: seconds a write-with-response may take before the other mode is tried.
        client_factory: the bleak client class (``bmsgate.testing.FakeBleakClient`` in tests).
        scanner_factory: makes scanners (``bmsgate.testing.FakeBluetooth.scanner`` in tests).
        use_retry_connector: connect through bleak-retry-connector (default).
        bluez: force BlueZ helpers on/off (default: on Linux with the real bleak client).
        connection: an open connection to share (``bmsgate probe``); it is not closed with the transport.
        rng: random source for the backoff jitter (tests make it reproducible).
        secret: the battery's configured ``secret`` (UTF-8 of its text) for a profile's ``authenticate`` step;
            never logged, never in an error message.
    """

    kind = "ble"

    def __init__(
        self,
        protocol: CompiledProtocol,
        address: str | None = None,
        *,
        name: str | None = None,
        adapter: str | None = None,
        pin: str | None = None,
        write_mode: Literal["auto", "with_response", "without_response"] | None = None,
        battery_id: str | None = None,
        connect_timeout: float = 30.0,
        scan_timeout: float = 10.0,
        connect_attempts: int = 3,
        reconnect: ReconnectPolicy | None = None,
        write_timeout: float = _WRITE_TIMEOUT,
        client_factory: ClientFactory = _DEFAULT_CLIENT,
        scanner_factory: ScannerFactory = bleak_scanner,
        use_retry_connector: bool = True,
        bluez: bool | None = None,
        connection: BleConnection | None = None,
        rng: random.Random | None = None,
        secret: bytes | None = None,
    ) -> None:
        super().__init__(battery_id=battery_id)
        self._secret = secret
        gatt = protocol.definition.gatt
        if gatt is None:
            raise ValueError(f"protocol {protocol.name!r} defines no GATT profile; it cannot be used over BLE")
        # A device that authenticates with a key refuses for a wrong key too, not only for a missing pairing.
        keyed = any(profile.authenticate is not None for profile in gatt.profiles)
        self._auth_hint = KEY_HINT if keyed else PAIRING_HINT
        self.protocol = protocol
        self.pin = pin
        pairing = gatt.pairing
        if connection is None:
            connection = BleConnection(
                address,
                name=name,
                adapter=adapter,
                # An explicit PIN means the user expects pairing, whatever the definition says.
                pair=pairing == "required" or pin is not None,
                connect_timeout=connect_timeout,
                scan_timeout=scan_timeout,
                connect_attempts=connect_attempts,
                client_factory=client_factory,
                scanner_factory=scanner_factory,
                use_retry_connector=use_retry_connector,
                bluez=bluez,
                battery_id=battery_id,
            )
            self._owns_connection = True
        else:
            self._owns_connection = False
        self.connection = connection
        self._write_preference = write_mode or gatt.write_mode
        self._reconnect = reconnect or ReconnectPolicy()
        self._write_timeout = write_timeout
        self._random = rng or random.Random()
        self.selection: CharacteristicSelection | None = None
        self._modes: tuple[WriteMode, ...] = ()
        self._mode_index = 0
        self._confirmed_mode: WriteMode | None = None
        self._unanswered_write = False
        self._switch_pending = False
        self._unlisten: Callable[[], None] | None = None
        self._notifying = False
        self._answerers: list[tuple[GattCharacteristic, NotificationAnswerer]] = []
        if pin is not None and _IS_LINUX:
            _LOGGER.debug("%s: a PIN is set; BlueZ's agent must supply it when pairing", connection.description)

    # -- info ------------------------------------------------------------------------------------------

    @property
    def description(self) -> str:
        """The device (address or name, adapter)."""
        return self.connection.description

    @property
    def rssi(self) -> int | None:
        """RSSI of the last advertisement heard."""
        return self.connection.rssi

    @property
    def device_name(self) -> str | None:
        """The device's advertised name (see `BleConnection.device_name`)."""
        return self.connection.device_name

    @property
    def write_mode(self) -> WriteMode | None:
        """The write mode the next request uses (None before the first open)."""
        return self._modes[self._mode_index] if self._modes else None

    @property
    def confirmed_write_mode(self) -> WriteMode | None:
        """The write mode that got a reply, remembered across reconnects."""
        return self._confirmed_mode

    # -- open / close --------------------------------------------------------------------------------

    async def _do_open(self) -> None:
        policy = self._reconnect
        failures = 0
        while True:
            try:
                await self._open_once()
            except AuthenticationError:
                raise
            except TransportError as exc:
                failures += 1
                if failures >= policy.attempts:
                    raise
                delay = policy.delay(failures - 1, self._random)
                _LOGGER.debug(
                    "%s: connection attempt %d failed (%s); retrying in %.1f s", self.description, failures, exc, delay
                )
                await asyncio.sleep(delay)
            else:
                return

    async def _open_once(self) -> None:
        connection = self.connection
        await self._stop_answering()  # those of a connection that dropped: its board is gone
        if self._owns_connection:
            await connection.connect()
        elif not connection.is_connected:
            raise ConnectError(f"{self.description}: the shared connection is closed", battery_id=self.battery_id)
        selection = select_characteristics(connection.tree, self.protocol.gatt_profiles)
        if selection is None:
            offered = ", ".join(short_uuid(service.uuid) for service in connection.tree.services) or "none"
            wanted = ", ".join(
                f"{short_uuid(p.service)}/{short_uuid(p.notify)}/{short_uuid(p.write) if p.write else '-'}"
                for p in self.protocol.gatt_profiles
            )
            await self._release()
            raise ConnectError(
                f"{self.description}: no GATT profile of protocol {self.protocol.name} (wanted service/notify/write "
                f"{wanted}; the device offers services {offered}); is it the right protocol?",
                battery_id=self.battery_id,
            )
        self.selection = selection
        modes = write_mode_order(selection.write.properties, self._write_preference) if selection.write else ()
        if modes != self._modes:
            self._modes = modes
            self._mode_index = 0
        if self._confirmed_mode in modes:
            self._mode_index = modes.index(self._confirmed_mode)
        self._unanswered_write = self._switch_pending = False
        if self._unlisten is not None:
            self._unlisten()
        self._unlisten = connection.add_disconnect_listener(self._on_link_lost)
        await self._write_connect_frames(selection)
        await self._start_answering(selection)
        await self._authenticate(selection)
        tags = selection.profile.tag_of
        try:
            notify_tag = tags.get(selection.notify.uuid)
            on_notify = self._on_notify if notify_tag is None else self._tagged(notify_tag, self._on_notify)
            await connection.client.start_notify(selection.notify.handle, on_notify)
            self._notifying = True
            for characteristic in selection.also_notify:
                tag = tags.get(characteristic.uuid)
                on_further = self._on_further_notify if tag is None else self._tagged(tag, self._on_further_notify)
                await connection.client.start_notify(characteristic.handle, on_further)
        except _LIBRARY_ERRORS as exc:
            await self._release()
            raise map_ble_error(
                exc,
                action="subscribing to notifications",
                description=self.description,
                battery_id=self.battery_id,
                hint=self._auth_hint,
            ) from exc
        _LOGGER.debug(
            "%s: using notify handle %d, write handle %s (%s)",
            self.description,
            selection.notify.handle,
            selection.write.handle if selection.write else "none",
            "/".join(modes) or "notify only",
        )

    async def _write_connect_frames(self, selection: CharacteristicSelection) -> None:
        """The profile's ``connect_writes``, in order, before anything is subscribed (Dyness's unlock)."""
        for characteristic, frame in selection.connect_writes:
            response = "write" in characteristic.properties
            try:
                async with asyncio.timeout(self._write_timeout):
                    await self.connection.client.write_gatt_char(characteristic.handle, frame, response=response)
            except _LIBRARY_ERRORS as exc:
                await self._release()
                raise map_ble_error(
                    exc,
                    action=f"writing the connect-time frame to {short_uuid(characteristic.uuid)}",
                    description=self.description,
                    battery_id=self.battery_id,
                    hint=self._auth_hint,
                ) from exc
            self.bytes_sent += len(frame)

    async def _authenticate(self, selection: CharacteristicSelection) -> None:
        """The profile's challenge–response (Stark Varg), before any frame characteristic is subscribed.

        Subscribe to the characteristic, read the challenge, write the response (with response where the
        characteristic allows it), and take the first notification after that write completed as the verdict:
        one before the write says nothing about this response; one while it is in flight (a device answering
        from its write handler) counts unless another follows within `_LATE_VERDICT_WAIT`.
        A refused key or an unusable secret is an `AuthenticationError` (not retried: the same key would be
        refused again); silence is a `ConnectError` (the next connection tries again).
        """
        spec, target = selection.profile.authenticate, selection.authenticate
        if spec is None or target is None:
            return
        try:
            key = configured_key(spec, self._secret, battery_id=self.battery_id)
        except AuthenticationError:
            await self._release()
            raise
        client = self.connection.client
        verdict: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        # Before the write: nothing (a leftover says nothing about this response). While it is in flight: kept
        # aside, since a device answering from its write handler notifies before the write's response arrives.
        phase = "before"
        during_write: list[bytes] = []

        def on_verdict(_sender: Any, data: bytearray) -> None:
            if not data or verdict.done():
                return
            if phase == "after":
                verdict.set_result(bytes(data))
            elif phase == "writing":
                during_write.append(bytes(data))

        where = short_uuid(target.uuid)
        step = f"reading the authentication challenge from {where}"
        try:
            async with asyncio.timeout(spec.timeout):
                await client.start_notify(target.handle, on_verdict)
                challenge = bytes(await client.read_gatt_char(target.handle))
                response = challenge_response(spec, key, challenge, battery_id=self.battery_id)
                step = f"writing the authentication response to {where}"
                phase = "writing"
                await client.write_gatt_char(target.handle, response, response="write" in target.properties)
                phase = "after"
                self.bytes_sent += len(response)
                step = f"waiting for the authentication verdict on {where}"
                if during_write:
                    # One came during the write: it is the verdict unless another follows at once.
                    await asyncio.wait([verdict], timeout=_LATE_VERDICT_WAIT)
                    answer = verdict.result() if verdict.done() else during_write[-1]
                else:
                    answer = await verdict
                accepted = is_accepted(spec, answer)
        except TimeoutError:
            await self._release()
            raise ConnectError(
                f"{self.description}: authentication did not finish within {spec.timeout:g} s ({step})",
                battery_id=self.battery_id,
            ) from None
        except DeviceError:
            await self._release()
            raise
        except _LIBRARY_ERRORS as exc:
            await self._release()
            raise map_ble_error(
                exc, action=step, description=self.description, battery_id=self.battery_id, hint=KEY_HINT
            ) from exc
        with contextlib.suppress(*_LIBRARY_ERRORS, DeviceError):
            async with asyncio.timeout(_DISCONNECT_TIMEOUT):
                await client.stop_notify(target.handle)
        if not accepted:
            await self._release()
            raise AuthenticationError(
                f"{self.description}: the device refused the key (protocol {self.protocol.name}); check the "
                "battery's 'secret'",
                battery_id=self.battery_id,
            )
        _LOGGER.debug("%s: authenticated on %s", self.description, where)

    @staticmethod
    def _tagged(tag: bytes, deliver: Callable[[Any, bytearray], None]) -> Callable[[Any, bytearray], None]:
        """A notification callback putting the characteristic's tag (its frame type) in front of each block."""

        def on_notify(sender: Any, data: bytearray) -> None:
            if data:  # an empty notification is no block; with its tag alone it would look like one
                deliver(sender, bytearray(tag) + data)

        return on_notify

    async def _start_answering(self, selection: CharacteristicSelection) -> None:
        """Subscribe to the profile's ``answer_notify`` characteristics, each answered once before the next.

        Dometic's order: every keep-alive characteristic is subscribed and its first notification answered
        before the frame stream is switched on; a board that stays silent on one is refused with its UUID.
        """
        for source, target, answer in selection.answers:
            answerer = NotificationAnswerer(
                answer, self._answer_writer(target), label=f"{self.description} {short_uuid(source.uuid)}"
            )
            self._answerers.append((source, answerer))
            answerer.start()
            try:
                await self.connection.client.start_notify(source.handle, answerer.on_notify)
            except _LIBRARY_ERRORS as exc:
                await self._release()
                raise map_ble_error(
                    exc,
                    action=f"subscribing to the keep-alive characteristic {short_uuid(source.uuid)}",
                    description=self.description,
                    battery_id=self.battery_id,
                    hint=self._auth_hint,
                ) from exc
            if answer.first_within is None:
                continue
            try:
                async with asyncio.timeout(answer.first_within):
                    await answerer.answered_once.wait()
            except TimeoutError:
                await self._release()
                raise ConnectError(
                    f"{self.description}: no keep-alive notification on {short_uuid(source.uuid)} answered within "
                    f"{answer.first_within:g} s of subscribing (protocol {self.protocol.name} needs one first)",
                    battery_id=self.battery_id,
                ) from None

    def _answer_writer(self, target: GattCharacteristic) -> Callable[[bytes], Awaitable[None]]:
        response = "write" in target.properties

        async def write(answer: bytes) -> None:
            try:
                async with asyncio.timeout(self._write_timeout):
                    await self.connection.client.write_gatt_char(target.handle, answer, response=response)
            except _LIBRARY_ERRORS as exc:
                raise self._write_error(exc) from exc
            self.bytes_sent += len(answer)

        return write

    async def _stop_answering(self) -> None:
        answerers, self._answerers = self._answerers, []
        for source, answerer in answerers:
            await answerer.stop()
            if self.connection.is_connected:
                with contextlib.suppress(*_LIBRARY_ERRORS, DeviceError):
                    async with asyncio.timeout(_DISCONNECT_TIMEOUT):
                        await self.connection.client.stop_notify(source.handle)

    @property
    def answerers(self) -> tuple[NotificationAnswerer, ...]:
        """This connection's keep-alive answerers (``answer_notify``, in order; empty when closed)."""
        return tuple(answerer for _source, answerer in self._answerers)

    async def _release(self) -> None:
        await self._stop_answering()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._notifying and self.selection is not None and self.connection.is_connected:
            for characteristic in (self.selection.notify, *self.selection.also_notify):
                with contextlib.suppress(*_LIBRARY_ERRORS, DeviceError):
                    async with asyncio.timeout(_DISCONNECT_TIMEOUT):
                        await self.connection.client.stop_notify(characteristic.handle)
        self._notifying = False
        if self._owns_connection:
            await self.connection.disconnect()

    async def _do_close(self) -> None:
        await self._release()

    def _on_link_lost(self) -> None:
        self._notifying = False
        self._connection_lost(ConnectError(f"{self.description}: link dropped", battery_id=self.battery_id))

    def _on_notify(self, _sender: Any, data: bytearray) -> None:
        if self._unanswered_write and self._modes:
            self._unanswered_write = False
            mode = self._modes[self._mode_index]
            if self._confirmed_mode != mode:
                self._confirmed_mode = mode
                _LOGGER.debug("%s: write mode %s works", self.description, mode)
        self._deliver(bytes(data))

    def _on_further_notify(self, _sender: Any, data: bytearray) -> None:
        # Sent unasked (Super-B v2's measurements): says nothing about whether the last write arrived.
        self._deliver(bytes(data))

    # -- writing ------------------------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> bytes:
        """The next notification; a timeout after an unanswered write schedules a write-mode switch."""
        try:
            return await super().receive(timeout)
        except DeviceTimeout:
            if self._unanswered_write and self._can_switch():
                self._switch_pending = True
            raise

    def _can_switch(self) -> bool:
        return len(self._modes) > 1 and self._confirmed_mode is None

    def _switch_mode(self, reason: str) -> None:
        old = self._modes[self._mode_index]
        self._mode_index = (self._mode_index + 1) % len(self._modes)
        _LOGGER.info("%s: %s with %s; switching to %s", self.description, reason, old, self._modes[self._mode_index])

    async def _do_write(self, data: bytes) -> None:
        selection = self.selection
        if selection is not None and selection.write is None:
            raise ConnectError(
                f"{self.description}: protocol {self.protocol.name} only listens (its GATT profile has no write "
                "characteristic), but a write was asked for",
                battery_id=self.battery_id,
            )
        if selection is None or selection.write is None or not self._modes:
            raise ConnectError(f"{self.description}: not connected", battery_id=self.battery_id)
        if self._switch_pending:
            self._switch_pending = False
            if self._can_switch():
                self._switch_mode("no reply to the last request")
        try:
            await self._write_in_mode(selection.write.handle, data)
        except _LIBRARY_ERRORS as exc:
            # A board that refuses (or never acknowledges) one mode often takes the other.
            usable = self._can_switch() and self.connection.is_connected
            if not (usable and _write_refused(exc)) or _is_auth_error(exc):
                raise self._write_error(exc) from exc
            self._switch_mode(f"write failed ({exc or type(exc).__name__})")
            try:
                await self._write_in_mode(selection.write.handle, data)
            except _LIBRARY_ERRORS as retry_exc:
                raise self._write_error(retry_exc) from retry_exc
        self._unanswered_write = True

    async def _write_in_mode(self, handle: int, data: bytes) -> None:
        client = self.connection.client
        mode = self._modes[self._mode_index]
        if mode == "with_response":
            async with asyncio.timeout(self._write_timeout):
                await client.write_gatt_char(handle, data, response=True)
            return
        # Write-without-response carries at most one ATT payload per packet.
        size = max(1, client.mtu_size - _ATT_HEADER)
        for start in range(0, len(data), size):
            await client.write_gatt_char(handle, data[start : start + size], response=False)

    def _write_error(self, exc: BaseException) -> DeviceError:
        return map_ble_error(
            exc,
            action="writing",
            description=self.description,
            battery_id=self.battery_id,
            fallback=TransportError if self.connection.is_connected else ConnectError,
            hint=self._auth_hint,
        )
