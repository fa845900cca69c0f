"""The rollout channels: signed desired state and reported update phases, parsed strictly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.fleet.protocol import FleetMessageError, PackVersion
from bmsgate.fleet.updates import (
    DesiredEnvelope,
    DesiredState,
    FailureReason,
    PackTarget,
    ReportedState,
    RunningVersions,
    Signature,
    UpdatePhase,
    decode_desired,
    decode_reported,
    signing_bytes,
)

_SHA = "ab" * 32
_TOPIC = "fleet/v1/gw-1/desired"


def _state(**changes: object) -> DesiredState:
    fields: dict[str, object] = {
        "v": 1,
        "gateway": "gw-1",
        "generation": 4,
        "issued_at": 1_790_000_000.0,
        "expires_at": 1_792_592_000.0,
        "rollout": "r-7",
        "packs": (
            PackTarget(pack="za-maps", version="3", target="packs/za-maps-3.pack.json", length=10484, sha256=_SHA),
        ),
    }
    fields.update(changes)
    return DesiredState.model_validate(fields)


def _envelope(state: DesiredState) -> bytes:
    return (
        DesiredEnvelope(signed=state, signatures=(Signature(keyid="cd" * 32, sig="ef" * 64),))
        .model_dump_json()
        .encode()
    )


def test_a_desired_state_round_trips_and_its_signed_bytes_are_canonical() -> None:
    state = _state()
    parsed = decode_desired(_envelope(state), topic=_TOPIC, gateway="gw-1")
    assert parsed.signed == state
    # The signed bytes do not depend on how the JSON was spelled: the gateway re-derives them from what it parsed.
    shuffled = json.dumps(json.loads(_envelope(state)), indent=3, sort_keys=False).encode()
    assert signing_bytes(decode_desired(shuffled, topic=_TOPIC, gateway="gw-1").signed) == signing_bytes(state)
    assert signing_bytes(state) != signing_bytes(_state(generation=5))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "json"),
        (b'{"signed": {}, "signatures": []}', "schema"),
        (_envelope(_state()).replace(b'"gw-1"', b'"gw-2"'), "gateway_mismatch"),
        (_envelope(_state()).replace(b"packs/za-maps-3.pack.json", b"packs/../../etc/passwd"), "schema"),
        (_envelope(_state()).replace(b'"generation":4', b'"generation":0'), "schema"),
        (b" " * (64 * 1024 + 1), "too_large"),
    ],
)
def test_a_bad_desired_state_is_refused_with_its_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(FleetMessageError) as caught:
        decode_desired(payload, topic=_TOPIC, gateway="gw-1")
    assert caught.value.reason == reason


def test_an_unsigned_desired_state_is_refused() -> None:
    unsigned = json.dumps({"signed": json.loads(_state().model_dump_json()), "signatures": []}).encode()
    with pytest.raises(FleetMessageError, match="signatures"):
        decode_desired(unsigned, topic=_TOPIC, gateway="gw-1")


def test_a_reported_state_round_trips() -> None:
    report = ReportedState(
        v=1,
        gateway="gw-1",
        at=1_790_000_100.0,
        phase=UpdatePhase.REVERTED,
        generation=4,
        rollout="r-7",
        desired_sha256=_SHA,
        reason=FailureReason.HEALTH,
        detail="house: soc 140 % out of range",
        running=RunningVersions(
            software="0.9.0", packs=(PackVersion(kind="register-map", name="generic", sha256=_SHA),)
        ),
    )
    payload = report.model_dump_json().encode()
    assert decode_reported(payload, topic="fleet/v1/gw-1/reported", gateway="gw-1") == report
    with pytest.raises(FleetMessageError) as caught:
        decode_reported(payload.replace(b'"reverted"', b'"updated"'), topic="fleet/v1/gw-1/reported", gateway="gw-1")
    assert caught.value.reason == "schema"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | st.text(max_size=256).map(str.encode))
def test_parsing_anything_raises_only_fleet_message_errors(payload: bytes) -> None:
    for parse in (decode_desired, decode_reported):
        try:
            parse(payload, topic=_TOPIC, gateway="gw-1")
        except FleetMessageError:
            pass
