"""Real frames of the aiobmsble families defined from issue 14 on, with the values their source states.

Every capture is copied byte for byte from a public test suite (hex as published) and carries the values
that suite states for it (aiobmsble's ``BMSSample`` keys translated to snapshot keys: ``battery_level`` →
``soc``, ``temp_values`` → ``temperatures``, ``design_capacity`` in Ah, ``problem_code`` → the raw alarm
word in extras). ``tests/protocols/test_families.py`` decodes each capture and compares;
``tests/protocols/vectorgen_families.py`` turns them into conformance vectors.
"""

from __future__ import annotations

import dataclasses
from typing import Final

AIOBMSBLE: Final = "patman15/aiobmsble, {}"


@dataclasses.dataclass(frozen=True)
class FamilyCapture:
    """One poll's reply frames of one family, as a public source published them."""

    protocol: str
    replies: dict[str, list[bytes]]
    """Reply frames per request name of the definition (a missing name: that request went unanswered)."""
    source: str
    stated: dict[str, object]
    """Snapshot keys → the value the source states for these frames."""
    vector: str = "poll"
    """The decode vector's name (``decode-<vector>.json``); the first capture of a family is its poll."""
    tolerance: float = 1e-6
    """How far a decoded number may be from the stated one (the source rounded it)."""
    real: bool = True
    """False: the source built the frames from a documented layout (its test's helper), no pack sent them."""
    device_name: str | None = None
    """The pack's advertised name, where the definition depends on it: the frames are then as on the wire
    (a ``wire_key`` scrambles them) and the name chooses the layout (Offgridtec's types A and B)."""


def _frames(*texts: str) -> list[bytes]:
    return [bytes.fromhex(text) for text in texts]


