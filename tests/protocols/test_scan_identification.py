"""`bmsgate scan` identification: advertisements as the public sources describe them → exactly one family.

Scan matching is data (each definition's ``match``), so these cases check the new families' matchers
against every built-in at once: a pack must be claimed by its own definition and by no other.
"""

from __future__ import annotations

import pytest

from bmsgate.catalog import Kind, default_catalog
from bmsgate.protocols.definition import normalize_uuid
from bmsgate.transports.discovery import Advertisement, match_advertisement

ALL = default_catalog().protocols()


@pytest.mark.parametrize(
    ("advertisement", "family"),
    [
        # aiobmsble renogy_pro_bms.py: RNGRBP* / RNGC* with manufacturer id 0xE14C.
        (Advertisement(address="14:9C:EF:03:68:81", name="RNGRBP12100", manufacturer_data={0xE14C: b""}), "renogy-pro"),
        (Advertisement(address="14:9C:EF:03:68:82", name="RNGC12100", manufacturer_data={0xE14C: b""}), "renogy-pro"),
        # Renogy's BT-2 module keeps matching renogy.
        (Advertisement(address="14:9C:EF:03:68:83", name="BT-TH-6E1C4E2A", service_uuids=("ffd0",)), "renogy"),
        # aiobmsble tdt_bms.py: manufacturer id 54976.
        (Advertisement(address="C0:D6:3C:11:22:33", name="12V100Ah-027", manufacturer_data={54976: b"\x01"}), "tdt"),
        # aiobmsble cbtpwr_bms.py: service ffe5; Creabest names with service fff0; service 03c1 + 0x5352.
        (Advertisement(address="AA:BB:CC:00:11:22", name="CBT-12100", service_uuids=("ffe5",)), "cbtpwr"),
        (Advertisement(address="AA:BB:CC:00:11:23", name="123C456789", service_uuids=("fff0",)), "cbtpwr"),
        (
            Advertisement(address="AA:BB:CC:00:11:24", service_uuids=("03c1",), manufacturer_data={0x5352: b""}),
            "cbtpwr",
        ),
        # aiobmsble eg4_bms.py: service 1000 with manufacturer id 0x6F80, or manufacturer id 0x45CC alone.
        (Advertisement(address="AA:BB:CC:00:22:33", service_uuids=("1000",), manufacturer_data={0x6F80: b""}), "eg4"),
        (Advertisement(address="AA:BB:CC:00:22:34", name="EG4-LL", manufacturer_data={0x45CC: b""}), "eg4"),
        # aiobmsble roypow_bms.py: names starting with a space, service ffe0.
        (Advertisement(address="12:34:56:78:9A:BC", name=" B12100A2303", service_uuids=("ffe0",)), "roypow"),
        (Advertisement(address="12:34:56:78:9A:BD", name=" S24100B", service_uuids=("ffe0",)), "roypow"),
        (Advertisement(address="12:34:56:78:9A:BE", name=" UT12300", service_uuids=("ffe0",)), "roypow"),
        # Aliases are identified as their protocol (aiobmsble ag_bms.py, topband_bms.py, pwrxtreme_bms.py).
        (Advertisement(address="AA:BB:CC:00:33:44", name="AG100L0042", manufacturer_data={21320: b""}), "ej"),
        (Advertisement(address="AA:BB:CC:00:44:55", service_uuids=("ffe0",), manufacturer_data={0: b""}), "topband"),
        (
            Advertisement(address="AA:BB:CC:00:44:56", service_uuids=("ffe0",), manufacturer_data={0xFFFF: b""}),
            "topband",
        ),
        (Advertisement(address="AA:BB:CC:00:44:57", service_uuids=("fff0",), manufacturer_data={76: b""}), "topband"),
        # aiobmsble ective_bms.py: $PFLAC* / NWJ20* / ZM20* with service ffe0 (alias `ective` of topband).
        (Advertisement(address="AA:BB:CC:00:44:58", name="$PFLAC12100", service_uuids=("ffe0",)), "topband"),
        (Advertisement(address="AA:BB:CC:00:44:59", name="NWJ20-0042", service_uuids=("ffe0",)), "topband"),
        (Advertisement(address="AA:BB:CC:00:44:5A", name="ZM20-0042", service_uuids=("ffe0",)), "topband"),
        # aiobmsble nordicnus_bms.py: G-* with the Nordic UART service (alias `nordicnus` of ej).
        (
            Advertisement(
                address="AA:BB:CC:00:88:99",
                name="G-12V300Ah-0345",
                service_uuids=("6e400001-b5a3-f393-e0a9-e50e24dcca9e",),
            ),
            "ej",
        ),
        # aiobmsble greenway_bms.py: address prefix C4:A9:B8 with service fff0.
        (Advertisement(address="C4:A9:B8:12:34:56", name="GW-BMS", service_uuids=("fff0",)), "greenway"),
        # aiobmsble pro_bms.py: the name "Pro BMS" with service fff0.
        (Advertisement(address="AA:BB:CC:00:BB:CC", name="Pro BMS", service_uuids=("fff0",)), "pro"),
        # aiobmsble lipower_bms.py: service af30.
        (Advertisement(address="AA:BB:CC:00:DD:EE", name="LiPower", service_uuids=("af30",)), "lipower"),
        # aiobmsble saftkiste_bms.py: manufacturer id 4660.
        (Advertisement(address="AA:BB:CC:00:CC:DD", manufacturer_data={4660: b"\x01\x02\x03"}), "saftkiste"),
        # aiobmsble cbtpwr_vb_bms.py: "VB" and nine more characters with service fff0 (cbtpwr's Creabest
        # pattern has ten characters).
        (Advertisement(address="AA:BB:CC:01:00:01", name="VB123456789", service_uuids=("fff0",)), "cbtpwr-vb"),
        # aiobmsble abc_bms.py: ABC-* / SOK-* / NB-* / Hoover with service fff0.
        (Advertisement(address="AA:BB:CC:01:00:02", name="SOK-BMS-0042", service_uuids=("fff0",)), "abc"),
        (Advertisement(address="AA:BB:CC:01:00:03", name="ABC-12100", service_uuids=("fff0",)), "abc"),
        (Advertisement(address="AA:BB:CC:01:00:04", name="NB-24100", service_uuids=("fff0",)), "abc"),
        (Advertisement(address="AA:BB:CC:01:00:05", name="Hoover", service_uuids=("fff0",)), "abc"),
        # aiobmsble pylontech_bms.py: RT<digits>..., GModule, GMod, each with the Battery Service 180f.
        (Advertisement(address="AA:BB:CC:01:00:06", name="RT12100-710003", service_uuids=("180f",)), "pylontech"),
        (Advertisement(address="AA:BB:CC:01:00:07", name="GMod", service_uuids=("180f",)), "pylontech"),
        # aiobmsble buknuwo_bms.py: CDZG*.
        (Advertisement(address="AA:BB:CC:01:00:08", name="CDZG12100"), "buknuwo"),
        # aiobmsble neey_bms.py: GW-* / EK-* with service fee7.
        (Advertisement(address="AA:BB:CC:01:00:09", name="GW-24S4EB", service_uuids=("fee7",)), "neey"),
        (Advertisement(address="AA:BB:CC:01:00:0A", name="EK-B24S8E200A", service_uuids=("fee7",)), "neey"),
        # aiobmsble felicity_bms.py: F07* / F10*.
        (Advertisement(address="AA:BB:CC:01:00:0B", name="F10011002424470238"), "felicity"),
        (Advertisement(address="AA:BB:CC:01:00:0C", name="F07000000001"), "felicity"),
        # aiobmsble lithionics_bms.py: Li<digit>-* with service ffe0 and manufacturer id 19784.
        (
            Advertisement(
                address="AA:BB:CC:01:00:0D",
                name="Li3-061322094",
                service_uuids=("ffe0",),
                manufacturer_data={19784: b"\x00"},
            ),
            "lithionics",
        ),
        # aiobmsble superb_bms.py: Epsilon-* (connectable; no service or manufacturer data in its matcher).
        (Advertisement(address="AA:BB:CC:01:00:0E", name="Epsilon-12V100Ah"), "superb"),
        # aiobmsble myvolta_bms.py: VPS-* with its 128-bit service.
        (
            Advertisement(
                address="AA:BB:CC:01:00:0F",
                name="VPS-48V100",
                service_uuids=("00035b03-58e6-07dd-021a-08123a000300",),
            ),
            "myvolta",
        ),
        # aiobmsble allpowers_bms.py: AP S* and VOLIX* (connectable; no service or manufacturer data in its matcher).
        (Advertisement(address="AA:BB:CC:01:00:10", name="AP S300 V2.0"), "allpowers"),
        (Advertisement(address="AA:BB:CC:01:00:11", name="VOLIX-1500"), "allpowers"),
        # aiobmsble cw20_bms.py: CW20_BLE or ATORCH-CW20 with service ffe0 or fff0.
        (Advertisement(address="AA:BB:CC:01:00:12", name="CW20_BLE", service_uuids=("ffe0",)), "cw20"),
        (Advertisement(address="AA:BB:CC:01:00:13", name="ATORCH-CW20", service_uuids=("fff0",)), "cw20"),
        # aiobmsble ws_nova_bms.py: the BLE module's OUIs 60:6E:41 / 10:23:81 with service fff0 (no name known).
        (Advertisement(address="60:6E:41:12:34:56", service_uuids=("fff0",)), "ws-nova"),
        (Advertisement(address="10:23:81:12:34:57", name="any name", service_uuids=("fff0",)), "ws-nova"),
        # aiobmsble dometic_bms.py: manufacturer id 2117 (0x0845) whose data starts 14 85; no name in its matcher.
        (Advertisement(address="AA:BB:CC:00:66:77", manufacturer_data={2117: b"\x14\x85\x00\x01"}), "dometic"),
        # aiobmsble dpwrcore_bms.py: TBA-* with service fff0 (DXB-* needs an unlock bmsgate cannot send yet).
        (
            Advertisement(address="AA:BB:CC:01:00:14", name="TBA-MockBLEDevice_C0FE", service_uuids=("fff0",)),
            "dpwrcore",
        ),
        # aiobmsble smartbms_bms.py: "123BMS-BLE*" after a rename, with the Nordic UART service (the default
        # name "123\\SmartBMS" is x123smart's too: test_a_123smartbms_name_is_claimed_by_both_generations).
        (
            Advertisement(
                address="AA:BB:CC:01:00:16",
                name="123BMS-BLE-Boat",
                service_uuids=("6e400001-b5a3-f393-e0a9-e50e24dcca9e",),
            ),
            "smartbms",
        ),
        # aiobmsble ogt_bms.py: SmartBat-[AB]* with service fff0 (its test's names).
        (Advertisement(address="AA:BB:CC:01:00:17", name="SmartBat-A12345", service_uuids=("fff0",)), "ogt"),
        (Advertisement(address="AA:BB:CC:01:00:18", name="SmartBat-B12294", service_uuids=("fff0",)), "ogt"),
    ],
)
def test_each_new_family_is_identified_alone(advertisement: Advertisement, family: str) -> None:
    normalized = Advertisement(
        address=advertisement.address,
        name=advertisement.name,
        service_uuids=tuple(normalize_uuid(uuid) for uuid in advertisement.service_uuids),
        manufacturer_data=advertisement.manufacturer_data,
    )
    assert [match.protocol for match in match_advertisement(normalized, ALL)] == [family]


