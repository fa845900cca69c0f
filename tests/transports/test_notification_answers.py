"""Engine 6: ``gatt.answer_notify``, keep-alive notifications the BLE transport answers by itself.

Dometic's keep-alive (aiobmsble dometic_bms.py): every notification on ``0000000a-…-008025000000`` (ch C) is
echoed to ``00000009-…``, every one on ``00000004-…`` (ch B) is answered on ``00000003-…`` with a byte toggling
FF, DF, FF, ...; each is answered once at connect, ch C first, before the frame stream. Exercised here on a
JBD board whose profile gets Dometic's keep-alive (the fake board ignores requests until both were answered),
end to end through `BatteryClient`, plus a hostile board flooding a keep-alive characteristic.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import ConnectError, DefinitionError, DeviceError, DeviceTimeout
from bmsgate.protocols import CompiledProtocol, compile_definition, get_protocol
from bmsgate.protocols.constructs import constructs_used
from bmsgate.protocols.definition import NotificationAnswer, definition_from_mapping
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import PackConfig
from bmsgate.testing import FakeBluetooth, FakePeripheral
from bmsgate.transports.answers import MAX_ECHO, NotificationAnswerer
from bmsgate.transports.ble import BleTransport

from .helpers import make_transport


def _dometic_uuid(short: str) -> str:
    return f"0000{short}-0000-1000-8000-008025000000"


CH_B, CH_B_ANSWER = _dometic_uuid("0004"), _dometic_uuid("0003")
CH_C, CH_C_ANSWER = _dometic_uuid("000a"), _dometic_uuid("0009")
KEEP_ALIVE: list[dict[str, Any]] = [
    {"characteristic": CH_C, "write_to": CH_C_ANSWER, "answer": "echo", "first_within": 0.5},
    {"characteristic": CH_B, "write_to": CH_B_ANSWER, "answer": "toggle", "first": "FF", "flip": "20"},
]
ADDRESS = "AA:BB:CC:DD:EE:02"
FAST = ClientOptions(request_timeout=0.3, retries=1, retry_backoff=0.01, poll_deadline=3.0)
JBD = get_protocol("jbd")


def _with_answers(answers: list[dict[str, Any]], *, requires: bool = True) -> CompiledProtocol:
    data = JBD.definition.model_dump(exclude={"source"}, exclude_none=True)
    data["gatt"]["profiles"] = [data["gatt"]["profiles"][0]]
    data["gatt"]["profiles"][0]["answer_notify"] = answers
    data.pop("requires")
    if requires:
        data["requires"] = sorted(constructs_used(definition_from_mapping(data, source="<keep-alive variant>")))
    return compile_definition(definition_from_mapping(data, source="<keep-alive variant>"))


KEPT_ALIVE = _with_answers(KEEP_ALIVE)


def _board(protocol: CompiledProtocol = KEPT_ALIVE, **kwargs: Any) -> FakePeripheral:
    kwargs.setdefault("keep_alives", {CH_C: b"\x9b\x00", CH_B: b"\x12"})
    return FakePeripheral(protocol, ADDRESS, pack=PackConfig(cells=4, ntc_count=2), **kwargs)


def _transport(radio: FakeBluetooth, protocol: CompiledProtocol = KEPT_ALIVE) -> BleTransport:
    return make_transport(radio, protocol, address=ADDRESS)


# -- the definition ----------------------------------------------------------------------------------------


def test_the_construct_is_named_and_requires_must_say_so() -> None:
    assert "gatt.answer_notify" in constructs_used(KEPT_ALIVE.definition)
    data = KEPT_ALIVE.definition.model_dump(exclude={"source"}, exclude_none=True)
    data["requires"] = [name for name in data["requires"] if name != "gatt.answer_notify"]
    with pytest.raises(DefinitionError, match=r"uses gatt\.answer_notify but 'requires' does not list it"):
        definition_from_mapping(data, source="<lying requires>")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"answer": "toggle", "first": "FF"}, "needs 'first' and 'flip'"),
        ({"answer": "toggle", "first": "FF", "flip": "2020"}, "equally long"),
        ({"answer": "toggle", "first": "FF", "flip": "00"}, "at least one bit"),
        ({"answer": "echo", "first": "FF"}, "belong to answer 'toggle' only"),
        ({"answer": "echo", "first_within": 0}, "greater than 0"),
        ({"answer": "echo", "first_within": 31}, "less than or equal to 30"),
        ({"answer": "reply"}, "'echo' or 'toggle'"),
    ],
)
def test_a_malformed_answer_is_refused_clearly(answer: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NotificationAnswer.model_validate({"characteristic": CH_B, "write_to": CH_B_ANSWER, **answer})


def test_a_characteristic_answered_twice_or_carrying_frames_is_refused() -> None:
    echo = {"characteristic": CH_C, "write_to": CH_C_ANSWER, "answer": "echo"}
    with pytest.raises(DefinitionError, match="answer_notify repeats a characteristic"):
        _with_answers([echo, echo])
    with pytest.raises(DefinitionError, match="answer_notify repeats a characteristic"):
        _with_answers([{**echo, "characteristic": JBD.gatt_profiles[0].notify}])


# -- end to end --------------------------------------------------------------------------------------------


async def test_both_keep_alives_are_answered_before_the_first_request() -> None:
    bms = _board()
    radio = FakeBluetooth([bms])
    async with BatteryClient(KEPT_ALIVE, _transport(radio), options=FAST) as client:
        snapshot = await client.read()
        # ch C first (echo), then ch B (toggle), as aiobmsble subscribes them.
        assert bms.answers[:2] == [(CH_C_ANSWER, b"\x9b\x00"), (CH_B_ANSWER, b"\xff")]
    assert snapshot.cell_count == 4
    assert bms.writes and not bms.dropped_writes  # no request went out before the board was kept alive


async def test_every_keep_alive_is_answered_and_the_toggle_alternates() -> None:
    bms = _board()
    radio = FakeBluetooth([bms])
    transport = _transport(radio)
    async with BatteryClient(KEPT_ALIVE, transport, options=FAST) as client:
        await client.read()
        for chunk in (b"\x13", b"\x14", b"\x15"):
            bms.keep_alive(CH_B, chunk)
            await asyncio.sleep(0.15)  # past the answer interval: none is coalesced
        bms.keep_alive(CH_C, b"\x9c\x01")
        await asyncio.sleep(0.15)
        snapshot = await client.read()
        toggles = [answer for uuid, answer in bms.answers if uuid == CH_B_ANSWER]
        echoes = [answer for uuid, answer in bms.answers if uuid == CH_C_ANSWER]
        assert toggles == [b"\xff", b"\xdf", b"\xff", b"\xdf"]
        assert echoes == [b"\x9b\x00", b"\x9c\x01"]
        assert [answerer.coalesced for answerer in transport.answerers] == [0, 0]
    assert snapshot.cell_count == 4


async def test_keep_alives_never_reach_the_frame_stream() -> None:
    bms = _board()
    radio = FakeBluetooth([bms])
    transport = _transport(radio)
    await transport.open()
    try:
        bms.keep_alive(CH_C, bytes.fromhex("DD A5 03 00 FF FD 77"))  # even bytes that look like a frame
        with pytest.raises(DeviceTimeout):
            await transport.receive(timeout=0.3)
        assert (CH_C_ANSWER, bytes.fromhex("DD A5 03 00 FF FD 77")) in bms.answers
    finally:
        await transport.close()


async def test_without_the_construct_the_board_never_answers() -> None:
    # The same board read through plain JBD: nobody answers the keep-alives, requests are ignored.
    bms = _board()
    radio = FakeBluetooth([bms])
    plain = _with_answers([], requires=False)
    async with BatteryClient(plain, _transport(radio, plain), options=FAST) as client:
        with pytest.raises(DeviceTimeout):
            await client.read()
    assert bms.answers == []
    assert bms.dropped_writes


async def test_a_board_silent_on_a_keep_alive_characteristic_is_refused_naming_it() -> None:
    bms = _board(keep_alives={CH_B: b"\x12"})  # nothing on ch C
    radio = FakeBluetooth([bms])
    transport = _transport(radio)
    with pytest.raises(ConnectError, match=r"no keep-alive notification on 0000000a-.* within 0\.5 s"):
        await transport.open()
    assert not transport.is_open
    assert bms.client is None
    assert transport.answerers == ()


async def test_a_board_without_the_keep_alive_characteristics_is_not_this_profile() -> None:
    bms = FakePeripheral(JBD, ADDRESS, pack=PackConfig(cells=4, ntc_count=2))
    radio = FakeBluetooth([bms])
    transport = _transport(radio)
    with pytest.raises(ConnectError, match="no GATT profile of protocol jbd"):
        await transport.open()


async def test_every_connection_starts_the_toggle_again() -> None:
    bms = _board()
    radio = FakeBluetooth([bms])
    transport = _transport(radio)
    for _ in range(2):
        async with BatteryClient(KEPT_ALIVE, transport, options=FAST) as client:
            await client.read()
            bms.keep_alive(CH_B, b"\x13")
            await asyncio.sleep(0.15)
    toggles = [answer for uuid, answer in bms.answers if uuid == CH_B_ANSWER]
    assert toggles == [b"\xff", b"\xdf", b"\xff", b"\xdf"]


async def test_nothing_is_answered_after_close() -> None:
    bms = _board()
    radio = FakeBluetooth([bms])
    transport = _transport(radio)
    await transport.open()
    answerers = transport.answerers
    await transport.close()
    assert transport.answerers == ()
    before = len(bms.answers)
    for answerer in answerers:
        answerer.on_notify(None, bytearray(b"\x01"))
    await asyncio.sleep(0.05)
    assert len(bms.answers) == before


# -- a hostile board ---------------------------------------------------------------------------------------


async def test_a_flood_of_keep_alives_gets_a_bounded_number_of_answers() -> None:
    bms = _board()
    radio = FakeBluetooth([bms])
    transport = _transport(radio)
    await transport.open()
    try:
        before = len(bms.answers)
        for index in range(20_000):
            bms.keep_alive(CH_C, index.to_bytes(4, "big"))
        await asyncio.sleep(0.35)
        written = bms.answers[before:]
        # One answer at once, one waiting, 0.1 s apart: at most about four in 0.35 s, the newest among them.
        assert 1 <= len(written) <= 5
        assert written[-1] == (CH_C_ANSWER, (19_999).to_bytes(4, "big"))
        echo = transport.answerers[0]
        assert echo.coalesced >= 20_000 - 5
    finally:
        await transport.close()


async def test_an_oversized_or_empty_echo_is_not_answered() -> None:
    bms = _board(mtu=600)
    radio = FakeBluetooth([bms])
    transport = _transport(radio)
    await transport.open()
    try:
        before = len(bms.answers)
        bms.keep_alive(CH_C, bytes(MAX_ECHO + 1))
        bms.keep_alive(CH_C, b"")
        await asyncio.sleep(0.15)
        assert bms.answers[before:] == []
        assert transport.answerers[0].refused == 2
    finally:
        await transport.close()


class _Recorder:
    def __init__(self, *, fail_every: int = 0) -> None:
        self.written: list[bytes] = []
        self.calls = 0
        self.fail_every = fail_every

    async def write(self, answer: bytes) -> None:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise DeviceError("write refused")
        self.written.append(answer)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    notifications=st.lists(st.binary(max_size=MAX_ECHO + 8), max_size=300),
    toggle=st.booleans(),
    fail_every=st.integers(min_value=0, max_value=3),
)
def test_fuzz_any_notifications_give_bounded_well_formed_answers(
    notifications: list[bytes], toggle: bool, fail_every: int
) -> None:
    answer = NotificationAnswer.model_validate(
        {"characteristic": CH_B, "write_to": CH_B_ANSWER, "answer": "toggle", "first": "FF", "flip": "20"}
        if toggle
        else {"characteristic": CH_C, "write_to": CH_C_ANSWER, "answer": "echo"}
    )
    recorder = _Recorder(fail_every=fail_every)

    async def scenario() -> NotificationAnswerer:
        answerer = NotificationAnswerer(answer, recorder.write, label="fuzz", min_interval=0.001)
        answerer.start()
        for chunk in notifications:  # all at once, as a flooding board would
            answerer.on_notify(None, bytearray(chunk))
        await asyncio.sleep(0.01)
        await answerer.stop()
        return answerer

    answerer = asyncio.run(scenario())
    assert answerer.received == len(notifications)
    assert recorder.calls <= 1  # a burst in one event-loop turn is one answer, whatever its length
    assert answerer.sent == len(recorder.written)
    if toggle:
        assert recorder.written in ([], [b"\xff"])
    else:
        assert all(0 < len(answer) <= MAX_ECHO for answer in recorder.written)
        if recorder.written:
            assert recorder.written == [next(c for c in reversed(notifications) if 0 < len(c) <= MAX_ECHO)]


async def test_first_within_null_does_not_wait_for_a_silent_characteristic() -> None:
    unwaited = [{**KEEP_ALIVE[0], "first_within": None}, KEEP_ALIVE[1]]
    protocol = _with_answers(unwaited)
    bms = _board(protocol, keep_alives={CH_B: b"\x12"})  # ch C stays silent
    radio = FakeBluetooth([bms])
    transport = _transport(radio, protocol)
    await transport.open()
    try:
        assert bms.answers == [(CH_B_ANSWER, b"\xff")]  # ch B was still waited for
        bms.keep_alive(CH_C, b"\x01\x02")
        await asyncio.sleep(0.05)
        assert bms.answers[-1] == (CH_C_ANSWER, b"\x01\x02")  # and ch C is answered once it speaks
    finally:
        await transport.close()
