"""JSON text framing (``text: json``): objects found in chunked text, read by named members, bounded."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DefinitionError, FrameError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.jsonframing import JsonFrameAssembler, frame_of_object, to_wire

from .family_frames import FELICITY

FELICITY_PROTOCOL = get_protocol("felicity")
FRAMING = FELICITY_PROTOCOL.definition.framing
REALTIME = FELICITY.replies["realtime"][0]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _object() -> dict[str, Any]:
    value = json.loads(REALTIME)
    assert isinstance(value, dict)
    return value


def _text(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode()


def _feed(*chunks: bytes) -> tuple[JsonFrameAssembler, list[bytes]]:
    assembler = JsonFrameAssembler(FRAMING)
    return assembler, [frame.raw for chunk in chunks for frame in assembler.feed(chunk)]


def test_the_capture_becomes_one_frame_of_its_members() -> None:
    _, (frame,) = _feed(REALTIME)
    assert len(frame) == FRAMING.fixed_length
    assert frame[:1] == b"{" and frame[-1:] == b"}"
    assert int.from_bytes(frame[1:5], "big", signed=True) == 52800  # Batt[0][0]
    assert int.from_bytes(frame[5:9], "big", signed=True) == -1  # Batt[1][0]
    cells = [int.from_bytes(frame[25 + 4 * n : 29 + 4 * n], "big", signed=True) for n in range(32)]
    assert cells[15:17] == [3297, -(2**31)]  # BatcelList[0] holds 16 cells, the other slots are absent


@given(cuts=st.lists(st.integers(1, len(REALTIME) - 1), max_size=30, unique=True))
@FUZZ
def test_any_split_into_notifications_gives_the_same_frame(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(REALTIME)]
    chunks = [REALTIME[low:high] for low, high in itertools.pairwise(bounds)]
    whole = _feed(REALTIME)[1]
    assert _feed(*chunks)[1] == whole


def test_noise_and_a_cut_object_before_a_whole_one_lose_only_themselves() -> None:
    assembler, frames = _feed(b"AT\r\nnoise", REALTIME[:300], REALTIME, b"trailing")
    assert frames == _feed(REALTIME)[1]
    assert assembler.stats.rejected >= 1
    assert assembler.buffered == 0


def test_braces_and_escaped_quotes_inside_strings_do_not_end_the_object() -> None:
    reply = _object() | {"wifiSN": 'a}b]"c\\', "note": "{[{"}
    text = _text(reply)
    for size in (1, 7, 35):
        _, frames = _feed(*[text[i : i + size] for i in range(0, len(text), size)])
        assert frames == _feed(REALTIME)[1]


def test_nesting_deeper_than_the_bound_is_refused_while_still_text() -> None:
    deep = b'{"a":' + b"[" * 10 + b"]" * 10 + b"}"
    assembler, frames = _feed(deep + REALTIME)
    assert len(frames) == 1
    assert assembler.stats.last_error is not None


def test_an_object_longer_than_max_length_is_refused_and_the_buffer_stays_bounded() -> None:
    long = b'{"CommVer":1,"pad":"' + b"x" * (2 * FRAMING.max_length)
    assembler = JsonFrameAssembler(FRAMING)
    for start in range(0, len(long), 100):
        assert not assembler.feed(long[start : start + 100])
        assert assembler.buffered <= FRAMING.max_length + 100
    assert f"within {FRAMING.max_length} characters" in (assembler.stats.last_error or "")
    assert assembler.feed(REALTIME)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"CommVer": 2}, "CommVer is 2, not 1"),
        ({"Batt": [[52800]]}, "no member Batt[1][0]"),
        ({"Bwarn": "0"}, "Bwarn is str, not a number"),
        ({"Bwarn": True}, "Bwarn is bool, not a number"),
        ({"Bfault": 0.5}, "Bfault is 0.5, not a whole number"),
        ({"Bfault": 2**31}, "outside the 32-bit range"),
        ({"BatcelList": [list(range(33))]}, "has 33 items; the definition reads at most 32"),
        ({"BtemList": [7]}, "BtemList[0] is int, not a list of numbers"),
        ({"DevSN": 7}, "DevSN is int, not a string"),
        ({"DevSN": "x" * 33}, "33 bytes of text; the definition reads at most 32"),
        ({"DevSN": "a\x00b"}, "without NULs"),
    ],
)
def test_a_reply_that_does_not_fit_is_refused_naming_why(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(FrameError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        frame_of_object(_object() | change, FRAMING.json_object)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"CommVer":1,"Bwarn":NaN}', "NaN is not a number"),
        (b'{"CommVer":1,"Bwarn":Infinity}', "Infinity is not a number"),
        (b'{"CommVer":1,"Bwarn":1e400}', "not finite"),
        (b'{"CommVer":1,"Bwarn":' + b"9" * 4000 + b"}", "more than 20 digits"),
        (b'{"CommVer":1,"Bwarn":0,}', "not JSON"),
        (b'{"CommVer":"\xff"}', "not UTF-8"),
    ],
)
def test_hostile_text_is_refused_by_the_assembler(text: bytes, reason: str) -> None:
    assembler, frames = _feed(text)
    assert not frames
    assert reason in (assembler.stats.last_error or "")


def test_null_and_a_missing_optional_member_read_absent() -> None:
    reply = _object()
    reply["BatcelList"][0][2] = None
    del reply["DevSN"]
    snapshot = FELICITY_PROTOCOL.decode(_feed(_text(reply))[1], timestamp=0.0)
    assert len(snapshot.cell_voltages) == 15
    assert snapshot.device.serial_number is None


def test_a_text_member_keeps_its_utf8() -> None:
    reply = _object() | {"DevSN": "Zäh-01"}
    (frame,) = _feed(_text(reply))[1]
    assert FELICITY_PROTOCOL.decode([frame], timestamp=0.0).device.serial_number is not None
    assert json.loads(to_wire(frame, FRAMING))["DevSN"] == "Zäh-01"


def test_a_frame_goes_back_to_json_text_and_a_request_is_sent_as_written() -> None:
    _, (frame,) = _feed(REALTIME)
    text = to_wire(frame, FRAMING)
    assert json.loads(text)["Batt"] == [[52800], [-1]]
    assert json.loads(text)["DevSN"] == "100011002424470238"
    assert _feed(text)[1] == [frame]
    request = FELICITY_PROTOCOL.requests[0].frame
    assert FELICITY_PROTOCOL.wire(request) == b"wifilocalMonitor:get dev real infor"


def _definition(framing: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": "json-test",
        "title": "JSON test",
        "requires": ["absent", "fixed_length", "text_json"],
        "gatt": {"profiles": [{"service": "ff00", "notify": "ff01", "write": "ff02"}]},
        "match": [{"local_name": "X*"}],
        "framing": framing,
        "requests": [{"name": "read", "frame": "41", "reply": 0x7B}],
        "replies": {
            0x7B: {"name": "read", "fields": [{"target": "voltage", "at": 0, "type": "s32", "absent": [-(2**31)]}]}
        },
    }


def test_the_definition_must_say_the_frame_length_its_members_make() -> None:
    framing = {
        "text": "json",
        "start": "7B",
        "end": "7D",
        "fixed_length": 7,
        "payload_offset": 1,
        "json_object": {"members": [{"member": "V"}, {"member": "C", "items": 2}]},
    }
    with pytest.raises(DefinitionError, match="needs fixed_length: 14"):
        definition_from_mapping(_definition(framing))
    definition_from_mapping(_definition(framing | {"fixed_length": 14}))
    with pytest.raises(DefinitionError, match="overlap"):
        definition_from_mapping(
            _definition(framing | {"json_object": {"members": [{"member": "V"}, {"member": "V", "index": [0]}]}})
        )
    with pytest.raises(DefinitionError, match="'json_object' needs 'text: json'"):
        definition_from_mapping(_definition({"start": "7B", "fixed_length": 6, "json_object": framing["json_object"]}))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@given(
    reply=st.dictionaries(
        st.sampled_from(["CommVer", "Batt", "BatsocList", "Bwarn", "Bfault", "BatcelList", "BtemList"]), _JSON
    ),
    cut=st.integers(1, 64),
)
@FUZZ
def test_fuzz_json_shaped_replies_raise_only_our_errors(reply: dict[str, Any], cut: int) -> None:
    text = json.dumps(reply).encode()
    assembler = JsonFrameAssembler(FRAMING)
    frames = [frame for start in range(0, len(text), cut) for frame in assembler.feed(text[start : start + cut])]
    assert assembler.buffered <= FRAMING.max_length + cut
    try:
        FELICITY_PROTOCOL.decode(frames, timestamp=0.0)
    except BmsgateError:
        pass


@given(
    data=st.lists(
        st.binary(max_size=200) | st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b'{"CommVer":1,']),
        max_size=40,
    )
)
@FUZZ
def test_fuzz_brace_heavy_bytes_raise_only_our_errors(data: list[bytes]) -> None:
    assembler = JsonFrameAssembler(FRAMING)
    for chunk in data:
        for frame in assembler.feed(chunk):
            try:
                FELICITY_PROTOCOL.decode([frame], timestamp=0.0)
            except BmsgateError:
                pass
        assert assembler.buffered <= FRAMING.max_length + 200


@pytest.mark.parametrize(
    "text",
    [
        b'"CommVer":1,"wifiSN":"F100011002424470238"}',  # aiobmsble's "invalid frame start"
        b'{"CommVer":1,"wifiSN":"F100011002424470238"',  # "invalid frame end": waits for the rest
        b'{"CommVer":2,"wifiSN":"F100011002424470238"}',  # "invalid protocol"
    ],
)
def test_aiobmsble_wrong_responses_give_no_frame(text: bytes) -> None:
    assembler, frames = _feed(text)
    assert not frames
    assert assembler.buffered <= len(text)


@pytest.mark.parametrize(
    ("member", "value", "missing"),
    [
        ("Batt", [[52800], [None]], "current"),
        ("Batt", [[None], [-1]], "voltage"),
        ("BatsocList", [[None, 1000, 300000]], "soc"),
    ],
)
def test_a_null_is_no_value_never_a_huge_number(member: str, value: Any, missing: str) -> None:
    reply = _object()
    reply[member] = value
    _, frames = _feed(_text(reply))
    snapshot = FELICITY_PROTOCOL.decode([FELICITY_PROTOCOL.check_frame(frame) for frame in frames], timestamp=0.0)
    assert getattr(snapshot, missing) is None
    assert len(snapshot.cell_voltages) == 16