def test_a_ws_nova_oui_without_its_service_is_not_claimed() -> None:
    # The OUI is the BLE module's maker's, not Wattstunde's: without service fff0 it proves nothing.
    bare = Advertisement(address="60:6E:41:12:34:58", service_uuids=(normalize_uuid("ffe0"),))
    assert "ws-nova" not in [match.protocol for match in match_advertisement(bare, ALL)]


def test_an_offgridtec_name_of_another_type_is_not_claimed() -> None:
    # Only types A and B have a known key and register set (aiobmsble refuses type C as unknown).
    other = Advertisement(address="AA:BB:CC:01:00:17", name="SmartBat-C12294", service_uuids=(normalize_uuid("fff0"),))
    assert "ogt" not in [match.protocol for match in match_advertisement(other, ALL)]


def test_legacy_ant_names_are_claimed_by_both_ant_protocols() -> None:
    # aiobmsble ant_leg_bms.py claims ANT-BLE0* / ANT-BLE1* with service ffe0, which `ant` claims too
    # (ANT-BLE* + ffe0): the advertisement cannot tell the two protocols apart, so scan lists both and
    # `bmsgate probe` (a request of each) decides.
    legacy = Advertisement(address="AA:BB:CC:A2:34:56", name="ANT-BLE16ZMUB", service_uuids=(normalize_uuid("ffe0"),))
    assert [match.protocol for match in match_advertisement(legacy, ALL)] == ["ant", "ant-leg"]
    current = Advertisement(address="AA:BB:CC:A2:34:57", name="ANT-BLE24BHUB", service_uuids=(normalize_uuid("ffe0"),))
    assert [match.protocol for match in match_advertisement(current, ALL)] == ["ant"]