PACE: Final = FamilyCapture(
    "pace",
    {
        "serial_number": _frames("9A0000000200000E0D3132333435363738393031325A7D7D9D"),
        "versions": _frames(
            "9A00000001000043001550313653313030412D33313931362D312E303600002050313653313030412D33313931362D312E30"
            "362D3030310000000000000000000A323139333956313430006CA79D"
        ),
        "pack": _frames(
            "9A00000A0100002B02FE8014B61CFF271027104A6400EF000000000000000014D70000030B8E010B890B930B9C0A0CF0100C"
            "ECA4B49D"
        ),
        "cells": _frames(
            "9A00000A020000440214B6100CEE0B890CEC0B8B0CEE0B8E0CEF0B8B0CEF00000CEE00000CEF00000CEF00000CEF00000CF0"
            "00000CEF00000CEE00000CEE00000CEF00000CEE00000CEC000032A19D"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_pace_bms.py (MockPaceBleakClient)"),
    {
        # The pack frame's comment in the source: "pack -3.84A, 53.02V" (its REF_VALUE's 53.01 V / -4.23 A
        # come from the 0x0A00 system reply, which this definition does not read).
        "voltage": 53.02,
        "current": -3.84,
        "soc": 74,
        "soh": 100,
        "design_capacity": 100,
        "cycles": 239,
        "cell_voltages": [
            3.31,
            3.308,
            3.31,
            3.311,
            3.311,
            3.31,
            3.311,
            3.311,
            3.311,
            3.312,
            3.311,
            3.31,
            3.31,
            3.311,
            3.31,
            3.308,
        ],
        "temperatures": [22.2, 22.4, 22.7, 22.4],
        "device.serial_number": "123456789012Z",
        "device.software_version": "P16S100A-31916-1.06",
        "device.hardware_version": "21939V140",
    },
)

VATRER: Final = FamilyCapture(
    "vatrer",
    {
        "status": _frames("0203281493FFFFFE1000280F822710001B00640001000000010CE00CDD0003000F00100014001200020004E4E5"),
        "temperatures": _frames("0203240004001200140013001400140014000000000000000000000000000000340240000000004643"),
        "cells": _frames(
            "02033E00100CDF0CDF0CE00CE00CE00CE00CE00CE00CE00CE00CE00CE00CE00CE00CE00CDD00000000000000000000000000"
            "000000000000000000000000000000CB54"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_vatrer.py (MockVatrerBleakClient)"),
    {
        "voltage": 52.67,
        "current": -4.96,
        "soc": 40,
        "remaining_capacity": 39.7,
        "cycles": 27,
        "extras.cell_delta": 0.003,
        "cell_voltages": [3.295, 3.295, *[3.296] * 13, 3.293],
        # aiobmsble lists six values, the last one its MOSFET sensor.
        "temperatures": [18.0, 20.0, 19.0, 20.0, 20.0],
        "mosfet_temperature": 20.0,
        "alarms": [],
    },
)

GOBEL: Final = FamilyCapture(
    "gobel",
    {
        "device_info": _frames(
            "010346503453323030412D34303536392D312E30320000343035363931314131313030303332502020202047502D4C413132"
            "2D3331343230323530363138000000000000000000000082A3"
        ),
        "status": _frames(
            "01037600000533006100647B117EED7AA800010000000000000C0000000000C00000040CFF0D020D020D0100000000000000"
            "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000100D100"
            "000000000000000000000000000000000000D3FFFF01D6"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_gobel_bms.py (_FRAME_MAIN_DATA, _FRAME_DEVICE_INFO)"),
    {
        "voltage": 13.31,
        "current": 0.0,
        "soc": 97,
        "soh": 100,
        "remaining_capacity": 315.05,
        # aiobmsble floors the design capacity to whole Ah (324).
        "design_capacity": 324.93,
        "cycles": 1,
        "charge_enabled": True,
        "discharge_enabled": True,
        "cell_voltages": [3.327, 3.33, 3.33, 3.329],
        # aiobmsble lists [20.9, 21.1]: one cell sensor and the MOSFET sensor.
        "temperatures": [20.9],
        "mosfet_temperature": 21.1,
        "alarms": [],
        "device.software_version": "P4S200A-40569-1.02",
        "device.serial_number": "4056911A1100032P",
        "device.model": "GP-LA12-31420250618",
    },
)

SAIHANG: Final = FamilyCapture(
    "saihang",
    {
        "status": _frames(
            "A5A50003900000000000000AA800600064000025A600002710000027100002FFFF0001000006000000000000080DA90D6A0D"
            "280D3D0D2C0D6B0D4D0D38FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00020B430B46FFFFFFFFFFFFFFFFFF"
            "FFFFFFFFFFFFFF0B560BA4FFFFFFFFFFFFFFFFFFFFFFFFFFFF00006D600000721000006810000A0DAC0E420D02000A00009A"
            "5A"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_saihang_bms.py (MockSaihangBleakClient)"),
    {
        "voltage": 27.28,
        "current": 0.0,
        "soc": 96,
        "soh": 100,
        "remaining_capacity": 96.38,
        "design_capacity": 100.0,
        "cycles": 2,
        "charge_enabled": True,
        "discharge_enabled": True,
        "balancing": False,
        "cell_voltages": [3.497, 3.434, 3.368, 3.389, 3.372, 3.435, 3.405, 3.384],
        "temperatures": [15.3, 15.6],
        "mosfet_temperature": 17.2,
        "extras.ambient_temperature": 25.0,
        # aiobmsble: problem_code 0 (the inverted word)
        "extras.protection_word": 0xFFFF,
        "alarms": [],
    },
)

BRAUNPWR: Final = FamilyCapture(
    "braunpwr",
    {
        "module_version": _frames("7B741D4B535F424C455F574946495F566572312E302E305F32303234303331337D"),
        "program_version": _frames("7BF4030203017D"),
        "pack": _frames("7B0120005314D300D200B400BEFB8761C275300000000000087E810000000E000000647D"),
        "cells": _frames("7B0221100CFF0D060D050D070D050D070D050D0A0D040D070D060D080D050D060D080D097D"),
        "temperatures": _frames("7B0309040B910B910B910B917D"),
    },
    AIOBMSBLE.format("tests/bms/test_braunpwr_bms.py (MockBraunPWRBleakClient)"),
    {
        "voltage": 53.31,
        "current": -11.45,
        "soc": 83,
        "soh": 100,
        "remaining_capacity": 250.26,
        "design_capacity": 300,
        "cycles": 8,
        "cell_voltages": [
            3.327,
            3.334,
            3.333,
            3.335,
            3.333,
            3.335,
            3.333,
            3.338,
            3.332,
            3.335,
            3.334,
            3.336,
            3.333,
            3.334,
            3.336,
            3.337,
        ],
        "temperatures": [23.0, 23.0, 23.0, 23.0],
        "extras.balancer_word": 32385,
        "extras.problem_code": 0,
        "alarms": [],
        "device.hardware_version": "KS_BLE_WIFI_Ver1.0.0_20240313",
        # aiobmsble: "2.3.1" (three bytes); the third is extras.software_patch.
        "device.software_version": "2.3",
        "extras.software_patch": 1,
    },
)

HUMSIENK: Final = FamilyCapture(
    "humsienk",
    {
        "handshake": _frames("AA00000000"),
        "model": _frames("AA110A424D432D3034533030316202"),
        "version": _frames("AAF50C563032000000000000000000B901"),
        "status": _frames("AA200F0000000080008000000000000000002F01"),
        "pack": _frames("AA211A4A33000082FBFFFF2A64E4F70000F04902000300231A1A1A2C1A9108"),
        "cells": _frames(
            "AA2230D10CDB0CD40CD00C00000000000000000000000000000000000000000000000000000000000000000000000000000000D203"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_humsienk_bms.py (MockHumsienkBleakClient)"),
    {
        "voltage": 13.13,
        "current": -1.15,
        "soc": 42,
        "soh": 100,
        "remaining_capacity": 63.46,
        "design_capacity": 150,
        "cycles": 3,
        "cell_voltages": [3.281, 3.291, 3.284, 3.28],
        # aiobmsble's test lists [35, 26, 26, 26, 44, 26]; its docs/humsienk_bms.md names them cell 1-4, MOSFET,
        # environment.
        "temperatures": [35.0, 26.0, 26.0, 26.0],
        "mosfet_temperature": 44.0,
        "extras.ambient_temperature": 26,
        "charge_enabled": True,
        "discharge_enabled": True,
        "heating": False,
        "balancing_cells": [],
        "alarms": [],
        "device.model": "BMC-04S001",
        "device.hardware_version": "V02",
    },
)

C4S: Final = FamilyCapture(
    "c4s",
    {
        "registers": _frames(
            "02038C0535FFFFFEAA006224012710006B00620001000000000D0B0D01000A00040003001C001B00010000000000040D090D"
            "020D010D0B000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "000000000000000002001B001C00000000001B001C00000000000000000000000000000032000000000000F42F"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_c4s.py (a real request/response pair recorded while discharging)"),
    {
        "voltage": 13.33,
        "current": -3.42,
        "soc": 98,
        "remaining_capacity": 92.17,
        "design_capacity": 100,
        "cycles": 107,
        "soh": 98,
        "extras.cell_delta": 0.01,
        "cell_voltages": [3.337, 3.33, 3.329, 3.339],
        "mosfet_temperature": 28.0,
        "extras.ambient_temperature": 27,
    },
)

_EJ_CAPACITY: Final = b":009031001E00000002000A000AD8~"
EJ: Final = FamilyCapture(
    "ej",
    {
        "realtime": [
            b":0082310080000101C00000880F540F3C0F510FD70F310F2C0F340F3A0FED0FED0000000000000000"
            b"000000000000000248424242F0000000000000000001AB~"
        ],
        "capacity": [_EJ_CAPACITY],
    },
    AIOBMSBLE.format("tests/bms/test_ej_bms.py (MockEJBleakClient)"),
    {
        "voltage": 39.517,
        "current": -0.02,
        "soc": 1,
        "cycles": 0,
        "remaining_capacity": 0.2,
        "cell_voltages": [3.924, 3.900, 3.921, 4.055, 3.889, 3.884, 3.892, 3.898, 4.077, 4.077],
        "temperatures": [32],
        "alarms": [],
        "balancing": False,
        "charge_enabled": True,
        "discharge_enabled": True,
        "heating": False,
    },
)
_EJ_SINGLE: Final = (
    b":008231008C000000000000000CBF0CC00CEA0CD50000000000000000000000000000000000000000"
    b"00000000008C000041282828F000000000000100004B044C05DC05DCB2~"
)
EJ_SINGLE_FRAME: Final = FamilyCapture(
    "ej",
    {"realtime": [_EJ_SINGLE]},
    AIOBMSBLE.format("tests/bms/test_ej_bms.py (MockEJsfBleakClient, Metrisun / Chins single frame)"),
    {
        "voltage": 13.118,
        "current": 1.4,
        "soc": 75,
        "cycles": 1,
        "remaining_capacity": 110.0,
        "design_capacity": 150,
        "cell_voltages": [3.263, 3.264, 3.306, 3.285],
        "temperatures": [25],
        "alarms": [],
        "charge_enabled": True,
        "discharge_enabled": True,
        "heating": False,
    },
    vector="single-frame",
)

AG: Final = FamilyCapture(
    "ag",
    {
        "realtime": [
            b":0082500080000101C00000880CE00CE10CDF0CE100000000000000000000000000000000000000000000000000000"
            b"14E2E2A2A2AF002000000003F003F3C02~"
        ],
        "capacity": [b":009031001E0000024E03E803E8A1~"],
    },
    AIOBMSBLE.format("tests/bms/test_ag_bms.py (MockAGBleakClient)"),
    {
        "voltage": 13.185,
        "current": -3.34,
        "soc": 60,
        "cycles": 63,
        "remaining_capacity": 59.0,
        "cell_voltages": [3.296, 3.297, 3.295, 3.297],
        "temperatures": [6.0],
        "alarms": [],
        "balancing": False,
        "charge_enabled": True,
        "discharge_enabled": True,
        "heating": False,
    },
)

REDODO: Final = FamilyCapture(
    "redodo",
    {
        "status": _frames(
            "000065019355aa0046660000bc670000f50cf70cfc0cfb0cf80cf20cfa0cf50c0000000000000000000000000000000065faffff"
            "17001600feff00000000e91a0429000000000000000000000000000000000000000000000000410064000000030000005f010000a2"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_redodo_bms.py (MockRedodoBleakClient)"),
    {
        # aiobmsble states 26.556 V, the cell sum at offset 12; the frame's comment says "26.182V, cellVS
        # 26.556V": the litime definition reports offset 8 as the pack voltage (docs/protocols/litime.md).
        "extras.cell_voltage_sum": 26.556,
        "voltage": 26.182,
        "current": -1.435,
        "soc": 65,
        "soh": 100,
        "remaining_capacity": 68.89,
        "design_capacity": 105,
        "cycles": 3,
        "cell_voltages": [3.317, 3.319, 3.324, 3.323, 3.320, 3.314, 3.322, 3.317],
        # aiobmsble: [23, 22, -2] with 22 (offset 54) as a cell sensor; it is the MOSFET sensor.
        "temperatures": [23.0, -2.0],
        "mosfet_temperature": 22.0,
        "extras.protection_code": 0,
        "heating": False,
        "balancing": False,
        "alarms": [],
    },
)

# Topband frames as aiobmsble's tests publish them: a binary type byte, 112 hex digits, garbage around them.
_TOPBAND_ECTIVE: Final = (
    b"6F2\x00^84350000F8CDFFFF2CF9020097016200E10B000000005E0D710D650D5E0D00000000000000000000000000000000000000000"
    b"0000000094F\xafF833000000000000\x00\x00\x00\x00\x00\x00\x00\x00"
)
_TOPBAND_STATED: Final = {
    "voltage": 13.7,
    "current": -12.808,
    "soc": 98,
    "cycles": 407,
    "remaining_capacity": 194.86,
    "cell_voltages": [3.422, 3.441, 3.429, 3.422],
    "temperatures": [30.95],
    "extras.problem_code": 0,
    "alarms": [],
}
TOPBAND: Final = FamilyCapture(
    "topband",
    {"status": [_TOPBAND_ECTIVE]},
    AIOBMSBLE.format("tests/bms/test_topband_bms.py (_PROTO_DEFS 0x5E, Ective)"),
    _TOPBAND_STATED,
)
TOPBAND_STARTCRAFT: Final = FamilyCapture(
    "topband",
    {
        "status": [
            b"\x836234000076FEFFFF888A010016006200530B008007B4160D170D190D1C0D000000000000000000000000000000000000000"
            b"00000000007C2" + b"\x11" * 8
        ]
    },
    AIOBMSBLE.format("tests/bms/test_topband_bms.py (_PROTO_DEFS 0x83, StartCraft)"),
    {
        "voltage": 13.41,
        "current": -0.394,
        "soc": 98,
        "cycles": 22,
        "remaining_capacity": 101,
        "cell_voltages": [3.35, 3.351, 3.353, 3.356],
        "temperatures": [16.75],
        "extras.problem_code": 0,
        "alarms": [],
    },
    vector="startcraft",
)
TOPBAND_KILOVAULT: Final = FamilyCapture(
    "topband",
    {
        "status": [
            b"\xb0903300003EFEFFFF340F03007D005E00910B00010000DE0C080DE20C050D000000000000000000000000000000000000000"
            b"00000000007BA" + b"R" * 8
        ]
    },
    AIOBMSBLE.format("tests/bms/test_topband_bms.py (_PROTO_DEFS 0xB0, KiloVault)"),
    {
        "voltage": 13.2,
        "current": -0.45,
        "soc": 94,
        "cycles": 125,
        "remaining_capacity": 200.5,
        "cell_voltages": [3.294, 3.336, 3.298, 3.333],
        "temperatures": [22.95],
        "extras.problem_code": 0,
        "alarms": [],
    },
    vector="kilovault",
)
PWRXTREME: Final = FamilyCapture(
    "pwrxtreme",
    {
        "status": [
            b"^C334000000000000203C030001006400B40B00000100100D3C0D3D0D3A0D00000000000000000000000000000000000000"
            b"00000000000372"
        ]
    },
    AIOBMSBLE.format("tests/bms/test_pwrxtreme_bms.py (_PROTO_DEFS 0x5E, PowerXtreme X210)"),
    {
        "voltage": 13.507,
        "current": 0.0,
        "soc": 100,
        "cycles": 1,
        "remaining_capacity": 212.0,
        "cell_voltages": [3.344, 3.388, 3.389, 3.386],
        "temperatures": [26.45],
        "extras.problem_code": 0,
        "alarms": [],
    },
)

_SEPLOS_V2_PARALLEL: Final = (
    "7E1400620000300000100CF40CEE060B930B7F0BB60B8D00D714B411140720D0020820D0007103E814B90700020308{}0D"
)
SEPLOS_V2: Final = FamilyCapture(
    "seplos-v2",
    {
        "device_info": _frames(
            "7E14005100002443414E3A504E475F4459455F4C7578705F544242313130312D5350373620100601014601A26C0D"
        ),
        "pack": _frames(
            "7E14026100006A0002100CF00CF10CF10CF10CF10CF00CF10CF30CEF0CF00CF10CF10CF10CF00CF10CF1060B8F0B890B8A0B93"
            "0BC00B9802AD14B4383A066D6002026D60008003E814BB00000000000000000000000000000000000000000000000002030800"
            "0000000000000000000000C1D70D"
        ),
        "parallel": _frames(_SEPLOS_V2_PARALLEL.format("00000000000000007631")),
    },
    AIOBMSBLE.format("tests/bms/test_seplos_v2_bms.py (MockSeplosv2BleakClient)"),
    {
        "voltage": 53.0,
        "current": 6.85,
        "soc": 51.4,
        "soh": 100.0,
        "remaining_capacity": 143.94,
        "cycles": 128,
        "cell_voltages": [
            3.312,
            3.313,
            3.313,
            3.313,
            3.313,
            3.312,
            3.313,
            3.315,
            3.311,
            3.312,
            3.313,
            3.313,
            3.313,
            3.312,
            3.313,
            3.313,
        ],
        "temperatures": [22.8, 22.2, 22.3, 23.2, 27.7, 23.7],
        "extras.pack_count": 1,
        "balancing": False,
        "charge_enabled": True,
        "discharge_enabled": True,
        "heating": False,
        "alarms": [],
        "device.model": "B1101-SP76",
        "device.software_version": "16.6",
    },
)

PWRBOOZT: Final = FamilyCapture(
    "pwrboozt",
    {
        "status": [
            b":01540100EC000102030405060D360D360D380D3000000000000000000000000000000000000000"
            b"0000000000F00100003D3D3D3D10DD0000320A7FFFFFFF34D4000804003D62000493E00004BDCC0"
            b"00493E0000105F0010600010000000000000000000000000000000000000000000000000000EB"
            b"\x00~\x00\x00\x00"
        ]
    },
    AIOBMSBLE.format("tests/bms/test_pwrboozt.py (MockPwrBBleakClient)"),
    {
        "voltage": 13.524,
        "current": 12.81,
        "soc": 98,
        "cycles": 61,
        "design_capacity": 300,
        "cell_voltages": [3.382, 3.382, 3.384, 3.376],
        "temperatures": [21.0, 21.0, 21.0, 21.0],
        # aiobmsble's cycle_charge (294.0) is its own estimate, design capacity × SoC: no frame field.
    },
)

_DAREN_CELLS_STATED: Final = {"alarms": [], "charge_enabled": True, "discharge_enabled": True, "soh": 99}
DAREN: Final = FamilyCapture(
    "daren",
    {
        "init": _frames("DDFF000700BA03242D5980FE1277"),
        "device_info": _frames(
            "DD0800C1444A4D323530323236313334310000000000000000000000000000000000444A4D32353032323631333431000000"
            "0000000000000000000000000000444A4D323530323236313334310000000000000000000000000000000000190304445200"
            "000000000000000000000000000000000056322E3231000000000044525F53544430355F3136533230304A4332365F56312E"
            "352E345F543200000000000000000000000000000000000000000044522D5749464930325F56312E322E3700000000E97D77"
        ),
        "basic_info": _frames(
            "DD0300271485000041017EB900D6000000000000000000330310040BC90BCD0BCB0BCE0BAF0BCA63000000F75A77"
        ),
        "cell_voltages": _frames("DD0400200CCB0CCA0CCA0CCB0CCA0CCA0CCA0CCB0CCC0CCC0CCB0CCA0CCB0CCB0CCC0CCAF27477"),
    },
    AIOBMSBLE.format("tests/bms/test_daren_bms.py (_PROTO_DEFS 0x1)"),
    {
        **_DAREN_CELLS_STATED,
        "voltage": 52.53,
        "current": 0.0,
        "soc": 51,
        "remaining_capacity": 166.41,
        # aiobmsble floors the design capacity to whole Ah (324).
        "design_capacity": 324.41,
        "cycles": 214,
        "cell_voltages": [
            3.275,
            3.274,
            3.274,
            3.275,
            3.274,
            3.274,
            3.274,
            3.275,
            3.276,
            3.276,
            3.275,
            3.274,
            3.275,
            3.275,
            3.276,
            3.274,
        ],
        # aiobmsble: four CELL sensors, then MOSFET (26.0) and AMBIENT (28.7).
        "temperatures": [28.6, 29.0, 28.8, 29.1],
        "mosfet_temperature": 26.0,
        "extras.ambient_temperature": 28.7,
        "extras.protection_word": 0,
        "device.model": "DJM2502261341",
        "device.hardware_version": "V2.21",
        "device.software_version": "DR_STD05_16S200JC26_V1.5.4_T2",
        "extras.module_firmware": "DR-WIFI02_V1.2.7",
    },
)
DAREN_EXTENDED: Final = FamilyCapture(
    "daren",
    {
        "init": _frames("DDFF000700BA03242D5980FE1277"),
        "device_info": _frames(
            "DD0800C1444A4D323431323235303239390000000000000000000000000000000000444A4D32343132323530323939000000"
            "0000000000000000000000000000444A4D323431323235303239390000000000000000000000000000000000180C1F445200"
            "000000000000000000000000000000000056322E3231000000000044525F595030315F3136533230304A4332365F56312E30"
            "2E325F54310000000000000000000000000000000000000000000044522D5749464930325F56312E342E3131000000E95D77"
        ),
        "basic_info": _frames(
            "DD03002F147AFFFFFFFFFFFF012D0000000000000000002F0B10040BB60BB70BB90BBB0BAB0BC26300000005900BB8FFFFFF"
            "7CEF0977"
        ),
        "cell_voltages": _frames("DD0400200CCC0CCC0CCD0CCD0CCD0CCD0CCD0CCA0CCC0CCC0CCB0CCD0CCC0CCD0CCC0CCCF25C77"),
    },
    AIOBMSBLE.format("tests/bms/test_daren_bms.py (_PROTO_DEFS 0x2, the extended tail)"),
    {
        **_DAREN_CELLS_STATED,
        "voltage": 52.42,
        "current": -13.2,
        "soc": 47,
        "remaining_capacity": 142.4,
        "design_capacity": 300,
        "cycles": 301,
        "cell_voltages": [
            3.276,
            3.276,
            3.277,
            3.277,
            3.277,
            3.277,
            3.277,
            3.274,
            3.276,
            3.276,
            3.275,
            3.277,
            3.276,
            3.277,
            3.276,
            3.276,
        ],
        "temperatures": [26.7, 26.8, 27.0, 27.2],
        "mosfet_temperature": 25.6,
        "extras.ambient_temperature": 27.9,
        "device.model": "DJM2412250299",
        "device.software_version": "DR_YP01_16S200JC26_V1.0.2_T1",
        "extras.module_firmware": "DR-WIFI02_V1.4.11",
    },
    vector="extended",
)

# Bytes 48-55 hold the problem word (51-52); the CRC closes the frame.
_ECOWORTHY_STATUS: Final = (
    "A1000000650000000000180103440018004800640531FF8E00002710000100010000000000000000000100020000FFFF{}"
    "0000000000000000000000000000000000000000000000000000{}"
)
ECOWORTHY: Final = FamilyCapture(
    "ecoworthy",
    {
        "status": _frames(_ECOWORTHY_STATUS.format("0000000000000000", "2186")),
        "cells": _frames(
            "A20000006500000000001801035600040CFB0CFD0CFB0CFAFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF000300CD00C000BEFC18FC18FC18FC18FC18FC18"
            "976A"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_ecoworthy_bms.py (_PROTO_DEFS 0x1, protocol version 1)"),
    {
        "voltage": 13.29,
        "current": -1.14,
        "soc": 72,
        "soh": 100,
        "design_capacity": 100,
        "cell_voltages": [3.323, 3.325, 3.323, 3.322],
        "temperatures": [20.5, 19.2, 19.0],
        "extras.problem_code": 0,
        "alarms": [],
        # aiobmsble's cycle_charge (72.0) is its estimate, design capacity x SoC: no frame field.
    },
)

# Protocol version 2: the pack's address (E2:E7:79:00:00:00 in the test) in front of the frame type.
ECOWORTHY_V2: Final = FamilyCapture(
    "ecoworthy",
    {
        "status": _frames(
            "E2E779000000A100000803440008006200640530FFC400002710000100010000000000000000000100020000FFFF0000"
            "0000000000000000000100000000000000000000000000000000000000000000D3F6"
        ),
        "cells": _frames(
            "E2E779000000A2000008035600040CFB0CFC0CFB0CF5FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF000200DC00D6FC18FC18FC18FC18FC18FC18FC18110E"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_ecoworthy_bms.py (_PROTO_DEFS 0x2, protocol version 2, MAC in front)"),
    {
        "voltage": 13.28,
        "current": -6.0,
        "soc": 98,
        "soh": 100,
        "design_capacity": 100,
        "cell_voltages": [3.323, 3.324, 3.323, 3.317],
        "temperatures": [22.0, 21.4],
        "extras.problem_code": 0,
        "alarms": [],
    },
    vector="protocol-v2",
)

# CBT Power VB: Pylontech-style hex text; the problem bytes sit just before the LRC.
_CBTPWR_VB_ANALOG: Final = b"~220146006046040D000CFE0CFE0CFE02003E0049000000850060070000008600000000{}\r"
CBTPWR_VB: Final = FamilyCapture(
    "cbtpwr-vb",
    {
        "analog": [_CBTPWR_VB_ANALOG.replace(b"{}", b"000000000000EF60")],
        "capacity": [b"~22014600C00407D0FCBF\r"],
    },
    AIOBMSBLE.format("tests/bms/test_cbtpwr_vb_bms.py (MockCBTpwrVBBleakClient)"),
    {
        "voltage": 13.3,
        "current": 0.0,
        "soc": 96,
        "cycles": 0,
        "cell_voltages": [3.328, 3.326, 3.326, 3.326],
        "design_capacity": 200,
        "temperatures": [6.2, 7.3],
        "alarms": [],
        # aiobmsble's cycle_charge (192.0) is its estimate, design capacity x SoC: no frame field.
    },
)

PYLONTECH: Final = FamilyCapture(
    "pylontech",
    {
        "serial_number": _frames("010310413233313031353030303030303030318504"),
        "status": _frames("01031A052CFFD00CF00CEF00960096005B0063003F00000B9003E803E845D8"),
    },
    AIOBMSBLE.format("tests/bms/test_pylontech_bms.py (a recorded RT12100G31 discharging at about 4.8 A)"),
    {
        "voltage": 13.24,
        "current": -4.8,
        "soc": 91,
        "soh": 99,
        "design_capacity": 100,
        # aiobmsble lists the two aggregates as two "cells" and two "sensors"; here they are extras.
        "extras.cell_voltage_max": 3.312,
        "extras.cell_voltage_min": 3.311,
        "extras.temperature_max": 15.0,
        "extras.temperature_min": 15.0,
        "extras.reported_power": 63,
        "extras.lifetime_energy": 296.0,
        "extras.allowed_current": 100.0,
        "cell_voltages": [],
        "device.serial_number": "A231015000000001",
    },
)

BUKNUWO: Final = FamilyCapture(
    "buknuwo",
    {
        "status": _frames("01031A0184055900630064205620A1232800010000000480002D000000219B"),
        "mosfet_temperature": _frames("01030200BBF837"),
        "temperatures": _frames("010316000100C3000000000000000000000000000000000000C8E7"),
    },
    AIOBMSBLE.format("tests/bms/test_buknuwo_bms.py (MockBuknuwoBleakClient)"),
    {
        "current": 3.88,
        "voltage": 13.69,
        "soc": 99,
        "soh": 100,
        "remaining_capacity": 82.78,
        "design_capacity": 90,
        "cycles": 1,
        "charge_enabled": True,
        "discharge_enabled": True,
        "mosfet_temperature": 18.7,
        "temperatures": [19.5],
        # aiobmsble: problem, problem_code 0x480000000 (bytes 22 and 23: 0x04, 0x80)
        "extras.status_word_9": 0x0004,
        "extras.status_word_10": 0x8000,
        "alarms": ["system_fault"],
        "cell_voltages": [],
    },
)

_NEEY_SOURCE: Final = AIOBMSBLE.format("tests/bms/test_neey_bms.py (_PROTO_DEFS {})")

NEEY: Final = FamilyCapture(
    "neey",
    {
        "device_info": _frames(
            "55AA11010100640047572D3234533445420000000000000048572D322E382E305A482D312E322E3356312E302E3000003230"
            "3232303533310500000001910A0000000000000000000000000000000000000000000000000000000000000000000000ABFF"
        ),
        "cell_info": _frames(
            "55AA110102002C0138E7FA5040B6045140850E5140F0055140B6045140751E51407F4F5140430251401C3D5140786A5140FE"
            "825140167E5140BC765140167E51408B805140CA665140000000000000000000000000000000000000000000000000000000"
            "00000000003593243E6894263E3D251B3E908E1B3EB3F3233E2E91253EC61B1A3E4A7C1C3E6F1B1A3EC2431B3E851E183E4B"
            "27193E5EDF183ED0EB1A3EE6D4183E0CFE183E00000000000000000000000000000000000000000000000000000000000000"
            "00DE405142DE4051400017083C0A000F0519A182C0C3F54842C3F54842000000000000000000000000000000000000000000"
            "00000000762E090000000000000000000000000000000000000000000000000000000000000000000000000000000000B6FF"
        ),
    },
    _NEEY_SOURCE.format('"v1"'),
    {
        # aiobmsble rounds the floats to 3 decimals.
        "voltage": 52.313,
        "extras.cell_delta": 0.008,
        "cell_voltages": [
            3.265,
            3.266,
            3.267,
            3.266,
            3.266,
            3.267,
            3.27,
            3.266,
            3.269,
            3.272,
            3.274,
            3.273,
            3.273,
            3.273,
            3.273,
            3.272,
        ],
        "balancing": True,
        "alarms": [],
        "device.model": "GW-24S4EB",
        "device.hardware_version": "HW-2.8.0",
        "device.software_version": "ZH-1.2.3",
    },
    tolerance=0.0005,
)

NEEY_V2: Final = FamilyCapture(
    "neey",
    {
        "device_info": _frames(
            "55AA110101006400454B2D4232345338453230304100000048572D322E302E3053572D322E302E3056312E332E3336003230"
            "32353130313510000000B3CF0200343430353031303433393333313233343536454B2D3234533230304100000000000082FF"
        ),
        "cell_info": _frames(
            "55AA110102002C012294685140ECBD5140F2595140867E5140D953514049AF51403BC5514049AF5140E89651409E2B5140E1"
            "A1514070F8514057F25140019D514032A95140DED35140000000000000000000000000000000000000000000000000000000"
            "000000000059DBAD3DF737A43DF228923DA8A09F3DD1B4A83D6A56893D83C39F3D2C549E3DB6FA9D3D71E8A53D48D3913D43"
            "DEA23D7C3B963D57739F3D39EEB43D602C983D00000000000000000000000000000000000000000000000000000000000000"
            "00FD9D5142FD9D514000D24C3C0B090F050266E000C13CA701406891E14152B8E0413333FB41B29D77420000A04331683143"
            "3DC25D420000A04300000000C08CAB40000000000000000000000000000000000000000000000000004002000000000005FF"
        ),
    },
    _NEEY_SOURCE.format('"v2"'),
    {
        "voltage": 52.404,
        "extras.cell_delta": 0.013,
        "cell_voltages": [
            3.272,
            3.277,
            3.271,
            3.273,
            3.271,
            3.276,
            3.278,
            3.276,
            3.275,
            3.268,
            3.276,
            3.281,
            3.28,
            3.275,
            3.276,
            3.279,
        ],
        "balancing": True,
        "alarms": [],
        "device.model": "EK-B24S8E200A",
        "device.hardware_version": "HW-2.0.0",
        "device.software_version": "SW-2.0.0",
    },
    vector="v2",
    tolerance=0.0005,
)

# ABC: every frame 20 bytes; the cell frames F4 carry [cell number, 3-byte voltage] x 4.
ABC: Final = FamilyCapture(
    "abc",
    {
        "device_info": _frames("CCF1534F4B2D424D530D00000000000000000040"),
        "status": _frames("CCF0A26B00000000A08601409E01070063000021"),
        "switches": _frames("CCF201010114000000000000000200000000007F"),
        "balancer": _frames("CCF3170312006400000100000000000000000036"),
        "cells": _frames("CCF401720D0002A80D00032F0D0004880D00008B", "CCF405810D0006650D00071F0D00085C0D000033"),
        # No F9: the test leaves it out ("some BMS do not report this").
    },
    AIOBMSBLE.format("tests/bms/test_abc_bms.py (MockABCBleakClient)"),
    {
        "voltage": 27.554,
        "current": 0.0,
        "soc": 99,
        "remaining_capacity": 106.048,
        "cycles": 7,
        "cell_voltages": [3.442, 3.496, 3.375, 3.464, 3.457, 3.429, 3.359, 3.42],
        "temperatures": [20.0],
        "design_capacity": 100,
        "charge_enabled": True,
        "discharge_enabled": True,
        "heating": False,
        "balancing": False,
        "alarms": [],
        "device.model": "SOK-BMS",
    },
)

GREENWAY: Final = FamilyCapture(
    "greenway",
    {
        "manufacturer": _frames("4716012010475245454E5741590000000000000000F0"),
        "bms_type": _frames("4716012120444D33333732303038000000000000000000000000000000000000000000000097"),
        "serial_number": _frames("4716012320353643303032353341303030333700000000000000000000000000000000000084"),
        "voltage": _frames("47160109047C39010021"),
        "current": _frames("4716010A047B3A000021"),
        "soc": _frames("4716010D044A000000B9"),
        "soh": _frames("4716010E0464000000D4"),
        "remaining_capacity": _frames("4716010F040C6E0000EB"),
        "cycles": _frames("47160117041000000089"),
        "design_capacity": _frames("4716011804809300008D"),
        "cells_1": _frames("4716012420B00FAD0FAE0FAD0FAF0FAF0FAB0FB10FB10FB20FAC0FAB0FAA0FAB0FAA0FA90F66"),
        "cells_2": _frames("4716012520AA0FAB0FAA0FA90F00000000000000000000000000000000000000000000000087"),
    },
    AIOBMSBLE.format("tests/bms/test_greenway_bms.py (_PROTO_DEFS)"),
    {
        "voltage": 80.252,
        "current": 14.971,
        "soc": 74,
        "soh": 100,
        "remaining_capacity": 28.172,
        "cycles": 16,
        # aiobmsble floors the design capacity to whole Ah (37); the frame's comment says 37.760 Ah.
        "design_capacity": 37.76,
        "cell_voltages": [
            4.016,
            4.013,
            4.014,
            4.013,
            4.015,
            4.015,
            4.011,
            4.017,
            4.017,
            4.018,
            4.012,
            4.011,
            4.01,
            4.011,
            4.01,
            4.009,
            4.01,
            4.011,
            4.01,
            4.009,
        ],
        "alarms": [],
        # The frames' comments in the source: "GREENWAY", "DM3372008" (BMS type), "56C00253A00037" (serial).
        "device.manufacturer": "GREENWAY",
        "device.model": "DM3372008",
        "device.serial_number": "56C00253A00037",
    },
)

DOERRPWR: Final = FamilyCapture(
    "doerrpwr",
    {
        "status": [
            b":01540100EC000102030405060D450D480D430D4100000000000000000000000000000000000000000000000"
            b"0F00000004646464610EE000000007FFFFFFF3511000704000163000249F0000262B7000249F0000105F0000"
            b"6000100000000000000000000000000000000000000000000000000009F~"
        ]
    },
    AIOBMSBLE.format("tests/bms/test_doerrpwr_bms.py (MockDoerrPBleakClient)"),
    {
        "voltage": 13.585,
        "current": 0.0,
        "soc": 99,
        "cycles": 1,
        "design_capacity": 150,
        "cell_voltages": [3.397, 3.4, 3.395, 3.393],
        "temperatures": [30.0, 30.0, 30.0, 30.0],
        # aiobmsble's cycle_charge (148.5) is its estimate, design capacity x SoC: no frame field.
    },
)

ECTIVE: Final = FamilyCapture(
    "ective",
    {
        # Garbage before and after the frame, as the source sends it.
        "status": [
            b"6F2\x00^84350000F8CDFFFF2CF9020097016200E10B000000005E0D710D650D5E0D"
            b"000000000000000000000000000000000000000000000000094F\xafF833000000000000" + b"\x00" * 8
        ]
    },
    AIOBMSBLE.format("tests/bms/test_ective_bms.py (_PROTO_DEFS 0x5E)"),
    {
        "voltage": 13.7,
        "current": -12.808,
        "soc": 98,
        "cycles": 407,
        "remaining_capacity": 194.86,
        "cell_voltages": [3.422, 3.441, 3.429, 3.422],
        "temperatures": [30.95],
        "extras.problem_code": 0,
        "alarms": [],
    },
)
ECTIVE_83: Final = FamilyCapture(
    "ective",
    {
        "status": [
            b"\x836234000076FEFFFF888A010016006200530B008007B4160D170D190D1C0D000000000000000000000000000000000000000"
            b"00000000007C2" + b"\x11" * 8
        ]
    },
    AIOBMSBLE.format("tests/bms/test_ective_bms.py (_PROTO_DEFS 0x83)"),
    {
        "voltage": 13.41,
        "current": -0.394,
        "soc": 98,
        "cycles": 22,
        "remaining_capacity": 101,
        "cell_voltages": [3.35, 3.351, 3.353, 3.356],
        "temperatures": [16.75],
        "extras.problem_code": 0,
        "alarms": [],
    },
    vector="83",
)

EPOCH_PRO: Final = FamilyCapture(
    "epoch-pro",
    {
        "system": _frames(
            "FAF316016E0000000004B00000005B0064238C14C90000010E00000000187A00000000000000000000000000000000000200"
            "00000000000CFD0CFF001B001B3230312D003100003230312D003400003130302D003100003130302D003100000000000000"
            "0000000038AAA802AAAAA80082003C6B2F"
        ),
        "pack_1": _frames(
            "FAF31601A4024001E00258012CC878000000007530000A00000C2C00000000797C00100CFE0CFD00100007001B001B000400"
            "0314C9000010040000000000000000000000000000038E006400000CFE0CFD0CFD0CFD0CFE0CFE0CFD0CFD0CFE0CFE0CFE0C"
            "FE0CFE0CFF0CFE0CFE001B001B001B001B0022001D001D0C1700120000000000000000000031363600003100000000000000"
            "0000000000000032333131333030313032383375B5"
        ),
        "pack_2": _frames(
            "FAF31602A4024001E00258012CC878000000007530000A00000C4E000000007B0C00100CFF0CFC00100002001B001B000400"
            "0314C9000010040000000000000000000000000000038E006400000CFE0CFC0CFD0CFD0CFD0CFD0CFD0CFD0CFE0CFE0CFE0C"
            "FD0CFF0CFF0CFF0CFF001B001B001B001B0023001D001D0C1700120000000000000000000031363600003100000000000000"
            "00000000000000323331313330303130343334AE94"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_epoch_pro_bms.py (MockEpochProBleakClient: overall, packs 1 and 2)"),
    {
        "voltage": 53.21,
        "current": 0,
        "soc": 91,
        # pack_cycles [10, 10]; pack 1's value.
        "cycles": 10,
        # The first 16 of the 32 stated cells: pack 1's (pack 2's are extras.pack_2_cell_N, below).
        "cell_voltages": [
            3.326,
            3.325,
            3.325,
            3.325,
            3.326,
            3.326,
            3.325,
            3.325,
            3.326,
            3.326,
            3.326,
            3.326,
            3.326,
            3.327,
            3.326,
            3.326,
        ],
        # temp_values [27] * 8: four sensors per pack, pack 1's first.
        "temperatures": [27] * 8,
        "extras.system_temperature": 27.0,
        "extras.pack_count": 2,
        "extras.pack_1_voltage": 53.21,
        "extras.pack_1_current": 0.0,
        "extras.pack_1_soc": 91.0,
        # pack_voltages, pack_currents, pack_battery_levels, pack_cycles: pack 2's entries.
        "extras.pack_2_voltage": 53.21,
        "extras.pack_2_current": 0.0,
        "extras.pack_2_soc": 91.0,
        "extras.pack_2_cycles": 10,
        # cell_voltages 17-32.
        **{
            f"extras.pack_2_cell_{number}": value
            for number, value in enumerate(
                [3.326, 3.324, *[3.325] * 6, 3.326, 3.326, 3.326, 3.325, *[3.327] * 4],
                start=1,
            )
        },
        "alarms": [],
    },
)

SAFTKISTE: Final = FamilyCapture(
    "saftkiste",
    {
        "login": _frames("F0FF00E0930400978D04002C01A834B8FF2F0D240D2D0D280D21004705C2050001000000040E6A"),
        "start": _frames(
            "F0FF430101E780696F232723E1229A2253220D22C6217F213721EF20A6205D201420CB1F841F461F0D1FF11EC61EA31E701E"
            "2E1EE71D9F1D571D0F1DC71C7F1C371CEF1BA61B5F1B171BCF1A871A3F1AF719AF196E193B191219F518DD18C31895185718"
            "1118C917E92644"
        ),
        "status": _frames(
            "F0FF02E0930400A78A04002C010C36F5FF840D7F0D850D840D2100B102FE020001000000040E000000030003010012"
        ),
        "charge": _frames("F0FF030000437429784A690000000103B03242470100C126E09304000003032CC5020006000000000000FF6E"),
    },
    AIOBMSBLE.format("tests/bms/test_saftkiste_bms.py (_PROTO_DEFS)"),
    {
        "voltage": 13.836,
        "current": -0.11,
        # aiobmsble states 99.2 (its value rounded); the frame says 9921 (0.01 %).
        "soc": 99.21,
        "cycles": 33,
        "design_capacity": 300,
        "remaining_capacity": 297.639,
        "cell_voltages": [3.46, 3.455, 3.461, 3.46],
    },
)

PRO: Final = FamilyCapture(
    "pro",
    {
        "initialise": _frames("55AA080380AA01040000002C52"),
        "values": _frames(
            "55AA2D0480AA01701C05000096090080E2000000AD19000033000000CA050000890C0000770B0000044E000082648E684000"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_pro_bms.py (RECORDED_PACKETS init_response, data_discharging)"),
    {
        "voltage": 13.08,
        "current": -2.454,
        "soc": 51,
        "remaining_capacity": 65.73,
        "extras.temperature": 22.6,
        "alarms": [],
        "cell_voltages": [],
    },
)
PRO_CHARGING: Final = FamilyCapture(
    "pro",
    {
        "initialise": _frames("55AA080380AA01040000002C52"),
        "values": _frames(
            "55AA2D0480AA01703B05000066340000DA00000057100000200000008601000029460000580A0000EB4600000BD98C68AFFF"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_pro_bms.py (RECORDED_PACKETS init_response, data_charging)"),
    {
        "voltage": 13.39,
        "current": 13.414,
        "soc": 32,
        "remaining_capacity": 41.83,
        "extras.temperature": 21.8,
        "alarms": [],
    },
    vector="charging",
)

LIPOWER: Final = FamilyCapture(
    "lipower",
    {"device_22": _frames("2203100076006305CF001600010008008900019ECF")},
    AIOBMSBLE.format("tests/bms/test_lipower_bms.py (MockLiPwrBleakClient, device 0x22)"),
    {
        "voltage": 13.7,
        "current": -0.08,
        "soc": 99,
        # aiobmsble's cycle_charge.
        "remaining_capacity": 118,
        "cell_voltages": [],
        "alarms": [],
    },
)

# aiobmsble's RESP_VALUE["rt"], split as its source text is (one JSON object; the mock sends it in 35-byte
# notifications).
_FELICITY_REALTIME: Final = (
    b'{"CommVer":1,"wifiSN":"F100011002424470238","modID":1,"date":"20210101010501",'
    b'"DevSN":"100011002424470238","Type":112,"SubType":7300,"Estate":960,"Bfault":0,'
    b'"Bwarn":0,"Bstate":960,"BBfault":0,"BBwarn":0,"BTemp":[[130,130],[256,256]],"Batt":'
    b'[[52800],[-1],[null]],"Batsoc":[[3300,1000,300000]],"Templist":[[130,130],[0,0],'
    b'[65535,65535],[65535,65535]],"BattList":[[52750,65535],[-1,-1]],"BatsocList":'
    b'[[3300,1000,300000]],"BatcelList":[[3296,3296,3297,3297,3297,3297,3297,3297,3297,'
    b"3297,3296,3297,3297,3297,3297,3297],[65535,65535,65535,65535,65535,65535,65535,"
    b'65535,65535,65535,65535,65535,65535,65535,65535,65535]],"EMSpara":[[1,2]],"BMaxMin":'
    b'[[3297,3296],[2,0]],"LVolCur":[[576,480],[1500,1500]],"BMSpara":[[1,2]],"BLVolCu":'
    b'[[576,480],[1500,1500]],"BtemList":[[130,130,130,130,32767,32767,32767,32767]]}'
)

FELICITY: Final = FamilyCapture(
    "felicity",
    {"realtime": [_FELICITY_REALTIME]},
    AIOBMSBLE.format("tests/bms/test_felicity_bms.py (RESP_VALUE rt)"),
    {
        "voltage": 52.8,
        "current": -0.1,
        "soc": 33,
        # aiobmsble states cycle_charge 99 Ah = 33 % of this capacity (300000 mAh).
        "full_capacity": 300,
        "cell_voltages": [3.296, 3.296, 3.297, 3.297, 3.297, 3.297, 3.297, 3.297, 3.297, 3.297, 3.296, 3.297]
        + [3.297] * 4,
        "temperatures": [13.0] * 4,
        "extras.warning_code": 0,
        "extras.fault_code": 0,
        "alarms": [],
        # aiobmsble's device_info serial_number (from the device-information reply; the same DevSN).
        "device.serial_number": "100011002424470238",
    },
)

LITHIONICS: Final = FamilyCapture(
    "lithionics",
    # aiobmsble's STREAM_DATA: an ERROR line, a primary and a status line (the mock repeats it endlessly).
    {
        "primary": [b"ERROR\r\n1399,350,350,350,349,55,48,-3,99,000000\r\n"],
        "status": [b"&,1,319,006391,0136,2300,FF05,8700\r\n"],
    },
    AIOBMSBLE.format("tests/bms/test_lithionics_bms.py (STREAM_DATA)"),
    {
        "voltage": 13.99,
        "current": -3.0,
        "soc": 99,
        "cell_voltages": [3.5, 3.5, 3.5, 3.49],
        # aiobmsble rounds (F − 32) × 5/9 to 3 decimals.
        "temperatures": [12.778, 8.889],
        # aiobmsble's cycle_charge and total_charge.
        "remaining_capacity": 319.0,
        "extras.total_consumed_ah": 6391,
        "extras.problem_code": 0,
        "alarms": [],
    },
    tolerance=5e-4,
)

# aiobmsble's _PROTO_DEFS (one 20-byte notification; its mock sends it whole). aiobmsble rounds the two
# floats to 3 decimals (14.158635... V, -0.40000000596... A) and leaves the runtime out while charging.
_SUPERB_STATUS: Final = "00{}5E64000001A4{}CCCCCD416289C500000000"

SUPERB: Final = FamilyCapture(
    "superb",
    {"status": _frames(_SUPERB_STATUS.format("75", "BE"))},
    AIOBMSBLE.format("tests/bms/test_superb_bms.py (_PROTO_DEFS)"),
    {
        "voltage": 14.159,
        "current": -0.4,
        "soc": 94,
        "soh": 100,
        "extras.runtime": 420,
        "balancing": False,
        "extras.problem": False,
        "alarms": [],
        "cell_voltages": [],
        "temperatures": [],
    },
    tolerance=5e-4,
)
SUPERB_CHARGING: Final = FamilyCapture(
    "superb",
    {"status": _frames(_SUPERB_STATUS.format("75", "3E"))},
    AIOBMSBLE.format("tests/bms/test_superb_bms.py test_update_chrg"),
    {"voltage": 14.159, "current": 0.4, "soc": 94, "soh": 100, "balancing": False, "extras.problem": False},
    vector="charging",
    tolerance=5e-4,
)

# aiobmsble's _PROTO_DEFS: a 15S stream (its mock sends it in chunks of 1 to 19 bytes, over and over). Frame
# types 0x01, 0x21, 0x22 and 0x27-0x29 are in the stream but not read (see docs/protocols/myvolta.md); the
# 9-byte frame at its start has no valid length and is dropped, by aiobmsble too (its checksum is wrong).
MYVOLTA: Final = FamilyCapture(
    "myvolta",
    {
        "metrics": _frames("55550100020000000801E0C8FF14E0AE03A80404"),
        "cells_1": _frames("5555011102000000080810081008100810840404"),
        "cells_2": _frames("5555011202000000080810081003100810880404"),
        "cells_3": _frames("555501130200000008FF0F0810081008108C0404"),
        "cells_4": _frames("5555011402000000080810081000000100B00404"),
        "temperatures_1": _frames("555501240200000008AB00AC00AC00AD00210404"),
        "temperatures_2": _frames("555501250200000008AC00AC00A600A8002A0404"),
        "temperatures_3": _frames("555501260200000008A700A600A900A600330404"),
    },
    AIOBMSBLE.format("tests/bms/test_myvolta_bms.py (_PROTO_DEFS)"),
    {
        "voltage": 57.345,
        "current": -0.56,
        "soc": 94.2,
        "cell_count": 15,
        # aiobmsble's list: cell 15 reads 1 mV, cell 16 (0 mV) is left out.
        "cell_voltages": [4.104] * 6 + [4.099, 4.104, 4.095] + [4.104] * 5 + [0.001],
        "cell_delta": 4.103,
        "temperatures": [17.1, 17.2, 17.2, 17.3, 17.2, 17.2, 16.6, 16.8, 16.7, 16.6, 16.9, 16.6],
        "temperature_mean": 16.95,
        "alarms": [],
    },
)

# aiobmsble's reference frames, "captured from a real Allpowers R1500 V2.0" (its test's words); no checksum.
_ALLPOWERS_HEADER: Final = "A565B101010000"
ALLPOWERS: Final = FamilyCapture(
    "allpowers",
    {"status": _frames(_ALLPOWERS_HEADER + "03480055007800F0")},
    AIOBMSBLE.format("tests/bms/test_allpowers_bms.py (_FRAME_STATUS_DISCHARGING)"),
    {
        "soc": 72,
        "extras.net_power": -35,
        "extras.input_power": 85,
        "extras.output_power": 120,
        "extras.runtime": 240 * 60,
        # aiobmsble reports the AC flag as chrg_mosfet and DC as dischrg_mosfet; here they are outputs.
        "extras.ac_output": True,
        "extras.dc_output": True,
        "extras.ac_60hz": False,
        "extras.light": False,
        "voltage": None,
        "current": None,
        "charge_enabled": None,
        "discharge_enabled": None,
        "cell_voltages": [],
        "alarms": [],
    },
)
ALLPOWERS_CHARGING: Final = FamilyCapture(
    "allpowers",
    {"status": _frames(_ALLPOWERS_HEADER + "062D03840000FFFF")},
    AIOBMSBLE.format("tests/bms/test_allpowers_bms.py (_FRAME_STATUS_CHARGING)"),
    {
        "soc": 45,
        "extras.net_power": 900,
        "extras.ac_output": True,
        "extras.dc_output": False,
        "extras.ac_60hz": True,
        "extras.runtime": None,
    },
    vector="charging",
)
ALLPOWERS_IDLE: Final = FamilyCapture(
    "allpowers",
    {"status": _frames(_ALLPOWERS_HEADER + "10640000" + "0000FFFF")},
    AIOBMSBLE.format("tests/bms/test_allpowers_bms.py (_FRAME_STATUS_IDLE)"),
    {"soc": 100, "extras.net_power": 0, "extras.light": True, "extras.ac_output": False, "extras.runtime": None},
    vector="idle",
)

# aiobmsble's superb_v2 test: the reply RESP to 21 54 00 (frame type 00) and _NOTIFY_RESP (type 02), which its
# mock notifies on its own (on subscribing); each one 24-byte notification. _RESULT_DEFS states the values
# (power -32.555 W is voltage x current, rounded by aiobmsble).
SUPERB_V2: Final = FamilyCapture(
    "superb-v2",
    {
        "measurements": _frames("020D00000000FFFFF65F3397000009640000000000000000"),
        "status": _frames("00230413FFFF81E300000000000000000000126400012F29"),
    },
    AIOBMSBLE.format("tests/bms/test_superb_v2_bms.py (RESP, MockSuperBv2BleakClient._NOTIFY_RESP)"),
    {
        "voltage": 13.207,
        "current": -2.465,
        "soc": 35,
        "soh": 100,
        "cycles": 18,
        "extras.runtime": 77609,
        "alarms": [],
        "cell_voltages": [],
        "temperatures": [],
    },
)


# aiobmsble's _PROTO_DEFS: one status frame of a 4S pack as hex text (its mock sends it in 20-byte
# notifications). The decoded bytes are XOR-ed with 0x20 (characters 7-8); aiobmsble reads them descrambled.
_WS_NOVA_STATUS: Final = (
    b":21742120CC202122493880C12C952C952C992C94202020202020202020202020202020202020202020202020D0222020111111"
    b"1130E8A02025D05FDFDFDF12F720252420251420232D602021912120232D60202125D0222677736E15151010171214121111101913"
    b"20202020202020202C34232738AA~"
)
WS_NOVA: Final = FamilyCapture(
    "ws-nova",
    {"status": [_WS_NOVA_STATUS]},
    AIOBMSBLE.format("tests/bms/test_ws_nova_bms.py (_PROTO_DEFS)"),
    {
        "voltage": 13.015,
        "current": -1.52,
        "soc": 52,
        "cycles": 5,
        "design_capacity": 200,
        "remaining_capacity": 110.849,
        "cell_voltages": [3.253, 3.253, 3.257, 3.252],
        "cell_count": 4,
        "cell_delta": 0.005,
        "temperatures": [9.0, 9.0, 9.0, 9.0],
        "temperature_mean": 9.0,
        "power": -19.783,
        "stored_energy": 1442.7,
        "device.serial_number": "5500724211093",
        "alarms": [],
    },
    tolerance=5e-4,
)

# aiobmsble's MockDPwrcoreBleakClient: the 20-byte pages a 14S pack sends for commands 0x60-0x62 (the padding
# of a last page repeats bytes of the one before, as the source's comments say: "2nd line only 4 bytes valid").
_DPWRCORE_STATUS: Final = "12123A050360000A020D00EBA07E48EE2D{}", "02220D0A0360000A020D00EBA07E48EE2D{}"
DPWRCORE: Final = FamilyCapture(
    "dpwrcore",
    {
        # One entry per frame: its pages joined (the pack sends one page per notification).
        "status": _frames("".join(page.format("0003ED") for page in _DPWRCORE_STATUS)),
        "counters": _frames("12123A050361000C001200126D600B7E8FDB1820042203910D0A000C001200126D600B7E8FDB1820"),
        "cells": _frames(
            "12133A050362001D0E0EA50EB10EA40EAF0EA60E"
            "1223AD0EA60EAF0EA60EAD0EA40EB30EA60EA80A"
            "0333A20D0A0EAF0EA60EAD0EA40EB30EA60EA80A"
        ),
    },
    AIOBMSBLE.format("tests/bms/test_dpwrcore_bms.py (MockDPwrcoreBleakClient._RESP)"),
    {
        "voltage": 52.5,
        "current": 23.5,
        "soc": 45,
        "cycles": 18,
        "remaining_capacity": 18.67,
        "cell_voltages": [
            3.749,
            3.761,
            3.748,
            3.759,
            3.75,
            3.757,
            3.75,
            3.759,
            3.75,
            3.757,
            3.748,
            3.763,
            3.75,
            3.752,
        ],
        "cell_count": 14,
        "cell_delta": 0.015,
        "temperatures": [21.05],
        "power": 1233.75,
        "stored_energy": 980.175,
        "extras.problem_code": 0,
        "alarms": [],
    },
    tolerance=5e-4,
)


# aiobmsble's _stream(): 16 frames of a 16S pack, one cell each (cell n: 0x0270 + n - 1 in 5 mV), built by its
# test's _frame() from the documented layout (docs/smartbms_bms.md), not captured from a pack. Its 6 further
# frames (cell number 0, the rotating key/value pairs) are left out: number 0 is no cell (see
# docs/protocols/smartbms.md).
SMARTBMS: Final = FamilyCapture(
    "smartbms",
    {
        "status": _frames(
            "0105FF2B00005800002B00400272010280100128010128100110027001"
            "2803000000000FA00000004B000000000000190000A0000000000000BF",
            "0105FF2B00005800002B00400272010280100128010128100210027101"
            "2803000000000FA00000004B000000000000190000A0000000000000C1",
            "0105FF2B00005800002B00400272010280100128010128100310027201"
            "2803000000000FA00000004B000000000000190000A0000000000000C3",
            "0105FF2B00005800002B00400272010280100128010128100410027301"
            "2803000000000FA00000004B000000000000190000A0000000000000C5",
            "0105FF2B00005800002B00400272010280100128010128100510027401"
            "2803000000000FA00000004B000000000000190000A0000000000000C7",
            "0105FF2B00005800002B00400272010280100128010128100610027501"
            "2803000000000FA00000004B000000000000190000A0000000000000C9",
            "0105FF2B00005800002B00400272010280100128010128100710027601"
            "2803000000000FA00000004B000000000000190000A0000000000000CB",
            "0105FF2B00005800002B00400272010280100128010128100810027701"
            "2803000000000FA00000004B000000000000190000A0000000000000CD",
            "0105FF2B00005800002B00400272010280100128010128100910027801"
            "2803000000000FA00000004B000000000000190000A0000000000000CF",
            "0105FF2B00005800002B00400272010280100128010128100A10027901"
            "2803000000000FA00000004B000000000000190000A0000000000000D1",
            "0105FF2B00005800002B00400272010280100128010128100B10027A01"
            "2803000000000FA00000004B000000000000190000A0000000000000D3",
            "0105FF2B00005800002B00400272010280100128010128100C10027B01"
            "2803000000000FA00000004B000000000000190000A0000000000000D5",
            "0105FF2B00005800002B00400272010280100128010128100D10027C01"
            "2803000000000FA00000004B000000000000190000A0000000000000D7",
            "0105FF2B00005800002B00400272010280100128010128100E10027D01"
            "2803000000000FA00000004B000000000000190000A0000000000000D9",
            "0105FF2B00005800002B00400272010280100128010128100F10027E01"
            "2803000000000FA00000004B000000000000190000A0000000000000DB",
            "0105FF2B00005800002B00400272010280100128010128101010027F01"
            "2803000000000FA00000004B000000000000190000A0000000000000DD",
        ),
    },
    AIOBMSBLE.format("tests/bms/test_smartbms_bms.py (_stream, built by _frame from the documented layout)"),
    {
        "voltage": 335.355,
        "current": 8.0,
        "soc": 75,
        "cell_count": 16,
        "cell_voltages": [(0x0270 + number - 1) / 200 for number in range(1, 17)],
        # temp_values: CELL_MIN 20, CELL_MAX 20 (extras here), then 20 for each of the 16 cells.
        "temperatures": [20.0] * 16,
        "extras.temperature_min": 20,
        "extras.temperature_max": 20,
        "charge_enabled": True,
        "discharge_enabled": True,
        # problem_code 0.
        "alarms": [],
        # cycle_capacity 4000 (Wh: the stored energy).
        "extras.stored_energy_wh": 4000,
    },
    real=False,
)

# aiobmsble's _PROTO_DEFS: one cycle of a 4S pack's gen3 lines, written by hand in its test (four identical
# cells), not captured from a module; its mock sends them for every '$' once the PIN and E! were accepted (OK).
# Stated: its _RESULT_DEFS (problem_code 0: no alarm; battery_health 95 from the H_ line).
X123SMART: Final = FamilyCapture(
    "x123smart",
    {
        "login": [b"OK\r"],
        "start_stream": [b"OK\r"],
        "cells": [
            b"C_01_04_2BC_12C_03_30\r",
            b"C_02_04_2BC_12C_03_30\r",
            b"C_03_04_2BC_12C_03_30\r",
            b"C_04_04_2BC_12C_03_30\r",
        ],
        "pack": [b"U_0AF0_+0014_+0014_+000A\r"],
        "energy": [b"E_000000_000000_000000_64\r"],
        "history": [b"H_5F_08E8_08FC_63_0005E9_0005DE\r"],
    },
    AIOBMSBLE.format("tests/bms/test_x123smart_bms.py (_PROTO_DEFS, written by hand)"),
    {
        "voltage": 14.0,
        "current": 1.0,
        "soc": 100,
        "soh": 95,
        "cell_count": 4,
        "cell_voltages": [3.5, 3.5, 3.5, 3.5],
        "temperatures": [24.0] * 4,
        "charge_enabled": True,
        "discharge_enabled": True,
        "power": 14.0,
        "cell_delta": 0.0,
        "alarms": [],
    },
    real=False,
)


# aiobmsble's dometic test: _PROTO_DEFS streams two packs (device bytes 00 and 0F) through one module; these
# are device 00's frames of each register this definition reads, the newest of each in _PROTO_DEFS, which
# its _RESULT_DEFS["packs"][0] states (temp_values 14.0, cycle_capacity 1829 Wh, design_capacity 150 Ah).
DOMETIC: Final = FamilyCapture(
    "dometic",
    {
        "electrical": _frames("2385000205308111"),
        "soc": _frames("2385000B5CFFFFFF"),
        "temperature": _frames("2385000C0280FFFF"),
        "soh": _frames("2385000E64000000"),
        "energy": _frames("238500360725FFFF"),
        "cells_1_2": _frames("238500560CF30CF4"),
        "cells_3_4": _frames("238500570CF20CF0"),
        "capacity": _frames("2385000700000096"),
    },
    AIOBMSBLE.format("tests/bms/test_dometic_bms.py (_PROTO_DEFS, device 00; _RESULT_DEFS packs[0])"),
    {
        "voltage": 13.28,
        "current": -2.74,
        "soc": 92,
        "soh": 100,
        "temperatures": [14.0],
        "design_capacity": 150,
        "extras.remaining_energy": 1829,
        "cell_voltages": [3.315, 3.316, 3.314, 3.312],
        "alarms": [],
    },
)
# _PROTO_DEFS_MIN: one pack (device 00) without the capacity register; _RESULT_DEFS_MIN states packs[0]'s values.
DOMETIC_MIN: Final = FamilyCapture(
    "dometic",
    {
        "electrical": _frames("2385000205308111"),
        "soc": _frames("2385000B5CFFFFFF"),
        "temperature": _frames("2385000C0280FFFF"),
        "soh": _frames("2385000E64000000"),
        "energy": _frames("238500360725FFFF"),
        "cells_1_2": _frames("238500560CF30CF4"),
        "cells_3_4": _frames("238500570CF20CF0"),
    },
    AIOBMSBLE.format("tests/bms/test_dometic_bms.py (_PROTO_DEFS_MIN; _RESULT_DEFS_MIN)"),
    {
        "voltage": 13.28,
        "current": -2.74,
        "soc": 92,
        "soh": 100,
        "temperatures": [14.0],
        "extras.remaining_energy": 1829,
        "cell_voltages": [3.315, 3.316, 3.314, 3.312],
    },
    vector="single-pack",
)


# aiobmsble's MockOGTBleakClient: the replies of a type A and a type B pack, scrambled with key 0x10 (the key both
# test names give) as they arrive. The mock answers a read with ';BT<' ('+RD,' scrambled), the two register
# characters of the request as written (scrambled), and the value's characters of its RESP_TYPE_A/B table.
_OGT_KEY: Final = 0x10


def _ogt_reply(register: int, value: bytes) -> bytes:
    echo = bytes(character ^ _OGT_KEY for character in f"{register:02X}".encode())
    return b";BT<" + echo + value


OGT_REFUSAL: Final = b";BT<Ubb\x7f\x10"
"""What the mock sends for a register it does not hold ('+RD,Erro' NUL scrambled): type B's cell probe ends."""

OGT_A: Final = FamilyCapture(
    "ogt",
    {
        "a_soc": [_ogt_reply(0x02, b" U  \x1d\x1a")],
        "a_remaining_capacity": [_ogt_reply(0x04, b'"  # Q\x1d\x1a')],
        "a_voltage": [_ogt_reply(0x08, b"'!R\"\x1d\x1a")],
        "a_mosfet_temperature": [_ogt_reply(0x0C, b"(% R\x1d\x1a")],
        "a_current": [_ogt_reply(0x10, b"(%VV  \x1d\x1a")],
        "a_runtime": [_ogt_reply(0x18, b"'(  \x1d\x1a")],
        "a_cycles": [_ogt_reply(0x2C, b"&#  \x1d\x1a")],
    },
    AIOBMSBLE.format("tests/bms/test_ogt_bms.py (MockOGTBleakClient.RESP_TYPE_A, SmartBat-A12345)"),
    {
        "voltage": 45.681,
        "soc": 14,
        "cycles": 99,
        "remaining_capacity": 8.0,
        "mosfet_temperature": 21.75,
        "current": -1.23,
        "power": -56.188,
        "stored_energy": 365.448,
        "extras.runtime": 7200,
        "cell_voltages": [],
    },
    tolerance=5e-4,
    device_name="SmartBat-A12345",
)
OGT_B: Final = FamilyCapture(
    "ogt",
    {
        "b_mosfet_temperature": [_ogt_reply(0x08, b"(% R\x1d\x1a")],
        "b_voltage": [_ogt_reply(0x09, b"'!R\"\x1d\x1a")],
        "b_current": [_ogt_reply(0x0A, b"'R   Q\x1d\x1a")],
        "b_soc": [_ogt_reply(0x0D, b" U  \x1d\x1a")],
        "b_remaining_capacity": [_ogt_reply(0x0F, b'"  # Q\x1d\x1a')],
        "b_runtime": [_ogt_reply(0x12, b"VVVV\x1d\x1a")],
        "b_cycles": [_ogt_reply(0x17, b"&#  \x1d\x1a")],
        "b_cell_1": [_ogt_reply(0x3F, b"UQ S\x1d\x1a")],
        "b_cell_2": [_ogt_reply(0x3E, b"U) S\x1d\x1a")],
        "b_cell_3": [_ogt_reply(0x3D, b"U( S\x1d\x1a")],
        "b_cell_4": [_ogt_reply(0x3C, b"U' S\x1d\x1a")],
    },
    AIOBMSBLE.format("tests/bms/test_ogt_bms.py (MockOGTBleakClient.RESP_TYPE_B, SmartBat-B12294)"),
    {
        "voltage": 45.681,
        "soc": 14,
        "cycles": 99,
        "remaining_capacity": 8.0,
        "mosfet_temperature": 21.75,
        "current": 1.23,
        "power": 56.188,
        "stored_energy": 365.448,
        "cell_voltages": [3.306, 3.305, 3.304, 3.303],
        "cell_count": 4,
        "cell_delta": 0.003,
        "extras.runtime": None,
    },
    vector="poll-type-b",
    tolerance=5e-4,
    device_name="SmartBat-B12294",
)

# No Stark Varg telemetry is public (aiobmsble's test skips its value checks: "No anonymized real-device
# telemetry capture is available"). These blocks are built from aiobmsble's field table for a 20-cell pack,
# each behind its characteristic's tag (5001, 6003-6008) as the transport delivers them; sensor 3 is not in
# the valid-sensor word (0x000B), so it is left out.
STARK_VARG: Final = FamilyCapture(
    "stark-varg",
    {
        "charger": _frames("500100007B00" + "00" * 15),
        "cell_count": _frames("600314000000"),
        "pack": _frames("6004570063009502"),
        "temperatures": _frames("6005D700DC000000E600000000000000000000000000000000000B0003"),
        "cells": _frames(
            "6007"
            "1A811A811A811A811A811A811A811A811A811A811A811A811A811A811A811A811A811A811A811A8100000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        ),
        "balancing": _frames("600804" + "00" * 12),
    },
    AIOBMSBLE.format("aiobmsble/bms/stark_varg_bms.py (its field table; built, no capture)"),
    {
        "voltage": 66.1,
        "current": 12.3,
        "soc": 87,
        "soh": 99,
        "cell_count": 20,
        "cell_voltages": [3.305] * 20,
        "temperatures": [21.5, 22.0, 23.0],
        "extras.temperature_sensors": 3,
        "balancing_cells": [3],
        "alarms": [],
    },
    real=False,
)


CAPTURES: Final[tuple[FamilyCapture, ...]] = (
    EJ,
    EJ_SINGLE_FRAME,
    AG,
    REDODO,
    ECOWORTHY,
    ECOWORTHY_V2,
    TOPBAND,
    TOPBAND_STARTCRAFT,
    TOPBAND_KILOVAULT,
    PWRXTREME,
    SEPLOS_V2,
    PWRBOOZT,
    DAREN,
    DAREN_EXTENDED,
    PACE,
    VATRER,
    GOBEL,
    SAIHANG,
    BRAUNPWR,
    HUMSIENK,
    C4S,
    CBTPWR_VB,
    PYLONTECH,
    BUKNUWO,
    NEEY,
    NEEY_V2,
    ABC,
    GREENWAY,
    DOERRPWR,
    ECTIVE,
    ECTIVE_83,
    EPOCH_PRO,
    SAFTKISTE,
    PRO,
    PRO_CHARGING,
    LIPOWER,
    FELICITY,
    LITHIONICS,
    SUPERB,
    SUPERB_CHARGING,
    ALLPOWERS,
    ALLPOWERS_CHARGING,
    ALLPOWERS_IDLE,
    MYVOLTA,
    SUPERB_V2,
    WS_NOVA,
    DPWRCORE,
    SMARTBMS,
    STARK_VARG,
    X123SMART,
    DOMETIC,
    DOMETIC_MIN,
    OGT_A,
    OGT_B,
)
"""Every capture, in the issue's order of families."""


@dataclasses.dataclass(frozen=True)
class ProblemFrame:
    """A capture with one reply replaced by the source's frame that sets alarm bits (built by its authors)."""

    base: FamilyCapture
    request: str
    frame: bytes
    source: str
    stated: dict[str, object]


_TOPBAND_PROBLEM: Final = (
    b"^8435000038CDFFFF2CF9020097016200E10B{}0000005E0D710D650D5E0D000000000000000000000000000000000000000000000000{}"
)
PROBLEM_FRAMES: Final[tuple[ProblemFrame, ...]] = (
    ProblemFrame(
        SUPERB,
        "status",
        bytes.fromhex(_SUPERB_STATUS.format("74", "BE")),
        AIOBMSBLE.format("tests/bms/test_superb_bms.py test_problem_response (chrg_warning, problem_code 1)"),
        {"extras.problem": True, "balancing": False, "voltage": 14.159},
    ),
    ProblemFrame(
        SUPERB,
        "status",
        bytes.fromhex(_SUPERB_STATUS.format("72", "BE")),
        AIOBMSBLE.format("tests/bms/test_superb_bms.py test_problem_response (dischrg_warning, problem_code 1)"),
        {"extras.problem": True, "balancing": False, "voltage": 14.159},
    ),
    ProblemFrame(
        ECOWORTHY,
        "status",
        bytes.fromhex(_ECOWORTHY_STATUS.format("0000000001000000", "20D6")),
        AIOBMSBLE.format("tests/bms/test_ecoworthy_bms.py test_problem_response (first_bit)"),
        {"extras.problem_code": 1, "alarms": ["system_fault"]},
    ),
    ProblemFrame(
        ECOWORTHY,
        "status",
        bytes.fromhex(_ECOWORTHY_STATUS.format("0000008000000000", "200E")),
        AIOBMSBLE.format("tests/bms/test_ecoworthy_bms.py test_problem_response (last_bit, 1 << 15)"),
        {"extras.problem_code": 0x8000, "alarms": ["system_fault"]},
    ),
    ProblemFrame(
        SEPLOS_V2,
        "parallel",
        bytes.fromhex(_SEPLOS_V2_PARALLEL.format("FFFFFFFFFFFFFFFFD0D0")),
        AIOBMSBLE.format("tests/bms/test_seplos_v2_bms.py test_problem_response (every event bit set)"),
        {"extras.alarm_events": 0xFFFFFFFFFFFFFFFF, "alarms": ["system_fault"]},
    ),
    ProblemFrame(
        TOPBAND,
        "status",
        _TOPBAND_PROBLEM.replace(b"{}", b"01", 1).replace(b"{}", b"0890"),
        AIOBMSBLE.format("tests/bms/test_topband_bms.py test_problem_response (first_bit, problem_code 1)"),
        {"extras.problem_code": 1, "alarms": ["system_fault"], "current": -13.0},
    ),
    ProblemFrame(
        TOPBAND,
        "status",
        _TOPBAND_PROBLEM.replace(b"{}", b"80", 1).replace(b"{}", b"090F"),
        AIOBMSBLE.format("tests/bms/test_topband_bms.py test_problem_response (last_bit, problem_code 128)"),
        {"extras.problem_code": 128, "alarms": ["system_fault"], "current": -13.0},
    ),
    ProblemFrame(
        EJ_SINGLE_FRAME,
        "realtime",
        _EJ_SINGLE.replace(b"F000000000000100004B044C05DC05DCB2~", b"F004000000000100004B044C05DC05DCAE~"),
        AIOBMSBLE.format("tests/bms/test_ej_bms.py test_problem_response (first_bit, problem_code 0x4)"),
        {"alarms": ["system_fault"], "charge_enabled": True, "discharge_enabled": True},
    ),
    ProblemFrame(
        EJ_SINGLE_FRAME,
        "realtime",
        _EJ_SINGLE.replace(b"F000000000000100004B044C05DC05DCB2~", b"F800000000000100004B044C05DC05DCAA~"),
        AIOBMSBLE.format("tests/bms/test_ej_bms.py test_problem_response (last_bit, problem_code 0x800)"),
        {"alarms": ["system_fault"]},
    ),
    ProblemFrame(
        BRAUNPWR,
        "pack",
        bytes.fromhex("7B0120005314D300D200B400BEFB8761C2753000000000000800000000000E800000647D"),
        AIOBMSBLE.format("tests/bms/test_braunpwr_bms.py test_problem_response (problem_code 0x8000)"),
        {"extras.problem_code": 0x8000, "alarms": ["system_fault"]},
    ),
    ProblemFrame(
        BRAUNPWR,
        "pack",
        bytes.fromhex("7B0120005314D300D200B400BEFB8761C2753000000000000800000000000E000200647D"),
        AIOBMSBLE.format("tests/bms/test_braunpwr_bms.py test_problem_response (problem_code 0x2)"),
        {"extras.problem_code": 0x2, "alarms": ["system_fault"]},
    ),
    ProblemFrame(
        ABC,
        "problems",
        bytes.fromhex("CCF969000000000000000000000000000000001D"),
        AIOBMSBLE.format("tests/bms/test_abc_bms.py test_problem_response (first_bit, problem_code 0x1)"),
        {"alarms": ["system_fault"]},
    ),
    ProblemFrame(
        ABC,
        "problems",
        bytes.fromhex("CCF9000000000000000000000000000000690005"),
        AIOBMSBLE.format("tests/bms/test_abc_bms.py test_problem_response (last_bit, problem_code 0x8000)"),
        {"alarms": ["system_fault"]},
    ),
    ProblemFrame(
        CBTPWR_VB,
        "analog",
        _CBTPWR_VB_ANALOG.replace(b"{}", b"000000000001EF5F"),
        AIOBMSBLE.format("tests/bms/test_cbtpwr_vb_bms.py test_problem_response (first_bit, problem_code 1)"),
        {"alarms": ["system_fault"]},
    ),
    ProblemFrame(
        CBTPWR_VB,
        "analog",
        _CBTPWR_VB_ANALOG.replace(b"{}", b"800000000000EF58"),
        AIOBMSBLE.format("tests/bms/test_cbtpwr_vb_bms.py test_problem_response (last_bit, problem_code 1 << 47)"),
        {"alarms": ["system_fault"]},
    ),
    ProblemFrame(
        PRO,
        "values",
        bytes.fromhex(
            "55AA2D0480AA01701C05000096090081E2000000AD19000033000000CA050000890C0000770B0000044E000082648E684000"
        ),
        AIOBMSBLE.format("tests/bms/test_pro_bms.py (RECORDED_PACKETS data_with_protection, problem_code 1)"),
        {"alarms": ["system_fault"], "current": -2.454},
    ),
    ProblemFrame(
        ECTIVE,
        "status",
        _TOPBAND_PROBLEM.replace(b"{}", b"01", 1).replace(b"{}", b"0890"),
        AIOBMSBLE.format("tests/bms/test_ective_bms.py test_problem_response (first_bit, problem_code 1)"),
        {"extras.problem_code": 1, "alarms": ["system_fault"], "current": -13.0},
    ),
    ProblemFrame(
        ECTIVE,
        "status",
        _TOPBAND_PROBLEM.replace(b"{}", b"80", 1).replace(b"{}", b"090F"),
        AIOBMSBLE.format("tests/bms/test_ective_bms.py test_problem_response (last_bit, problem_code 128)"),
        {"extras.problem_code": 128, "alarms": ["system_fault"], "current": -13.0},
    ),
    ProblemFrame(
        FELICITY,
        "realtime",
        # aiobmsble patches characters 146..166 of the reply.
        _FELICITY_REALTIME[:146] + b'"Bfault":1,"Bwarn":10' + _FELICITY_REALTIME[166:],
        AIOBMSBLE.format("tests/bms/test_felicity_bms.py test_problem_response (problem_code 11)"),
        {"extras.fault_code": 1, "extras.warning_code": 10, "alarms": ["system_fault"]},
    ),
    ProblemFrame(
        WS_NOVA,
        "status",
        _WS_NOVA_STATUS[:89] + b"C820" + _WS_NOVA_STATUS[93:],
        AIOBMSBLE.format("tests/bms/test_ws_nova_bms.py test_problem_response (lowT_dischrg, problem_code 0x0800)"),
        {"alarms": ["discharge_undertemperature"], "voltage": 13.015},
    ),
    ProblemFrame(
        WS_NOVA,
        "status",
        _WS_NOVA_STATUS[:89] + b"E030" + _WS_NOVA_STATUS[93:],
        AIOBMSBLE.format("tests/bms/test_ws_nova_bms.py test_problem_response (overC_chrg, problem_code 0x0010)"),
        {"alarms": ["charge_overcurrent"], "voltage": 13.015},
    ),
    ProblemFrame(
        WS_NOVA,
        "status",
        _WS_NOVA_STATUS[:89] + b"F024" + _WS_NOVA_STATUS[93:],
        AIOBMSBLE.format("tests/bms/test_ws_nova_bms.py test_problem_response (high, problem_code 0x0004)"),
        {"alarms": ["system_fault"], "voltage": 13.015},
    ),
    ProblemFrame(
        WS_NOVA,
        "status",
        _WS_NOVA_STATUS[:89] + b"C028" + _WS_NOVA_STATUS[93:],
        AIOBMSBLE.format("tests/bms/test_ws_nova_bms.py test_problem_response (low, problem_code 0x0008)"),
        {"alarms": ["system_fault"], "voltage": 13.015},
    ),
    ProblemFrame(
        DPWRCORE,
        "status",
        # The source's problem pages: problem byte FF, checksum 04EC (the second page's padding follows it).
        bytes.fromhex(_DPWRCORE_STATUS[0].format("FF04EC") + _DPWRCORE_STATUS[1].format("0004EC")),
        AIOBMSBLE.format("tests/bms/test_dpwrcore_bms.py MockProblemBleakClient (problem_code 255)"),
        {"extras.problem_code": 255, "alarms": ["system_fault"], "voltage": 52.5},
    ),
)
"""Frames with alarm bits set, checked against the captures they modify (not conformance vectors)."""
