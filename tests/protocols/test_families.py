"""The issue-14 families decode their public captures to the values the captures' sources state."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bmsgate.errors import BmsgateError
from bmsgate.protocols import CompiledProtocol, get_protocol
from bmsgate.protocols.framing import Frame
from bmsgate.protocols.wirekey import wire_key, xor_bytes

from .family_frames import CAPTURES, PROBLEM_FRAMES, FamilyCapture, ProblemFrame


def _value(snapshot: dict[str, Any], key: str) -> Any:
    if key.startswith("extras."):
        return snapshot["extras"].get(key.removeprefix("extras."))
    if key.startswith("device."):
        return snapshot["device"][key.removeprefix("device.")]
    return snapshot[key]


def _close(actual: Any, expected: Any, tolerance: float) -> bool:
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_close(item, want, tolerance) for item, want in zip(actual, expected, strict=True))
        )
    if isinstance(expected, bool) or not isinstance(expected, int | float):
        return bool(actual == expected)
    return isinstance(actual, int | float) and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=tolerance)


def _checked(protocol: CompiledProtocol, wire: bytes, device_name: str | None = None) -> Frame:
    """One frame as the BMS sent it, through the protocol's assembler (hex-text frames are text on the wire).

    A definition with a ``wire_key`` gets the frame descrambled with the key of `device_name` first, as the
    session does.

    Raises:
        BmsgateError: the assembler refused it (its reason).
    """
    spec = protocol.definition.framing.wire_key
    if spec is not None:
        key = wire_key(device_name, spec)
        assert key is not None, f"{device_name!r} gives no wire key"
        wire = xor_bytes(wire, key)
    assembler = protocol.new_assembler()
    frames = assembler.feed(wire)
    if len(frames) != 1:
        raise BmsgateError(f"not one frame: {assembler.stats.last_error}")
    return frames[0]


def _poll_frames(capture: FamilyCapture) -> list[Frame]:
    protocol = get_protocol(capture.protocol)
    return [
        _checked(protocol, frame, capture.device_name)
        for request in protocol.requests_for(capture.device_name)
        for frame in capture.replies.get(request.name, [])
    ]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda capture: f"{capture.protocol}-{capture.vector}")
def test_capture_decodes_to_the_stated_values(capture: FamilyCapture) -> None:
    protocol = get_protocol(capture.protocol)
    unknown = set(capture.replies) - {request.name for request in protocol.requests}
    assert not unknown, f"frames for requests the definition does not make: {sorted(unknown)}"
    layout = protocol.variant_for_name(capture.device_name)
    snapshot = protocol.decode(_poll_frames(capture), battery_id="capture", timestamp=0.0, variant=layout).to_dict()
    wrong = {
        key: (_value(snapshot, key), expected)
        for key, expected in capture.stated.items()
        if not _close(_value(snapshot, key), expected, capture.tolerance)
    }
    assert not wrong, f"decoded vs stated: {wrong}"


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda capture: f"{capture.protocol}-{capture.vector}")
def test_every_capture_frame_passes_the_frame_checks(capture: FamilyCapture) -> None:
    protocol = get_protocol(capture.protocol)
    for name, frames in capture.replies.items():
        reply = next(request.reply for request in protocol.requests if request.name == name)
        key = protocol.definition.framing.key
        keyed = key is not None and key.in_replies  # a key only requests carry is not read from replies
        for frame in frames:
            assert _checked(protocol, frame, capture.device_name).key == (reply if keyed else None), name


def test_a_corrupted_capture_frame_is_refused() -> None:
    checked = 0
    for capture in CAPTURES:
        protocol = get_protocol(capture.protocol)
        if protocol.definition.framing.checksum is None:
            continue  # a protocol without a checksum (braunpwr) cannot notice a flipped bit
        checked += 1
        frame = bytearray(next(iter(capture.replies.values()))[0])
        frame[len(frame) // 2] ^= 0x01
        with pytest.raises(BmsgateError):
            _checked(protocol, bytes(frame))
    assert checked


@pytest.mark.parametrize(
    "problem", PROBLEM_FRAMES, ids=lambda problem: f"{problem.base.protocol}-{problem.source[-24:]}"
)
def test_alarm_bits_of_the_source_raise_alarms(problem: ProblemFrame) -> None:
    capture = problem.base
    protocol = get_protocol(capture.protocol)
    replies = capture.replies | {problem.request: [problem.frame]}
    frames = [_checked(protocol, frame) for request in protocol.requests for frame in replies.get(request.name, [])]
    snapshot = protocol.decode(frames, battery_id="capture", timestamp=0.0).to_dict()
    wrong = {
        key: (_value(snapshot, key), expected)
        for key, expected in problem.stated.items()
        if not _close(_value(snapshot, key), expected, capture.tolerance)
    }
    assert not wrong, f"decoded vs stated: {wrong}"
