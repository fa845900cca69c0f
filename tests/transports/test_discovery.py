"""Pure discovery logic: advertisement matching, GATT selection, write-mode order."""

from __future__ import annotations

import pytest

from bmsgate.catalog import default_catalog
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import GattProfile, normalize_uuid
from bmsgate.transports.discovery import (
    Advertisement,
    GattCharacteristic,
    GattService,
    GattTree,
    describe_matcher,
    gatt_candidates,
    looks_like_address,
    match_advertisement,
    select_characteristics,
    short_uuid,
    write_mode_order,
)

JBD = get_protocol("jbd")


def uuid(short: str) -> str:
    return normalize_uuid(short)


def char(short: str, handle: int, *properties: str) -> GattCharacteristic:
    return GattCharacteristic(uuid(short), handle, tuple(properties))


def tree(service: str, *chars: GattCharacteristic) -> GattTree:
    return GattTree((GattService(uuid("1800"), 1, (char("2a00", 3, "read"),)), GattService(uuid(service), 8, chars)))


@pytest.mark.parametrize(
    ("advertisement", "reason"),
    [
        (Advertisement(address="11:22:33:44:55:66", name="My house pack", service_uuids=("ff00",)), "service ff00"),
        (Advertisement(address="11:22:33:44:55:66", name="SP04S034-L4S"), "name SP0?S*"),
        (Advertisement(address="11:22:33:44:55:66", name="jbd-renamed"), "name JBD-*"),
        (Advertisement(address="a4:c1:38:01:02:03", name="Garage"), "address A4:C1:38"),
    ],
)
def test_jbd_matches_by_service_name_or_oui(advertisement: Advertisement, reason: str) -> None:
    assert [(m.protocol, m.reason) for m in match_advertisement(advertisement, [JBD])] == [("jbd", reason)]


def test_unrelated_device_matches_nothing() -> None:
    phone = Advertisement(address="11:22:33:44:55:66", name="Pixel", manufacturer_data={0x00E0: b"\x01"})
    assert match_advertisement(phone, default_catalog().protocols()) == []


def test_manufacturer_matcher_description() -> None:
    from bmsgate.protocols.definition import AdvertisementMatcher

    matcher = AdvertisementMatcher(manufacturer_id=0x0B65, local_name="JK-*")
    assert describe_matcher(matcher) == "name JK-* + manufacturer 0x0b65"


def test_advertisement_normalizes_and_serializes() -> None:
    adv = Advertisement(
        address="A4:C1:37:00:00:01",
        name="JBD",
        rssi=-70,
        service_uuids=("FF00", "6e400001-b5a3-f393-e0a9-e50e24dcca9e"),
        manufacturer_data={0x0B65: b"\x01\x02"},
        service_data={uuid("ff00"): b"\xaa"},
    )
    assert adv.service_uuids[0] == uuid("ff00")
    data = adv.to_dict()
    assert data["service_uuids"] == ["ff00", "6e400001-b5a3-f393-e0a9-e50e24dcca9e"]
    assert data["manufacturer_data"] == {"0x0b65": "0102"}
    assert data["service_data"] == {"ff00": "aa"}
    assert short_uuid("not-a-uuid") == "not-a-uuid"


def test_select_separate_characteristics() -> None:
    selection = select_characteristics(
        tree("ff00", char("ff01", 10, "read", "notify"), char("ff02", 13, "write-without-response", "write")),
        JBD.gatt_profiles,
    )
    assert selection is not None
    assert selection.write is not None
    assert (selection.notify.handle, selection.write.handle) == (10, 13)


def test_select_needs_properties_not_just_uuids() -> None:
    # ff01 without notify is useless; the DH04 profile (fff0) wins.
    device = GattTree(
        (
            GattService(uuid("ff00"), 8, (char("ff01", 10, "read"), char("ff02", 13, "write"))),
            GattService(uuid("fff0"), 20, (char("fff1", 22, "notify"), char("fff2", 25, "write"))),
        )
    )
    selection = select_characteristics(device, JBD.gatt_profiles)
    assert selection is not None
    assert selection.profile.service == uuid("fff0")


