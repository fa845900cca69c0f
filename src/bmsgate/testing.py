"""Public fakes for tests without hardware: a fake bleak client, scanner and BMS peripheral.

A `FakePeripheral` is a BMS with a BLE module: it advertises (name, address, RSSI, service UUIDs,
manufacturer data), exposes a GATT server (services, characteristics with handles and properties,
CCCD descriptors), and bridges the write characteristic to a simulated BMS — the same `VirtualBms`
and fault injection as `bmsgate.transports.simulator` — whose replies come back as notifications of at
most ``mtu - 3`` bytes. Quirks of real modules are switches: a board that honours only one write mode
and silently drops the other, two characteristics sharing one UUID, a link that drops mid-frame,
silence, corrupt or dropped notifications, refused connections, required pairing.

`FakeBleakClient` is duck-type compatible with the part of ``bleak.BleakClient`` that
`bmsgate.transports.ble` uses; `FakeBluetooth` holds the peripherals and makes scanners::

    from bmsgate.runtime.client import BatteryClient
    from bmsgate.protocols import get_protocol
    from bmsgate.testing import FakeBleakClient, FakeBluetooth, FakePeripheral
    from bmsgate.transports.ble import BleTransport

    jbd = get_protocol("jbd")
    radio = FakeBluetooth([FakePeripheral(jbd, "A4:C1:37:00:00:01", name="JBD-SP04S034")])
    transport = BleTransport(jbd, "A4:C1:37:00:00:01", client_factory=FakeBleakClient,
                             scanner_factory=radio.scanner)
    async with BatteryClient(jbd, transport) as client:
        snapshot = await client.read()

The fakes raise bleak's own exception types (re-exported by `bmsgate.transports.ble`), so the error
mapping under test is the real one. Importing this module does not need bleak; using the BLE fakes does.

Why one long module: it is one public test double (advertising, GATT server, quirks and the client
that talks to them) that users import as a unit; splitting it would only spread one fake over files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from bmsgate.errors import AuthenticationError, ConnectError, TransportError
from bmsgate.protocols.compiled import CompiledProtocol
from bmsgate.protocols.definition import GattProfile, normalize_uuid
from bmsgate.protocols.gattauth import challenge_response, configured_key
from bmsgate.runtime.simulation import PackConfig, PackModel
from bmsgate.transports.discovery import WriteMode
from bmsgate.transports.simulator import FaultPlan, SimulatorTransport

__all__ = [
    "FakeAdvertisementData",
    "FakeBleakClient",
    "FakeBleakScanner",
    "FakeBluetooth",
    "FakeCharacteristic",
    "FakeDescriptor",
    "FakeDevice",
    "FakePeripheral",
    "FakeService",
    "FaultPlan",
    "GattLayout",
    "gatt_for_protocol",
]

GattLayout = Literal["separate", "shared", "duplicate"]
"""``separate``: notify and write characteristics (JBD ``ff01``/``ff02``); ``shared``: one characteristic
for both (older JK ``ffe1``); ``duplicate``: two characteristics with the notify UUID, one writable and
one notifying (newer JK modules)."""

_CCCD = normalize_uuid("2902")
_DEVICE_NAME = normalize_uuid("2a00")
_GENERIC_ACCESS = normalize_uuid("1800")
_NOTIFY_PROPERTIES = frozenset({"notify", "indicate"})


def _errors() -> Any:
    # Imported late so that `import bmsgate.testing` works without the [ble] extra.
    from bmsgate.transports import ble  # noqa: PLC0415

    return ble


# -- the GATT database ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class FakeDescriptor:
    """A GATT descriptor."""

    uuid: str
    handle: int


@dataclasses.dataclass(frozen=True, slots=True)
class FakeCharacteristic:
    """A GATT characteristic (bleak's property names: ``read``, ``write``, ``write-without-response``...)."""

    uuid: str
    handle: int
    properties: list[str]
    descriptors: list[FakeDescriptor] = dataclasses.field(default_factory=list)
    service_uuid: str = ""

    @property
    def max_write_without_response_size(self) -> int:
        """Bleak's default for an unknown MTU."""
        return 20

    def __str__(self) -> str:
        return f"{self.uuid} (Handle: {self.handle})"


@dataclasses.dataclass(frozen=True, slots=True)
class FakeService:
    """A GATT service."""

    uuid: str
    handle: int
    characteristics: list[FakeCharacteristic] = dataclasses.field(default_factory=list)


class _ServiceCollection:
    """Iterable like bleak's ``BleakGATTServiceCollection``."""

    def __init__(self, services: Sequence[FakeService]) -> None:
        self._services = list(services)

    def __iter__(self) -> Iterator[FakeService]:
        return iter(self._services)

    @property
    def characteristics(self) -> dict[int, FakeCharacteristic]:
        """Handle → characteristic."""
        return {char.handle: char for service in self._services for char in service.characteristics}


class _HandleAllocator:
    def __init__(self, start: int = 1) -> None:
        self.next = start

    def take(self, count: int = 1) -> int:
        handle = self.next
        self.next += count
        return handle


def gatt_for_protocol(
    protocol: CompiledProtocol,
    *,
    profile: int = 0,
    layout: GattLayout = "separate",
    write_properties: Iterable[str] = ("write-without-response", "write"),
) -> list[FakeService]:
    """A plausible GATT database for a protocol's profile (Generic Access first, like real modules).

    Args:
        protocol: whose ``gatt.profiles[profile]`` to expose.
        profile: which profile (board variant).
        layout: how the notify and write roles map onto characteristics.
        write_properties: the write properties the writable characteristic advertises.
    """
    chosen: GattProfile = protocol.gatt_profiles[profile]
    handles = _HandleAllocator()
    access_handle = handles.take()
    name_char = FakeCharacteristic(_DEVICE_NAME, handles.take(2) + 1, ["read"], service_uuid=_GENERIC_ACCESS)
    services = [FakeService(_GENERIC_ACCESS, access_handle, [name_char])]
    service_handle = handles.take()
    writes = list(write_properties)

    def characteristic(uuid: str, properties: list[str]) -> FakeCharacteristic:
        value_handle = handles.take(2) + 1
        descriptors = []
        if not _NOTIFY_PROPERTIES.isdisjoint(properties):
            descriptors.append(FakeDescriptor(_CCCD, handles.take()))
        return FakeCharacteristic(uuid, value_handle, properties, descriptors, chosen.service)

    if chosen.write is None:
        chars = [characteristic(chosen.notify, ["read", "notify"])]
    elif layout == "separate":
        chars = [characteristic(chosen.notify, ["read", "notify"]), characteristic(chosen.write, writes)]
    elif layout == "shared":
        chars = [characteristic(chosen.write, ["read", *writes, "notify"])]
    else:
        chars = [characteristic(chosen.notify, ["read", *writes]), characteristic(chosen.notify, ["read", "notify"])]
    # The profile's further characteristics (engine 6), in the same service: the sources name no other.
    chars += [characteristic(uuid, ["read", "notify"]) for uuid in chosen.also_notify]
    chars += [characteristic(answer.characteristic, ["read", "notify"]) for answer in chosen.answer_notify]
    if chosen.authenticate is not None:
        chars.append(characteristic(chosen.authenticate.characteristic, ["read", "write", "notify"]))
    targets = dict.fromkeys(write.characteristic for write in chosen.connect_writes)
    targets |= dict.fromkeys(answer.write_to for answer in chosen.answer_notify)
    chars += [characteristic(uuid, ["read", "write-without-response", "write"]) for uuid in targets]
    services.append(FakeService(chosen.service, service_handle, chars))
    return services


# -- the peripheral -----------------------------------------------------------------------------------


class _GattUart(SimulatorTransport):
    """The simulator as the BMS behind a BLE module's UART: its chunks become notifications."""

    def __init__(self, peripheral: FakePeripheral, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._peripheral = peripheral

    def _deliver(self, chunk: bytes) -> None:
        self._peripheral._notify(chunk)

    def _connection_lost(self, error: TransportError | None = None) -> None:
        super()._connection_lost(error)
        self._drain()
        self._peripheral.drop_link()


@dataclasses.dataclass(frozen=True, slots=True)
class FakeAdvertisementData:
    """Shaped like bleak's ``AdvertisementData``."""

    local_name: str | None
    manufacturer_data: dict[int, bytes]
    service_data: dict[str, bytes]
    service_uuids: list[str]
    tx_power: int | None
    rssi: int
    platform_data: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class FakeDevice:
    """Shaped like bleak's ``BLEDevice``; `details` is the peripheral (a real one holds a BlueZ path)."""

    address: str
    name: str | None
    details: Any


class FakePeripheral:
    """A BMS with a BLE module.

    Args:
        protocol: the protocol the simulated BMS speaks.
        address: MAC address.
        name: advertised local name (None: advertises without a name).
        pack: the simulated pack (see `bmsgate.runtime.simulation`).
        faults: reply faults (drop, corrupt, truncate, delay, ``AT`` noise, disconnect mid-frame, silence,
            refused connects), exactly as `SimulatorTransport` applies them.
        mtu: negotiated ATT MTU; notifications carry at most ``mtu - 3`` bytes.
        notification_size: bytes per notification when the module sends less than the MTU allows.
        services: the GATT database (default: `gatt_for_protocol` with `layout`).
        layout: see `GattLayout`.
        write_properties: properties of the writable characteristic.
        accepts: the write mode the board honours; writes in the other mode succeed at the GATT level and
            are silently dropped.
        rssi: advertised signal strength.
        profile: which of the protocol's GATT profiles the board implements (the default GATT database, the
            advertised service, and the profile's ``connect_writes``: until each of them arrived on its
            characteristic in this connection, the BMS ignores requests, as a locked Dyness board does).
        notify_route: which characteristic (UUID) notifies a chunk the BMS sends; None: every notifying
            characteristic (a board with ``also_notify`` sends each frame type on its own one) except the
            profile's ``answer_notify`` ones, which carry keep-alives only.
        keep_alives: for the profile's ``answer_notify`` characteristics, the chunk each notifies as soon as
            it is subscribed (UUID -> bytes; more with `keep_alive`). Until every one of them got an answer
            in this connection, the BMS ignores requests, as a Dometic board does (``answers`` records them).
        secret: for a profile with ``authenticate``: the device's key as the battery configures it (hex text as
            bytes). Each read of the characteristic gives a fresh challenge; a right response is answered
            with the accepting verdict, any other with ``00``. Until then, subscribing to a tagged (frame)
            characteristic is refused ("insufficient authorization") and nothing is notified on them, as the
            source says of the bike's protected telemetry. None: every response is refused.
        service_uuids: advertised services (default: the profile's service).
        manufacturer_data: advertised manufacturer data.
        advertising: False for a pack that stays silent when idle.
        adapters: adapters that can hear it (None: all).
        pairing_required: GATT access fails with "insufficient authentication" until paired.
        pairing_fails: pairing is rejected (a wrong PIN entered in the system's agent).
        refuse_connections: the next N connection attempts are refused.
        connect_error: raised by every connection attempt (e.g. ``TimeoutError()`` or ``EOFError()``).
        hang_on_connect: connection attempts never finish (the caller's timeout must fire).
        drop_notifications: probability that a single notification is lost.
        seed: makes dropped notifications reproducible.
    """

    def __init__(
        self,
        protocol: CompiledProtocol,
        address: str = "A4:C1:37:00:00:01",
        *,
        name: str | None = "JBD-SP04S034",
        pack: PackConfig | PackModel | None = None,
        faults: FaultPlan | None = None,
        mtu: int = 23,
        notification_size: int | None = None,
        services: Sequence[FakeService] | None = None,
        layout: GattLayout = "separate",
        write_properties: Iterable[str] = ("write-without-response", "write"),
        accepts: WriteMode | Literal["both"] = "both",
        rssi: int = -60,
        profile: int = 0,
        notify_route: Callable[[bytes], str | None] | None = None,
        service_uuids: Sequence[str] | None = None,
        manufacturer_data: Mapping[int, bytes] | None = None,
        advertising: bool = True,
        adapters: Iterable[str] | None = None,
        pairing_required: bool = False,
        pairing_fails: bool = False,
        refuse_connections: int = 0,
        connect_error: BaseException | None = None,
        hang_on_connect: bool = False,
        drop_notifications: float = 0.0,
        seed: int = 3,
        keep_alives: Mapping[str, bytes] | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.protocol = protocol
        self.address = address.upper()
        self.name = name
        self.mtu = mtu
        self.services = (
            list(services)
            if services is not None
            else gatt_for_protocol(protocol, profile=profile, layout=layout, write_properties=write_properties)
        )
        self.accepts = accepts
        self.rssi = rssi
        chosen = protocol.gatt_profiles[profile] if protocol.gatt_profiles else None
        profile_service = chosen.service if chosen else None
        self._unlocks = [(write.characteristic, write.frame) for write in (chosen.connect_writes if chosen else [])]
        self._unlock_targets = frozenset(uuid for uuid, _frame in self._unlocks)
        answered = chosen.answer_notify if chosen else []
        self._keep_alive_sources = frozenset(answer.characteristic for answer in answered)
        self._answer_targets = frozenset(answer.write_to for answer in answered)
        self.keep_alives = {normalize_uuid(uuid): bytes(chunk) for uuid, chunk in (keep_alives or {}).items()}
        self.answers: list[tuple[str, bytes]] = []
        """Writes to an ``answer_notify`` answer characteristic, as (UUID, bytes), in order."""
        self._auth = chosen.authenticate if chosen else None
        self._secret = secret
        self._tags = chosen.tag_of if chosen else {}
        self.challenges: list[bytes] = []
        """The challenges read on the ``authenticate`` characteristic, in order."""
        self.responses: list[bytes] = []
        """What was written there, in order."""
        self.authenticated = False
        """This connection's response was accepted."""
        self._unlocked: list[tuple[str, bytes]] = []
        self._answered: list[tuple[str, bytes]] = []
        self.notify_route = notify_route
        default_uuids = [profile_service] if profile_service else []
        self.service_uuids = list(service_uuids) if service_uuids is not None else default_uuids
        self.manufacturer_data = dict(manufacturer_data or {})
        self.advertising = advertising
        self.adapters = frozenset(adapters) if adapters is not None else None
        self.pairing_required = pairing_required
        self.pairing_fails = pairing_fails
        self.paired = False
        self.refuse_connections = refuse_connections
        self.connect_error = connect_error
        self.hang_on_connect = hang_on_connect
        self.drop_notifications = drop_notifications
        self._random = random.Random(seed)
        size = min(notification_size or mtu - 3, mtu - 3)
        self.uart = _GattUart(self, protocol=protocol, pack=pack, faults=faults, notification_size=size)
        self.client: FakeBleakClient | None = None
        self.connect_attempts = 0
        self.connections = 0
        self.writes: list[tuple[bytes, WriteMode]] = []
        """Every write that reached the UART characteristic, with its mode."""
        self.dropped_writes: list[tuple[bytes, WriteMode]] = []
        """Writes the board ignored because of `accepts`, or while it was `locked`."""
        self.notifications: list[bytes] = []
        self.side_writes: list[tuple[str, bytes]] = []
        """Writes to a ``connect_writes`` characteristic (not the UART), as (UUID, bytes), in order."""

    @property
    def faults(self) -> FaultPlan:
        """The simulator's fault plan (mutable at run time)."""
        return self.uart.faults

    @property
    def pack(self) -> PackModel:
        """The simulated pack."""
        return self.uart.pack

    def characteristics(self) -> list[FakeCharacteristic]:
        """All characteristics in handle order."""
        return sorted((c for s in self.services for c in s.characteristics), key=lambda c: c.handle)

    @property
    def _notify_chars(self) -> list[FakeCharacteristic]:
        return [c for c in self.characteristics() if not _NOTIFY_PROPERTIES.isdisjoint(c.properties)]

    def advertisement(self) -> tuple[FakeDevice, FakeAdvertisementData]:
        """What a scan hears."""
        data = FakeAdvertisementData(
            local_name=self.name,
            manufacturer_data=dict(self.manufacturer_data),
            service_data={},
            service_uuids=[normalize_uuid(uuid) for uuid in self.service_uuids],
            tx_power=None,
            rssi=self.rssi,
        )
        return FakeDevice(self.address, self.name, self), data

    def drop_link(self) -> None:
        """The radio link drops now (out of range, BMS reboot)."""
        client, self.client = self.client, None
        self.authenticated = False
        self._unlocked.clear()
        self._answered.clear()
        if client is not None:
            client._lost()

    # -- called by the fake client -------------------------------------------------------------------

    async def _accept(self, client: FakeBleakClient, *, pair: bool) -> None:
        ble = _errors()
        self.connect_attempts += 1
        if self.hang_on_connect:
            await asyncio.Event().wait()
        if self.connect_error is not None:
            raise self.connect_error
        if self.refuse_connections > 0:
            self.refuse_connections -= 1
            raise ble.BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"])
        if self.client is not None:
            raise ble.BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"])
        try:
            await self.uart.open()
        except ConnectError as exc:
            raise ble.BleakError(f"Connection refused: {exc}") from None
        if pair:
            self._pair()
        self.client = client
        self.authenticated = False
        self._unlocked.clear()  # also after a dropped link: a board is locked again on every new connection
        self._answered.clear()
        self.connections += 1

    def _pair(self) -> None:
        if self.pairing_fails:
            raise _errors().BleakDBusError("org.bluez.Error.AuthenticationFailed", ["Authentication Failed"])
        self.paired = True

    async def _release(self, client: FakeBleakClient) -> None:
        if self.client is client:
            self.client = None
            self.authenticated = False
            self._unlocked.clear()
            self._answered.clear()
            await self.uart.close()

    @property
    def locked(self) -> bool:
        """The profile's connect-time frames or keep-alive answers have not all arrived on this connection."""
        unanswered = any(all(uuid != target for uuid, _answer in self._answered) for target in self._answer_targets)
        return unanswered or any(unlock not in self._unlocked for unlock in self._unlocks)

    def keep_alive(self, characteristic: str, chunk: bytes) -> None:
        """Notify `chunk` on one of the profile's ``answer_notify`` characteristics now (if subscribed)."""
        client = self.client
        wanted = normalize_uuid(characteristic)
        if client is None:
            return
        for char in self._notify_chars:
            if char.uuid == wanted:
                client._notify(char, chunk)

    def _subscribed(self, client: FakeBleakClient, char: FakeCharacteristic) -> None:
        chunk = self.keep_alives.get(char.uuid)
        if chunk is not None and char.uuid in self._keep_alive_sources:
            asyncio.get_running_loop().call_soon(client._notify, char, chunk)

    def _check_access(self, char: FakeCharacteristic | None = None) -> None:
        if self.pairing_required and not self.paired:
            ble = _errors()
            raise ble.BleakGATTProtocolError(0x05)  # insufficient authentication
        if char is not None and self._auth is not None and char.uuid in self._tags and not self.authenticated:
            raise _errors().BleakGATTProtocolError(0x08)  # insufficient authorization

    def _read(self, char: FakeCharacteristic) -> bytes:
        self._check_access()
        if self._auth is not None and char.uuid == self._auth.characteristic:
            challenge = self._random.randbytes(self._auth.challenge_length)
            self.challenges.append(challenge)
            return challenge
        return b""

    def _answer_challenge(self, char: FakeCharacteristic, data: bytes) -> None:
        auth = self._auth
        assert auth is not None
        self.responses.append(data)
        expected = None
        if self.challenges and self._secret is not None:
            try:
                key = configured_key(auth, self._secret)
            except AuthenticationError:
                key = None
            if key is not None:
                expected = challenge_response(auth, key, self.challenges[-1])
        self.authenticated = data == expected
        verdict = auth.accepted if self.authenticated else b"\x00"
        client = self.client
        if client is not None:
            asyncio.get_running_loop().call_soon(client._notify, char, verdict)

    async def _write(self, char: FakeCharacteristic, data: bytes, mode: WriteMode) -> None:
        self._check_access()
        if self._auth is not None and char.uuid == self._auth.characteristic:
            self._answer_challenge(char, data)
            return
        if char.uuid in self._answer_targets:
            self.answers.append((char.uuid, data))
            self._answered.append((char.uuid, data))
            return
        if char.uuid in self._unlock_targets:
            self.side_writes.append((char.uuid, data))
            self._unlocked.append((char.uuid, data))
            return
        if self.accepts not in ("both", mode) or self.locked:
            self.dropped_writes.append((data, mode))
            return
        self.writes.append((data, mode))
        await self.uart.write(data)

    def _notify(self, chunk: bytes) -> None:
        client = self.client
        if client is None or (self.drop_notifications and self._random.random() < self.drop_notifications):
            return
        self.notifications.append(chunk)
        if self._tags:
            self._notify_tagged(client, chunk)
            return
        route = normalize_uuid(target) if self.notify_route and (target := self.notify_route(chunk)) else None
        for char in self._notify_chars:
            if (route is None and char.uuid not in self._keep_alive_sources) or char.uuid == route:
                client._notify(char, chunk)

    def _notify_tagged(self, client: FakeBleakClient, frame: bytes) -> None:
        # The simulated BMS writes each block behind its characteristic's tag (the frame form); on the air the
        # block goes out alone, on that characteristic, and only once the central authenticated.
        if self._auth is not None and not self.authenticated:
            return
        for uuid, tag in self._tags.items():
            if frame.startswith(tag):
                for char in self._notify_chars:
                    if char.uuid == uuid:
                        client._notify(char, frame[len(tag) :])
                return


# -- the client ----------------------------------------------------------------------------------------


class FakeBleakClient:
    """Stands in for ``bleak.BleakClient`` (constructor and methods as bmsgate's BLE transport calls them).

    Pass it as ``client_factory=FakeBleakClient``; the device comes from `FakeBluetooth`'s scanner (its
    `details` is the `FakePeripheral`), or pass a `FakePeripheral` / `FakeDevice` directly.
    """

    def __init__(
        self,
        address_or_ble_device: FakeDevice | FakePeripheral | str,
        disconnected_callback: Callable[[Any], None] | None = None,
        services: Iterable[str] | None = None,
        *,
        timeout: float = 10.0,
        pair: bool = False,
        **kwargs: Any,
    ) -> None:
        target = address_or_ble_device
        if isinstance(target, FakePeripheral):
            self._peripheral: FakePeripheral | None = target
            self._address = target.address
        elif isinstance(target, FakeDevice):
            self._peripheral = target.details if isinstance(target.details, FakePeripheral) else None
            self._address = target.address
        else:
            self._peripheral = None
            self._address = str(target)
        self._disconnected_callback = disconnected_callback
        self._pair_on_connect = pair
        self.timeout = timeout
        self.options = dict(kwargs)
        self._connected = False
        self._subscriptions: dict[int, Callable[[Any, bytearray], Any]] = {}

    def __repr__(self) -> str:
        return f"FakeBleakClient({self._address})"

    @property
    def address(self) -> str:
        """The peer's address."""
        return self._address

    @property
    def name(self) -> str:
        """The peer's name."""
        return (self._peripheral.name if self._peripheral else None) or self._address.replace(":", "-")

    @property
    def is_connected(self) -> bool:
        """The link is up."""
        return self._connected

    @property
    def mtu_size(self) -> int:
        """The negotiated ATT MTU."""
        return self._peripheral.mtu if self._peripheral else 23

    @property
    def services(self) -> _ServiceCollection:
        """The GATT database (after connecting)."""
        if not self._connected or self._peripheral is None:
            raise _errors().BleakError("Service Discovery has not been performed yet")
        return _ServiceCollection(self._peripheral.services)

    async def connect(self, **kwargs: Any) -> None:
        """Connect (pairing first when constructed with ``pair=True``)."""
        ble = _errors()
        if self._peripheral is None:
            raise ble.BleakDeviceNotFoundError(self._address, f"Device with address {self._address} was not found.")
        if self._connected:
            return
        await self._peripheral._accept(self, pair=self._pair_on_connect)
        self._connected = True

    async def disconnect(self) -> None:
        """Disconnect (bleak calls the disconnected callback for deliberate disconnects too)."""
        if not self._connected or self._peripheral is None:
            return
        self._connected = False
        self._subscriptions.clear()
        await self._peripheral._release(self)
        self._schedule_callback()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pair now."""
        if self._peripheral is None:
            raise _errors().BleakDeviceNotFoundError(self._address)
        self._peripheral._pair()

    def _resolve(self, specifier: Any) -> FakeCharacteristic:
        ble = _errors()
        if not self._connected or self._peripheral is None:
            raise ble.BleakError("Not connected")
        chars = self._peripheral.characteristics()
        if isinstance(specifier, FakeCharacteristic):
            return specifier
        if isinstance(specifier, int):
            found = [char for char in chars if char.handle == specifier]
        else:
            wanted = normalize_uuid(str(specifier))
            found = [char for char in chars if char.uuid == wanted]
            if len(found) > 1:
                # bleak refuses an ambiguous UUID the same way.
                raise ble.BleakError(
                    f"Multiple Characteristics with this UUID, refer to your desired one by handle: {wanted}"
                )
        if not found:
            raise ble.BleakCharacteristicNotFoundError(specifier)
        return found[0]

    async def read_gatt_char(self, char_specifier: Any, **kwargs: Any) -> bytearray:
        """Read a value (the device name, an authentication challenge; empty for the rest)."""
        char = self._resolve(char_specifier)
        assert self._peripheral is not None
        if char.uuid == _DEVICE_NAME:
            return bytearray((self._peripheral.name or "").encode())
        return bytearray(self._peripheral._read(char))

    async def write_gatt_char(self, char_specifier: Any, data: bytes | bytearray, response: bool | None = None) -> None:
        """Write; a mode the characteristic does not list is refused as BlueZ does."""
        char = self._resolve(char_specifier)
        if response is None:
            response = "write" in char.properties
        needed = "write" if response else "write-without-response"
        if needed not in char.properties:
            raise _errors().BleakDBusError("org.bluez.Error.NotPermitted", [f"{needed} not permitted"])
        assert self._peripheral is not None
        await self._peripheral._write(char, bytes(data), "with_response" if response else "without_response")

    async def start_notify(self, char_specifier: Any, callback: Callable[[Any, bytearray], Any], **kwargs: Any) -> None:
        """Subscribe."""
        char = self._resolve(char_specifier)
        if _NOTIFY_PROPERTIES.isdisjoint(char.properties):
            raise _errors().BleakDBusError("org.bluez.Error.NotSupported", ["Operation is not supported"])
        assert self._peripheral is not None
        self._peripheral._check_access(char)
        self._subscriptions[char.handle] = callback
        self._peripheral._subscribed(self, char)

    async def stop_notify(self, char_specifier: Any) -> None:
        """Unsubscribe."""
        char = self._resolve(char_specifier)
        self._subscriptions.pop(char.handle, None)

    # -- from the peripheral ------------------------------------------------------------------------

    def _notify(self, char: FakeCharacteristic, chunk: bytes) -> None:
        callback = self._subscriptions.get(char.handle)
        if callback is not None:
            callback(char, bytearray(chunk))

    def _lost(self) -> None:
        if self._connected:
            self._connected = False
            self._subscriptions.clear()
            self._schedule_callback()

    def _schedule_callback(self) -> None:
        if self._disconnected_callback is not None:
            asyncio.get_running_loop().call_soon(self._disconnected_callback, self)


# -- the radio and its scanners --------------------------------------------------------------------------


class FakeBleakScanner:
    """Stands in for ``bleak.BleakScanner``: reports every advertising peripheral periodically."""

    def __init__(self, radio: FakeBluetooth, callback: Callable[[Any, Any], None], adapter: str | None) -> None:
        self._radio = radio
        self._callback = callback
        self.adapter = adapter
        self._handle: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Start listening."""
        if self.adapter is not None and self.adapter not in self._radio.adapters:
            raise _errors().BleakError(f"adapter '{self.adapter}' not found")
        self._radio.scans += 1
        self._handle = asyncio.get_running_loop().call_later(self._radio.first_advertisement, self._tick)

    def _tick(self) -> None:
        for peripheral in self._radio.peripherals:
            if not peripheral.advertising or peripheral.client is not None:
                continue  # connected BLE peripherals stop advertising
            if peripheral.adapters is not None and (self.adapter or "hci0") not in peripheral.adapters:
                continue
            self._callback(*peripheral.advertisement())
        self._handle = asyncio.get_running_loop().call_later(self._radio.advertise_interval, self._tick)

    async def stop(self) -> None:
        """Stop listening."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class FakeBluetooth:
    """The radio environment: some peripherals and the host's adapters.

    Pass `scanner` as ``scanner_factory=`` to the BLE transport, `bmsgate.transports.ble.BleScanner` or
    the ``scan``/``probe`` commands.
    """

    def __init__(
        self,
        peripherals: Iterable[FakePeripheral] = (),
        *,
        adapters: Iterable[str] = ("hci0",),
        advertise_interval: float = 0.05,
        first_advertisement: float = 0.005,
    ) -> None:
        self.peripherals = list(peripherals)
        self.adapters = tuple(adapters)
        self.advertise_interval = advertise_interval
        self.first_advertisement = first_advertisement
        self.scans = 0

    def add(self, peripheral: FakePeripheral) -> FakePeripheral:
        """Put a peripheral in range."""
        self.peripherals.append(peripheral)
        return peripheral

    def scanner(self, callback: Callable[[Any, Any], None], adapter: str | None) -> FakeBleakScanner:
        """A scanner factory (``(detection_callback, adapter) -> scanner``)."""
        return FakeBleakScanner(self, callback, adapter)