def test_a_123smartbms_name_is_claimed_by_both_generations() -> None:
    # aiobmsble smartbms_bms.py and x123smart_bms.py both claim "123\\SmartBMS" with the Nordic UART service:
    # the 58-byte bridge and the gen3 ASCII module advertise alike, so scan lists both (only the link tells).
    both = Advertisement(
        address="AA:BB:CC:01:00:15",
        name="123\\SmartBMS",
        service_uuids=(normalize_uuid("6e400001-b5a3-f393-e0a9-e50e24dcca9e"),),
    )
    assert [match.protocol for match in match_advertisement(both, ALL)] == ["smartbms", "x123smart"]


def test_roypow_needs_its_service() -> None:
    # The leading-space names alone are too loose (" B12..." could be anything): the service is required.
    bare = Advertisement(address="12:34:56:78:9A:BC", name=" B12100A2303")
    assert "roypow" not in [match.protocol for match in match_advertisement(bare, ALL)]


@pytest.mark.parametrize("name", default_catalog().names(Kind.PROTOCOL))
def test_every_ble_family_can_be_identified_from_advertisements(name: str) -> None:
    protocol = default_catalog().protocol(name)
    if protocol.definition.gatt is not None:
        assert protocol.definition.match, f"{name} has a GATT profile but no advertisement matcher"


