"""Pure discovery logic: advertisements → protocols, the GATT tree, and choosing characteristics.

Nothing here touches a radio. The BLE adapter (`bmsgate.transports.ble`) turns bleak's objects into the
plain dataclasses below, and `bmsgate scan` / `bmsgate probe` render them. Keeping the decisions pure
makes the awkward cases (two characteristics sharing one UUID, boards that mis-report their write
properties, renamed packs) testable without hardware.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from bmsgate.protocols.compiled import CompiledProtocol
from bmsgate.protocols.definition import AdvertisementMatcher, GattProfile, NotificationAnswer, normalize_uuid

__all__ = [
    "Advertisement",
    "CharacteristicSelection",
    "GattCharacteristic",
    "GattDescriptor",
    "GattService",
    "GattTree",
    "ProtocolMatch",
    "WriteMode",
    "describe_matcher",
    "gatt_candidates",
    "looks_like_address",
    "match_advertisement",
    "select_characteristics",
    "short_uuid",
    "write_mode_order",
]

WriteMode = Literal["with_response", "without_response"]

_BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"
_NOTIFY_PROPERTIES = frozenset({"notify", "indicate"})
_WRITE_PROPERTY: dict[WriteMode, str] = {"with_response": "write", "without_response": "write-without-response"}


def short_uuid(uuid: str) -> str:
    """``ff01`` for a Bluetooth-base UUID, the full text for vendor 128-bit UUIDs."""
    text = uuid.lower()
    if text.endswith(_BASE_UUID_SUFFIX) and text.startswith("0000"):
        return text[4:8]
    return text


def _safe_normalize(uuid: str) -> str:
    try:
        return normalize_uuid(uuid)
    except ValueError:
        return uuid.lower()


# -- advertisements ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Advertisement:
    """One device as a scan saw it (the newest advertisement wins).

    Attributes:
        address: MAC address (or the platform's identifier on macOS).
        name: advertised local name, None when the device sent none.
        rssi: received signal strength, dBm.
        service_uuids: advertised service UUIDs, full lowercase 128-bit form.
        manufacturer_data: company id → payload.
        service_data: service UUID → payload.
        tx_power: advertised transmit power (dBm), if any.
    """

    address: str
    name: str | None = None
    rssi: int | None = None
    service_uuids: tuple[str, ...] = ()
    manufacturer_data: Mapping[int, bytes] = dataclasses.field(default_factory=dict)
    service_data: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    tx_power: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "service_uuids", tuple(_safe_normalize(uuid) for uuid in self.service_uuids))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (bytes as lowercase hex, UUIDs shortened where possible)."""
        return {
            "address": self.address,
            "name": self.name,
            "rssi": self.rssi,
            "service_uuids": [short_uuid(uuid) for uuid in self.service_uuids],
            "manufacturer_data": {f"0x{company:04x}": data.hex() for company, data in self.manufacturer_data.items()},
            "service_data": {short_uuid(uuid): data.hex() for uuid, data in self.service_data.items()},
            "tx_power": self.tx_power,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ProtocolMatch:
    """A built-in (or user) protocol whose advertisement matcher fits, and why."""

    protocol: str
    reason: str


def describe_matcher(matcher: AdvertisementMatcher) -> str:
    """Human text for a matcher, e.g. ``service ff00`` or ``name JBD-* + address A4:C1:37``."""
    parts = []
    if matcher.service_uuid is not None:
        parts.append(f"service {short_uuid(matcher.service_uuid)}")
    if matcher.local_name is not None:
        parts.append(f"name {matcher.local_name}")
    if matcher.manufacturer_id is not None:
        parts.append(f"manufacturer 0x{matcher.manufacturer_id:04x}")
    if matcher.address_prefix is not None:
        parts.append(f"address {matcher.address_prefix}")
    if matcher.service_data_uuid is not None:
        parts.append(f"service data {short_uuid(matcher.service_data_uuid)}")
    return " + ".join(parts)


def match_advertisement(advertisement: Advertisement, protocols: Iterable[CompiledProtocol]) -> list[ProtocolMatch]:
    """Protocols whose definitions claim this advertisement, each with the first matcher that fit.

    The order of `protocols` is kept; matchers are tried in definition order, so the reason shown is the
    definition author's most specific rule (they list the service UUID first).
    """
    found: list[ProtocolMatch] = []
    service_uuids = list(advertisement.service_uuids)
    manufacturer_ids = list(advertisement.manufacturer_data)
    service_data_uuids = list(advertisement.service_data)
    for protocol in protocols:
        for matcher in protocol.definition.match:
            if matcher.matches(
                name=advertisement.name,
                address=advertisement.address,
                service_uuids=service_uuids,
                manufacturer_ids=manufacturer_ids,
                service_data_uuids=service_data_uuids,
            ):
                found.append(ProtocolMatch(protocol.name, describe_matcher(matcher)))
                break
    return found


# -- the GATT tree ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class GattDescriptor:
    """A descriptor (e.g. the CCCD ``2902`` that switches notifications on)."""

    uuid: str
    handle: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"uuid": short_uuid(self.uuid), "handle": self.handle}


@dataclasses.dataclass(frozen=True, slots=True)
class GattCharacteristic:
    """A characteristic with its properties (``read``, ``write``, ``write-without-response``, ``notify``...)."""

    uuid: str
    handle: int
    properties: tuple[str, ...]
    descriptors: tuple[GattDescriptor, ...] = ()
    service_uuid: str = ""

    @property
    def can_notify(self) -> bool:
        """Notify or indicate."""
        return not _NOTIFY_PROPERTIES.isdisjoint(self.properties)

    @property
    def can_read(self) -> bool:
        """Whether it can be read (an authentication challenge)."""
        return "read" in self.properties

    @property
    def can_write(self) -> bool:
        """Either write mode is listed."""
        return "write" in self.properties or "write-without-response" in self.properties

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "uuid": short_uuid(self.uuid),
            "handle": self.handle,
            "properties": list(self.properties),
            "descriptors": [descriptor.to_dict() for descriptor in self.descriptors],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class GattService:
    """A primary service and its characteristics."""

    uuid: str
    handle: int
    characteristics: tuple[GattCharacteristic, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "uuid": short_uuid(self.uuid),
            "handle": self.handle,
            "characteristics": [characteristic.to_dict() for characteristic in self.characteristics],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class GattTree:
    """Every service a connected device exposes, sorted by handle."""

    services: tuple[GattService, ...]

    def service(self, uuid: str) -> list[GattService]:
        """Services with this UUID (a device may repeat one)."""
        wanted = _safe_normalize(uuid)
        return [service for service in self.services if _safe_normalize(service.uuid) == wanted]

    def characteristics(self) -> list[GattCharacteristic]:
        """All characteristics, in handle order."""
        return [characteristic for service in self.services for characteristic in service.characteristics]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"services": [service.to_dict() for service in self.services]}


@dataclasses.dataclass(frozen=True, slots=True)
class CharacteristicSelection:
    """The characteristics to use for one protocol on one device."""

    profile: GattProfile
    notify: GattCharacteristic
    write: GattCharacteristic | None
    """None for a notify-only profile (the protocol never writes)."""
    also_notify: tuple[GattCharacteristic, ...] = ()
    """Further characteristics to subscribe to (the profile's ``also_notify``, in order)."""
    connect_writes: tuple[tuple[GattCharacteristic, bytes], ...] = ()
    """What to write once per connection, and where (the profile's ``connect_writes``, in order)."""
    answers: tuple[tuple[GattCharacteristic, GattCharacteristic, NotificationAnswer], ...] = ()
    """The characteristics whose notifications are answered, where to, and how (``answer_notify``, in order)."""
    authenticate: GattCharacteristic | None = None
    """Where the profile's challenge–response runs (``authenticate``: it must be readable, writable and notify;
    the response is written with response where it allows that)."""


def _extras(
    selection: CharacteristicSelection, everything: Sequence[GattCharacteristic]
) -> CharacteristicSelection | None:
    """`selection` with the profile's further characteristics, or None when the device lacks one.

    They are looked up in the whole tree (the sources name their UUIDs, not their service); a board without
    one of them is not this profile's board.
    """
    profile = selection.profile
    if not (profile.also_notify or profile.connect_writes or profile.answer_notify or profile.authenticate):
        return selection
    notifiers: list[GattCharacteristic] = []
    for uuid in profile.also_notify:
        found = [c for c in everything if _safe_normalize(c.uuid) == uuid and c.can_notify]
        if not found:
            return None
        notifiers.append(min(found, key=lambda c: c.handle))
    writes: list[tuple[GattCharacteristic, bytes]] = []
    for write in profile.connect_writes:
        found = [c for c in everything if _safe_normalize(c.uuid) == write.characteristic and c.can_write]
        if not found:
            return None
        writes.append((min(found, key=lambda c: c.handle), write.frame))
    answers: list[tuple[GattCharacteristic, GattCharacteristic, NotificationAnswer]] = []
    for answer in profile.answer_notify:
        sources = [c for c in everything if _safe_normalize(c.uuid) == answer.characteristic and c.can_notify]
        targets = [c for c in everything if _safe_normalize(c.uuid) == answer.write_to and c.can_write]
        if not sources or not targets:
            return None
        answers.append((min(sources, key=lambda c: c.handle), min(targets, key=lambda c: c.handle), answer))
    authenticate: GattCharacteristic | None = None
    if profile.authenticate is not None:
        wanted = profile.authenticate.characteristic
        found = [
            c for c in everything if _safe_normalize(c.uuid) == wanted and c.can_write and c.can_notify and c.can_read
        ]
        if not found:
            return None
        authenticate = min(found, key=lambda c: c.handle)
    return dataclasses.replace(
        selection,
        also_notify=tuple(notifiers),
        connect_writes=tuple(writes),
        answers=tuple(answers),
        authenticate=authenticate,
    )


def _select_in(characteristics: Sequence[GattCharacteristic], profile: GattProfile) -> CharacteristicSelection | None:
    notify_uuid = normalize_uuid(profile.notify)
    notifiers = [c for c in characteristics if _safe_normalize(c.uuid) == notify_uuid and c.can_notify]
    if profile.write is None:
        return CharacteristicSelection(profile, min(notifiers, key=lambda c: c.handle), None) if notifiers else None
    write_uuid = normalize_uuid(profile.write)
    shared = notify_uuid == write_uuid
    writers = [c for c in characteristics if _safe_normalize(c.uuid) == write_uuid and c.can_write]
    if not notifiers or not writers:
        return None
    # With one UUID for both roles (JK's newer modules expose two ``ffe1``), a dedicated characteristic
    # for each role beats one that can do both; handles break ties.
    notify = min(notifiers, key=lambda c: (shared and c.can_write, c.handle))
    if shared:
        write = min(writers, key=lambda c: (c.handle == notify.handle, c.can_notify, c.handle))
    else:
        write = min(writers, key=lambda c: c.handle)
    return CharacteristicSelection(profile, notify, write)


def select_characteristics(tree: GattTree, profiles: Sequence[GattProfile]) -> CharacteristicSelection | None:
    """The notify and write characteristics of the first profile the device offers.

    Characteristics are matched by UUID *and* properties, so two characteristics sharing one UUID
    (one writable, one notifying) are told apart by what they can do, then by handle. A profile naming
    further characteristics (``also_notify``, ``connect_writes``) is chosen only when the device offers
    each of them too. Profiles are tried
    in definition order inside their service; when no service matches, a second pass ignores the service
    (some modules put the characteristics in an unexpected service).
    """
    everything = tree.characteristics()
    for profile in profiles:
        for service in tree.service(profile.service):
            selection = _select_in(service.characteristics, profile)
            if selection is not None and (selection := _extras(selection, everything)) is not None:
                return selection
    for profile in profiles:
        selection = _select_in(everything, profile)
        if selection is not None and (selection := _extras(selection, everything)) is not None:
            return selection
    return None


def write_mode_order(
    properties: Iterable[str], preference: Literal["auto", "with_response", "without_response"]
) -> tuple[WriteMode, ...]:
    """Write modes to try, best first.

    An explicit definition mode is used alone when the characteristic lists it. In ``auto`` the listed
    modes are tried, with-response first (a refused request fails loudly instead of vanishing). When the
    characteristic lists neither, both are tried: some modules report no write property at all.
    """
    listed = set(properties)
    modes: tuple[WriteMode, ...] = ("with_response", "without_response")
    supported = [mode for mode in modes if _WRITE_PROPERTY[mode] in listed]
    if preference != "auto":
        if preference in supported or not supported:
            return (preference,)
        return tuple(supported)
    return tuple(supported) or modes


def gatt_candidates(
    tree: GattTree,
    protocols: Iterable[CompiledProtocol],
    advertisement: Advertisement | None = None,
) -> list[CompiledProtocol]:
    """Protocols whose GATT profile the device offers, those its advertisement also matches first.

    This orders the identification attempts of ``bmsgate probe``; the definitive test is a reply that
    decodes.
    """
    usable = [protocol for protocol in protocols if select_characteristics(tree, protocol.gatt_profiles) is not None]
    if advertisement is None:
        return usable
    claimed = {match.protocol for match in match_advertisement(advertisement, usable)}
    return sorted(usable, key=lambda protocol: protocol.name not in claimed)


_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_UUID_ADDRESS = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


def looks_like_address(text: str) -> bool:
    """A MAC (``AA:BB:CC:DD:EE:FF``) or a macOS CoreBluetooth UUID, as opposed to a device name."""
    return bool(_MAC.match(text) or _UUID_ADDRESS.match(text))