@pytest.mark.parametrize(
    ("chars", "notify", "write"),
    [
        # JK's newer modules: two ffe1, one writable, one notifying (either order).
        ((char("ffe1", 10, "read", "write-without-response", "write"), char("ffe1", 13, "read", "notify")), 13, 10),
        ((char("ffe1", 10, "notify"), char("ffe1", 13, "write")), 10, 13),
        # Older modules: one ffe1 for both roles.
        ((char("ffe1", 10, "read", "write", "notify"),), 10, 10),
        # A notify+write twin and a dedicated writer: use the dedicated writer.
        ((char("ffe1", 10, "notify", "write"), char("ffe1", 13, "write")), 10, 13),
    ],
)
def test_select_one_uuid_for_both_roles(chars: tuple[GattCharacteristic, ...], notify: int, write: int) -> None:
    profile = GattProfile(service="ffe0", notify="ffe1", write="ffe1")
    selection = select_characteristics(tree("ffe0", *chars), [profile])
    assert selection is not None
    assert selection.write is not None
    assert (selection.notify.handle, selection.write.handle) == (notify, write)


def test_select_falls_back_to_any_service_then_gives_up() -> None:
    odd = tree("abcd", char("ff01", 10, "notify"), char("ff02", 13, "write"))
    assert select_characteristics(odd, JBD.gatt_profiles) is not None
    assert select_characteristics(tree("abcd", char("ff01", 10, "notify")), JBD.gatt_profiles) is None


@pytest.mark.parametrize(
    ("properties", "preference", "expected"),
    [
        (("write", "write-without-response"), "auto", ("with_response", "without_response")),
        (("write-without-response",), "auto", ("without_response",)),
        (("read",), "auto", ("with_response", "without_response")),
        (("write", "write-without-response"), "without_response", ("without_response",)),
        (("write",), "without_response", ("with_response",)),
        ((), "with_response", ("with_response",)),
    ],
)
def test_write_mode_order(properties: tuple[str, ...], preference: str, expected: tuple[str, ...]) -> None:
    assert write_mode_order(properties, preference) == expected  # type: ignore[arg-type]


def test_gatt_candidates_prefers_advertised_protocols() -> None:
    device = tree("ff00", char("ff01", 10, "notify"), char("ff02", 13, "write"))
    assert [p.name for p in gatt_candidates(device, [JBD])] == ["jbd"]
    adv = Advertisement(address="A4:C1:37:00:00:01")
    assert [p.name for p in gatt_candidates(device, [JBD], adv)] == ["jbd"]
    assert gatt_candidates(tree("abcd"), [JBD]) == []


def test_tree_json_and_lookup() -> None:
    device = tree("ff00", GattCharacteristic(uuid("ff01"), 10, ("notify",), ()))
    assert device.to_dict()["services"][1]["characteristics"][0] == {
        "uuid": "ff01",
        "handle": 10,
        "properties": ["notify"],
        "descriptors": [],
    }
    assert len(device.service("FF00")) == 1
    assert [c.handle for c in device.characteristics()] == [3, 10]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A4:C1:37:00:00:01", True),
        ("a4:c1:37:00:00:01", True),
        ("JBD-SP04S034", False),
        ("5F1B2C3D-0000-4000-8000-00805F9B34FB", True),
        ("A4:C1:37", False),
    ],
)
def test_looks_like_address(text: str, expected: bool) -> None:
    assert looks_like_address(text) is expected


def test_renogy_notify_and_write_in_different_services() -> None:
    # Renogy modules write to ffd1 (service ffd0) and notify on fff1 (service fff0).
    device = GattTree(
        (
            GattService(uuid("ffd0"), 8, (char("ffd1", 10, "write-without-response"),)),
            GattService(uuid("fff0"), 20, (char("fff1", 22, "notify"),)),
        )
    )
    selection = select_characteristics(device, get_protocol("renogy").gatt_profiles)
    assert selection is not None
    assert selection.write is not None
    assert (selection.notify.handle, selection.write.handle) == (22, 10)


def test_a_notify_only_profile_needs_no_write_characteristic() -> None:
    profile = GattProfile(service="ffe0", notify="ffe4")
    notifying = GattCharacteristic(uuid=normalize_uuid("ffe4"), handle=12, properties=("notify",))
    tree = GattTree((GattService(uuid=normalize_uuid("ffe0"), handle=10, characteristics=(notifying,)),))
    selection = select_characteristics(tree, [profile])
    assert selection is not None
    assert (selection.notify.handle, selection.write) == (12, None)
    # A notify characteristic is still required.
    silent = GattCharacteristic(uuid=normalize_uuid("ffe4"), handle=12, properties=("read",))
    assert select_characteristics(GattTree((GattService(normalize_uuid("ffe0"), 10, (silent,)),)), [profile]) is None