def test_seplos_v2_names_are_claimed_with_jbd_by_their_shared_service() -> None:
    # aiobmsble seplos_v2_bms.py: BP0? / BP1? / BP2? with service ff00, which every JBD board advertises too:
    # scan lists both and `bmsgate probe` (a request of each) decides.
    advertisement = Advertisement(address="AA:BB:CC:00:55:66", name="BP02", service_uuids=(normalize_uuid("ff00"),))
    assert [match.protocol for match in match_advertisement(advertisement, ALL)] == ["jbd", "seplos-v2"]


def test_daren_names_are_claimed_with_jbd_by_their_shared_service() -> None:
    advertisement = Advertisement(address="AA:BB:CC:00:66:77", name="DWF12345", service_uuids=(normalize_uuid("ff00"),))
    assert [match.protocol for match in match_advertisement(advertisement, ALL)] == ["daren", "jbd"]


@pytest.mark.parametrize(
    "advertisement",
    [
        Advertisement(address="AA:BB:CC:00:77:88", name="ECO-WORTHY 02_1234"),
        Advertisement(address="AA:BB:CC:00:77:89", name="DCHOUSE-12100", service_uuids=(normalize_uuid("fff0"),)),
    ],
)
def test_ecoworthy_is_identified_alone(advertisement: Advertisement) -> None:
    # aiobmsble ecoworthy_bms.py: "ECO-WORTHY 02_*" alone, "DCHOUSE*" / "ECO-WORTHY*" with service fff0.
    assert [match.protocol for match in match_advertisement(advertisement, ALL)] == ["ecoworthy"]


