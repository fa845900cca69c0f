"""Stark Varg: the challenge–response of ``gatt.authenticate`` and the per-characteristic ``gatt.tags`` (engine 7).

The response is what aiobmsble's own test pins (``02 01`` + SHA-256(key ‖ ``02 01`` ‖ nonce)); the blocks are
built from its field table (no real telemetry is public), see ``family_frames.STARK_VARG``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest

from bmsgate.app.config import config_from_mapping
from bmsgate.app.gateway import build_gateway
from bmsgate.errors import AuthenticationError, ConfigError, DecodeError, DefinitionError, ProtocolError
from bmsgate.protocols import CompiledProtocol, decode, get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.gattauth import challenge_response, configured_key, is_accepted
from bmsgate.protocols.gattspec import ChallengeResponse

from .family_frames import STARK_VARG

PROTOCOL = get_protocol("stark-varg")
PROFILE = PROTOCOL.gatt_profiles[0]


def _authentication(protocol: CompiledProtocol) -> ChallengeResponse:
    spec = protocol.gatt_profiles[0].authenticate
    assert spec is not None
    return spec


AUTH = _authentication(PROTOCOL)
KEY_TEXT = b"00112233445566778899aabbccddeeff"


def test_the_response_is_the_header_then_sha256_of_key_header_and_challenge() -> None:
    key, challenge = bytes(range(16)), bytes(range(32))
    header = bytes.fromhex("0201")
    expected = header + hashlib.sha256(key + header + challenge).digest()
    assert challenge_response(AUTH, key, challenge) == expected
    # Pinned, for a runtime in another language: key 00..0F, challenge 00..1F.
    assert expected.hex() == "0201c21460f4dbc61562529fa920c24381cef60aa30fcb1d16723b799e16989dc3cf"


@pytest.mark.parametrize("length", [0, 31, 33])
def test_a_challenge_of_another_length_is_refused_before_hashing(length: int) -> None:
    with pytest.raises(ProtocolError, match=f"has {length} bytes, expected 32"):
        challenge_response(AUTH, bytes(16), bytes(length))


def test_the_verdict_01_accepts_and_anything_else_refuses() -> None:
    assert is_accepted(AUTH, b"\x01")
    assert is_accepted(AUTH, b"\x01\x00")
    assert not is_accepted(AUTH, b"\x00")
    assert not is_accepted(AUTH, b"")


def test_the_configured_key_is_32_hex_digits() -> None:
    assert configured_key(AUTH, KEY_TEXT) == bytes.fromhex(KEY_TEXT.decode())
    assert configured_key(AUTH, KEY_TEXT.upper() + b"\n") == bytes.fromhex(KEY_TEXT.decode())


@pytest.mark.parametrize("secret", [None, b"", b"not-hex", b"00" * 15, b"00" * 17, b"g" + KEY_TEXT[1:]])
def test_a_missing_or_malformed_key_says_what_is_wanted_but_not_what_was_given(secret: bytes | None) -> None:
    with pytest.raises(AuthenticationError, match="16-byte key as 32 hex digits") as caught:
        configured_key(AUTH, secret)
    if secret:
        assert secret.decode() not in str(caught.value)


# -- the blocks -------------------------------------------------------------------------------------------


def test_each_block_is_keyed_by_the_tag_of_its_characteristic() -> None:
    assembler = PROTOCOL.new_assembler()
    frames = [
        frame
        for request in PROTOCOL.requests
        for chunk in STARK_VARG.replies[request.name]
        for frame in assembler.feed(chunk)
    ]
    assert [frame.key for frame in frames] == [0x5001, 0x6003, 0x6004, 0x6005, 0x6007, 0x6008]
    assert PROFILE.tag_of[PROFILE.notify] == bytes.fromhex("5001")


def test_a_temperature_counts_only_while_its_bit_of_the_valid_word_is_set() -> None:
    replies = {name: list(frames) for name, frames in STARK_VARG.replies.items()}
    block = bytearray(replies["temperatures"][0])
    block[2 + 24] = 0b0000_0110  # sensors 2 and 3 valid (sensor 3 reads 0.0 °C)
    replies["temperatures"] = [bytes(block)]
    snapshot = decode(PROTOCOL, [frame for name in replies for frame in replies[name]], battery_id="t")
    assert snapshot.temperatures == (22.0, 0.0)


def test_a_short_block_is_refused() -> None:
    frames = [frame for frames in STARK_VARG.replies.values() for frame in frames]
    frames[0] = frames[0][:-1]  # 18 bytes of the charger block: aiobmsble ignores fewer than 19
    with pytest.raises(DecodeError):
        decode(PROTOCOL, frames, battery_id="t")


# -- what the loader refuses ------------------------------------------------------------------------------


def _variant(edit: Any) -> None:
    data = PROTOCOL.definition.model_dump(mode="json", exclude={"source"})
    data.pop("requires")
    edit(data)
    definition_from_mapping(data, source="<variant>")


def test_the_unedited_definition_loads() -> None:
    _variant(lambda data: None)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d["gatt"]["profiles"][0]["tags"].pop(), "tags must name notify and every also_notify"),
        (lambda d: d["gatt"]["profiles"][0]["tags"][1].update(tag="5001"), "distinct and equally long"),
        (lambda d: d["gatt"]["profiles"][0]["tags"][1].update(tag="600301"), "distinct and equally long"),
        (lambda d: d["framing"].update(starts=["5001", "6003"]), "each tag among framing.starts"),
        (
            lambda d: d["gatt"]["profiles"][0]["authenticate"].update(
                characteristic=d["gatt"]["profiles"][0]["notify"]
            ),
            "verdicts: it cannot carry frames",
        ),
        (lambda d: d["gatt"]["profiles"][0]["authenticate"].update(over=["prefix", "challenge"]), "'over' must name"),
        (lambda d: d["gatt"]["profiles"][0]["authenticate"].update(digest="md5"), "digest"),
    ],
)
def test_the_loader_refuses_a_broken_tag_or_authentication(edit: Any, reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        _variant(edit)


# -- configuration ----------------------------------------------------------------------------------------


def _config(secret: str | None) -> dict[str, Any]:
    battery: dict[str, Any] = {
        "id": "bike",
        "protocol": "stark-varg",
        "transport": {"type": "ble", "address": "a4:c1:37:00:11:22"},
    }
    if secret is not None:
        battery["secret"] = secret
    return {"batteries": [battery]}


@pytest.mark.parametrize("secret", [None, "1234", "zz" * 16])
def test_a_bike_without_a_usable_key_is_a_config_error_at_its_secret(secret: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        build_gateway(config_from_mapping(_config(secret)))
    assert "batteries[0].secret" in str(caught.value) and "32 hex digits" in str(caught.value)
    if secret:
        assert secret not in str(caught.value)


def test_a_bike_with_a_key_builds_and_its_transport_holds_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        gateway = build_gateway(config_from_mapping(_config(KEY_TEXT.decode())))
    client = gateway.supervisor.batteries["bike"].client
    assert client.transport._secret == KEY_TEXT  # type: ignore[attr-defined]
    # Where a key could show once the gateway is built: its log lines, the options, the transport's name, the
    # configuration as JSON (a plain str field there would hold it).
    key = KEY_TEXT.decode()
    assert key not in caplog.text
    assert key not in repr(client.options) and key not in client.transport.description
    assert key not in str(gateway.config.model_dump(mode="json"))


# -- discovery --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "matches"),
    [
        ("UDUVARG0000000042", True),
        ("udu1a2b3c4d5e6f7g8", False),  # 18 characters: no VIN
        ("UDUVARGO000000042", False),  # a VIN has no O
        ("WDUVARG0000000042", False),  # another manufacturer
        (None, False),
    ],
)
def test_a_bike_is_found_by_its_vin(name: str | None, matches: bool) -> None:
    found = any(
        matcher.matches(name=name, address=None, service_uuids=[], manufacturer_ids=[])
        for matcher in PROTOCOL.definition.match
    )
    assert found is matches
