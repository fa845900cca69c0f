"""Requests built from the device's advertised name (``from_name``, D-powercore's unlock password)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import DefinitionError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import NameBytesSpec, definition_from_mapping
from bmsgate.protocols.devicename import name_number, request_frame
from bmsgate.protocols.session import PollSession, Write

from .family_frames import DPWRCORE

DPWRCORE_PROTOCOL = get_protocol("dpwrcore")
UNLOCK = next(request for request in DPWRCORE_PROTOCOL.requests if request.name == "unlock")
FRAMING = DPWRCORE_PROTOCOL.definition.framing
PASSWORD = NameBytesSpec(at=6, size=2, chars=4, base=16, names="DXB-*")


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("DXB-MockBLEDevice_C0FE", 0xC0FE),
        ("dxb-0000abcd", 0xABCD),  # the glob ignores case
        ("TBA-MockBLEDevice_C0FE", None),  # not a DXB- pack: aiobmsble does not unlock TBA- packs
        ("DXB-MockBLEDevice_C0FG", None),  # not hex
        ("DXB-", None),
        ("DXB-+1FF", None),  # int() would take the sign; a password is digits only
        (None, None),
        ("", None),
    ],
)
def test_the_password_is_the_names_last_four_hex_digits(name: str | None, number: int | None) -> None:
    assert name_number(name, PASSWORD) == number


def test_a_number_too_large_for_its_bytes_is_no_number() -> None:
    assert name_number("12345", NameBytesSpec(at=0, size=1, chars=3, base=10)) is None
    assert name_number("12255", NameBytesSpec(at=0, size=1, chars=3, base=10)) == 255


def test_the_unlock_frame_carries_the_password_and_a_new_checksum_as_aiobmsble_writes_it() -> None:
    frame = request_frame(UNLOCK, FRAMING, "DXB-MockBLEDevice_C0FE")
    assert frame == bytes.fromhex("3A0305640000C0FE022A0D0A")
    # aiobmsble's mock checks the page's length byte (0x0E) and the password at page bytes 8-9.
    wire = DPWRCORE_PROTOCOL.wire(frame)
    assert wire[0] == 0x0E
    assert wire[8:10] == bytes.fromhex("C0FE")
    assert request_frame(UNLOCK, FRAMING, "TBA-MockBLEDevice_C0FE") is None
    status = next(request for request in DPWRCORE_PROTOCOL.requests if request.name == "status")
    assert request_frame(status, FRAMING, None) == status.frame


def _writes(session: PollSession) -> list[bytes]:
    return [action.data for action in session.start_poll(0.0, epoch=0.0) if isinstance(action, Write)]


def test_the_session_unlocks_a_dxb_pack_once_per_connection_and_a_tba_pack_never() -> None:
    unlock = DPWRCORE_PROTOCOL.wire(bytes.fromhex("3A0305640000C0FE022A0D0A"))
    status = DPWRCORE_PROTOCOL.wire(next(r.frame for r in DPWRCORE_PROTOCOL.requests if r.name == "status"))
    dxb = PollSession(DPWRCORE_PROTOCOL, device_name="DXB-MockBLEDevice_C0FE")
    assert _writes(dxb) == [unlock, status]
    for reply in DPWRCORE.replies.values():
        for start in range(0, len(reply[0]), 20):
            dxb.feed(reply[0][start : start + 20], 0.5)
    assert _writes(dxb) == [status]  # the same connection: not again
    dxb.connection_reset()
    assert _writes(dxb) == [unlock, status]
    tba = PollSession(DPWRCORE_PROTOCOL, device_name="TBA-MockBLEDevice_C0FE")
    assert _writes(tba) == [status]
    unnamed = PollSession(DPWRCORE_PROTOCOL)
    assert _writes(unnamed) == [status]


def _definition(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": "named-test",
        "title": "named test",
        "requires": ["checksum.sum8", "connect", "fixed_length", "from_name"],
        "gatt": {"profiles": [{"service": "ff00", "notify": "ff01", "write": "ff02"}]},
        "match": [{"local_name": "X*"}],
        "framing": {
            "start": "3A",
            "key": {"offset": 1},
            "fixed_length": 5,
            "checksum": {"algorithm": "sum8", "start": 1, "end": -1, "at": -1},
        },
        "requests": [
            {"name": "unlock", "when": "connect", "frame": "3A 09 00 00 09", **request},
            {"name": "read", "frame": "3A 01 00 00 01", "reply": 1},
        ],
        "replies": {1: {"name": "read", "fields": [{"target": "soc", "at": 2, "type": "u8"}]}},
    }


@pytest.mark.parametrize(
    ("request_keys", "reason"),
    [
        ({"from_name": {"at": 2, "size": 2, "chars": 4}, "reply": 9}, "without a reply"),
        ({"from_name": {"at": 4, "size": 2, "chars": 4}}, "inside 'frame'"),
        ({"from_name": {"at": 2, "chars": 4, "names": ""}}, "glob"),
        ({"from_name": {"at": 2, "chars": 0}}, "chars"),
    ],
    ids=["with_reply", "outside_frame", "empty_glob", "no_chars"],
)
def test_the_definition_refuses_a_name_request_that_cannot_work(request_keys: dict[str, Any], reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        definition_from_mapping(_definition(request_keys))


def test_a_minimal_name_request_declares_the_construct_and_fills_its_checksum() -> None:
    definition = definition_from_mapping(_definition({"from_name": {"at": 2, "size": 2, "chars": 4, "base": 10}}))
    assert "from_name" in (definition.requires or [])
    assert request_frame(definition.requests[0], definition.framing, "X-1234") == bytes.fromhex("3A0904D2DF")


@given(name=st.text(max_size=300) | st.none(), chars=st.integers(1, 16), base=st.sampled_from([10, 16]))
@settings(max_examples=200, deadline=None)
def test_fuzz_any_name_gives_a_fitting_number_or_none(name: str | None, chars: int, base: int) -> None:
    spec = NameBytesSpec(at=0, size=2, chars=chars, base=base)  # type: ignore[arg-type]
    number = name_number(name, spec)
    assert number is None or 0 <= number < 1 << 16
    frame = request_frame(UNLOCK, FRAMING, name)
    assert frame is None or (len(frame) == len(UNLOCK.frame) and DPWRCORE_PROTOCOL.request_checksum_ok(frame))