def test_doerr_is_told_from_powerboozt_by_its_service_data() -> None:
    # aiobmsble doerrpwr_bms.py: "BT-Battery*" with service data for ffe1; PowerBoozt modules advertise the
    # same names with manufacturer id 32516 and service fff0.
    doerr = Advertisement(
        address="AA:BB:CC:00:99:AA", name="BT-Battery-0042", service_data={normalize_uuid("ffe1"): b"\x01"}
    )
    assert [match.protocol for match in match_advertisement(doerr, ALL)] == ["doerrpwr"]
    powerboozt = Advertisement(
        address="AA:BB:CC:00:99:AB",
        name="BT-Battery-0043",
        service_uuids=(normalize_uuid("fff0"),),
        manufacturer_data={32516: b""},
    )
    assert [match.protocol for match in match_advertisement(powerboozt, ALL)] == ["pwrboozt"]


def test_epoch_pro_is_identified_by_service_and_service_data() -> None:
    # aiobmsble epoch_pro_bms.py: service ffe0 with service data for 3333 (no name); ffe0 alone is not enough.
    epoch = Advertisement(
        address="AA:BB:CC:00:AA:BB",
        service_uuids=(normalize_uuid("ffe0"),),
        service_data={normalize_uuid("3333"): b""},
    )
    matches = match_advertisement(epoch, ALL)
    assert [match.protocol for match in matches] == ["epoch-pro"]
    assert matches[0].reason == "service ffe0 + service data 3333"
    bare = Advertisement(address="AA:BB:CC:00:AA:BC", service_uuids=(normalize_uuid("ffe0"),))
    assert "epoch-pro" not in [match.protocol for match in match_advertisement(bare, ALL)]


def test_greenway_needs_its_address_prefix() -> None:
    # Service fff0 alone is shared by many modules.
    other = Advertisement(address="AA:BB:CC:12:34:56", service_uuids=(normalize_uuid("fff0"),))
    assert "greenway" not in [match.protocol for match in match_advertisement(other, ALL)]


def test_pylontech_needs_the_battery_service() -> None:
    # aiobmsble's matcher test: a correct name without 180f is not claimed, nor "RT" without digits.
    for advertisement in (
        Advertisement(address="AA:BB:CC:01:00:0B", name="RT12100-710003"),
        Advertisement(address="AA:BB:CC:01:00:0C", name="RT-fake", service_uuids=(normalize_uuid("180f"),)),
    ):
        assert "pylontech" not in [match.protocol for match in match_advertisement(advertisement, ALL)]


def test_superb_v2_is_identified_by_name_and_manufacturer_id() -> None:
    # aiobmsble superb_v2_bms.py: Epsilon* with manufacturer id 0x50BE (its data starts "Epsilon V2").
    v2 = Advertisement(address="AA:BB:CC:01:00:10", name="Epsilon V2 12V", manufacturer_data={0x50BE: b"Epsilon V2"})
    assert [match.protocol for match in match_advertisement(v2, ALL)] == ["superb-v2"]
    # Without the manufacturer id it is no V2; a V2 named like a V1 (Epsilon-*) is claimed by both (probe decides,
    # the engine has no matcher on the manufacturer data's content).
    assert [match.protocol for match in match_advertisement(Advertisement(address=v2.address, name=v2.name), ALL)] == []
    named_like_v1 = Advertisement(address="AA:BB:CC:01:00:11", name="Epsilon-12V", manufacturer_data={0x50BE: b""})
    assert [match.protocol for match in match_advertisement(named_like_v1, ALL)] == ["superb", "superb-v2"]


def test_dyness_junior_is_identified_as_jbd_by_its_name() -> None:
    # aiobmsble dyness_jun_bms.py: R07* (alias `dyness-jun` of jbd; the unlock profile is chosen at connect).
    dyness = Advertisement(address="AA:BB:CC:01:00:12", name="R07-0042", service_uuids=(normalize_uuid("fe00"),))
    matches = match_advertisement(dyness, ALL)
    assert [match.protocol for match in matches] == ["jbd"]
    assert matches[0].reason == "name R07*"


def test_a_nordic_uart_module_with_another_name_is_not_a_smartbms() -> None:
    # The Nordic UART service is on many BLE bridges: without the 123electric name it says nothing.
    other = Advertisement(
        address="AA:BB:CC:01:00:12",
        name="nRF52810 UART",
        service_uuids=(normalize_uuid("6e400001-b5a3-f393-e0a9-e50e24dcca9e"),),
    )
    assert "smartbms" not in [match.protocol for match in match_advertisement(other, ALL)]
