"""The fleet protocol: topics, messages, limits; hostile payloads raise only FleetMessageError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.fleet import protocol
from bmsgate.fleet.protocol import (
    BatteryReading,
    Channel,
    CommandKind,
    CommandMessage,
    EventKind,
    EventMessage,
    FleetMessageError,
    Location,
    LocationFix,
    StateMessage,
    TelemetryMessage,
    compact_snapshot,
    decode,
    encode,
    parse_topic,
    topic,
)
from bmsgate.model import BatterySnapshot

from ..strategies import snapshots

GW = "site-042"


def _telemetry(**changes: object) -> TelemetryMessage:
    snap = BatterySnapshot(battery_id="b1", timestamp=1.7e9, protocol="jbd", voltage=53.1, cell_voltages=(3.3, 3.31))
    fields: dict[str, object] = {
        "v": 1,
        "gateway": GW,
        "seq": 7,
        "at": 1.7e9,
        "batteries": [BatteryReading(id="b1", age_s=0.4, stale=False, snapshot=compact_snapshot(snap))],
    }
    fields.update(changes)
    return TelemetryMessage.model_validate(fields)


def test_topics_round_trip_and_refuse_wildcards() -> None:
    assert topic(GW, Channel.TELEMETRY) == "fleet/v1/site-042/telemetry"
    assert parse_topic("fleet/v1/site-042/state") == (GW, Channel.STATE)
    for bad in ("fleet/v1/+/state", "fleet/v2/a/state", "fleet/v1/a/b/state", "fleet/v1/a/shell", "x"):
        with pytest.raises(FleetMessageError) as caught:
            parse_topic(bad)
        assert caught.value.reason == "topic"
    with pytest.raises(ValueError, match="gateway id"):
        topic("a/b", Channel.STATE)
    # `$` would also match before a final newline: an id with one would split the broker's ACL lines.
    assert not protocol.is_gateway_id("gw9\n")
    with pytest.raises(FleetMessageError):
        parse_topic("fleet/v1/gw9\n/state")


def test_telemetry_round_trips_and_snapshot_is_rebuilt() -> None:
    message = _telemetry()
    payload = encode(message)
    assert b" " not in payload
    decoded = decode(topic(GW, Channel.TELEMETRY), payload)
    assert decoded.message == message
    assert isinstance(decoded.message, TelemetryMessage)
    rebuilt = decoded.message.batteries[0].to_snapshot()
    assert rebuilt is not None
    assert rebuilt.voltage == 53.1
    assert rebuilt.cell_voltages == (3.3, 3.31)


@settings(max_examples=150, deadline=None)
@given(snapshots)
def test_compact_snapshot_reads_back_to_the_same_snapshot(snapshot: BatterySnapshot) -> None:
    assert BatterySnapshot.from_dict(compact_snapshot(snapshot)) == snapshot


def test_payload_naming_another_gateway_is_refused() -> None:
    with pytest.raises(FleetMessageError) as caught:
        decode(topic("other", Channel.TELEMETRY), encode(_telemetry()))
    assert caught.value.reason == "gateway_mismatch"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "json"),
        (b"[]", "schema"),
        (b'{"v": 2, "gateway": "site-042", "seq": 1, "at": 1, "batteries": []}', "version"),
        (b'{"v": 1, "gateway": "site-042", "seq": -1, "at": 1, "batteries": []}', "schema"),
        (b'{"v": 1, "gateway": "site-042", "seq": 1, "at": 1, "batteries": [], "shell": "rm -rf /x"}', "schema"),
        (b'{"v": 1, "gateway": "site-042", "seq": 1, "at": 1e300, "batteries": []}', "schema"),
        (b'{"v": 1, "gateway": "site-042", "seq": 1, "at": NaN, "batteries": []}', "schema"),
        (b"x" * (300 * 1024), "too_large"),
    ],
)
def test_bad_payloads_have_a_countable_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(FleetMessageError) as caught:
        decode(topic(GW, Channel.TELEMETRY), payload)
    assert caught.value.reason == reason
    assert "rm -rf" not in str(caught.value)  # the payload is never echoed into logs


def test_a_bad_snapshot_inside_valid_telemetry_is_refused_on_use() -> None:
    message = _telemetry(batteries=[BatteryReading(id="b1", age_s=0, stale=False, snapshot={"voltage": "x"})])
    with pytest.raises(FleetMessageError) as caught:
        message.batteries[0].to_snapshot()
    assert caught.value.reason == "snapshot"


def test_location_fix_and_coordinates_agree() -> None:
    Location(source="gpsd", fix=LocationFix.NONE)
    Location(source="config", fix=LocationFix.FIXED, lat=-33.9, lon=18.4)
    with pytest.raises(ValueError, match="needs lat"):
        Location(source="gpsd", fix=LocationFix.FIX_3D)
    with pytest.raises(ValueError, match="no coordinates"):
        Location(source="gpsd", fix=LocationFix.NONE, lat=1, lon=1)


def test_availability_state_event_and_command() -> None:
    assert decode(topic(GW, Channel.AVAILABILITY), b"offline").online is False
    with pytest.raises(FleetMessageError):
        decode(topic(GW, Channel.AVAILABILITY), b"maybe")
    state = StateMessage(v=1, gateway=GW, sent_at=1.7e9, software_version="0.1.0", uptime_s=3, interval_s=10)
    assert decode(topic(GW, Channel.STATE), encode(state)).message == state
    event = EventMessage(v=1, gateway=GW, seq=3, at=1.7e9, kind=EventKind.ALARM_RAISED, battery="b1", alarm="x")
    assert decode(topic(GW, Channel.EVENT), encode(event)).message == event
    command = CommandMessage(v=1, id="c-1", kind=CommandKind.REFRESH_STATE, issued_at=1, expires_at=2)
    assert decode(topic(GW, Channel.COMMAND), encode(command)).message == command
    with pytest.raises(FleetMessageError):
        decode(topic(GW, Channel.COMMAND), b'{"v":1,"id":"c","kind":"shell","issued_at":1,"expires_at":2}')


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(channel=st.sampled_from(list(Channel)), payload=st.binary(max_size=256) | _json_values.map(json.dumps))
def test_fuzzed_payloads_raise_only_our_error(channel: Channel, payload: bytes | str) -> None:
    raw = payload.encode() if isinstance(payload, str) else payload
    try:
        decoded = decode(topic(GW, channel), raw)
    except FleetMessageError:
        return
    if isinstance(decoded.message, TelemetryMessage):
        for reading in decoded.message.batteries:
            try:
                reading.to_snapshot()
            except FleetMessageError:
                pass


def test_deeply_nested_payload_is_refused_quickly() -> None:
    payload = (
        b'{"v":1,"gateway":"site-042","seq":1,"at":1,"batteries":[],"inverter":' + b"[" * 5000 + b"]" * 5000 + b"}"
    )
    with pytest.raises(FleetMessageError):
        decode(topic(GW, Channel.TELEMETRY), payload)


def test_every_channel_has_a_size_limit() -> None:
    assert set(protocol.MAX_PAYLOAD_BYTES) == set(Channel)
    assert protocol.GATEWAY_CHANNELS.isdisjoint(protocol.SERVER_CHANNELS)
    assert protocol.GATEWAY_CHANNELS | protocol.SERVER_CHANNELS == set(Channel)


def test_a_number_too_large_for_a_float_is_a_refused_snapshot() -> None:
    hostile = {"battery_id": "b1", "timestamp": 1.7e9, "voltage": 10**400}
    message = _telemetry(batteries=[BatteryReading(id="b1", age_s=0, stale=False, snapshot=hostile)])
    with pytest.raises(FleetMessageError) as caught:
        message.batteries[0].to_snapshot()
    assert caught.value.reason == "snapshot"


def test_a_sequence_number_beyond_64_bits_is_refused() -> None:
    largest = encode(_telemetry(seq=2**63 - 1))
    decoded = decode(topic(GW, Channel.TELEMETRY), largest).message
    assert isinstance(decoded, TelemetryMessage)
    assert decoded.seq == 2**63 - 1
    with pytest.raises(FleetMessageError) as caught:
        decode(topic(GW, Channel.TELEMETRY), largest.replace(b'"seq":9223372036854775807', b'"seq":1' + b"0" * 20))
    assert caught.value.reason == "schema"


def test_a_nul_character_is_refused_before_parsing() -> None:
    payload = b'{"v":1,"gateway":"site-042","seq":1,"at":1700000000,"kind":"config_applied","detail":"a\\u0000b"}'
    with pytest.raises(FleetMessageError) as caught:
        decode(topic(GW, Channel.EVENT), payload)
    assert caught.value.reason == "schema"
    assert "NUL" in str(caught.value)
    assert decode(topic(GW, Channel.EVENT), payload.replace(b"\\u0000", b"\\u0001")).message is not None
