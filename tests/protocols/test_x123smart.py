"""123\\SmartBMS gen3 (``x123smart``) and its engine-7 constructs: a keep-alive, a secret, signed hex lines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bmsgate.errors import AuthenticationError, DefinitionError, ProtocolError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.constructs import CONSTRUCTS, ENGINE_VERSION
from bmsgate.protocols.definition import ProtocolDefinition, definition_from_mapping
from bmsgate.protocols.keepalive import KeepAlive
from bmsgate.protocols.requestspec import KeepAliveSpec
from bmsgate.protocols.session import Action, DiscardPending, GiveUp, PollSession, SnapshotReady, WaitUntil, Write
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import SIMULATED_SECRET, PackConfig
from bmsgate.runtime.wakeup import Wakeup
from bmsgate.transports.simulator import SimulatorTransport

from .family_frames import X123SMART

PROTOCOL = get_protocol("x123smart")
PIN = b"1234"
KEEP_ALIVE = Write(b"$")
LOGIN = b"PW1234!\r"
STREAM = b"".join(frame for name in ("cells", "pack", "energy", "history") for frame in X123SMART.replies[name])


def _decode(*lines: bytes) -> dict[str, Any]:
    frames = PROTOCOL.new_assembler().feed(b"".join(lines))
    return PROTOCOL.decode(frames, battery_id="t", timestamp=0.0).to_dict()


def _writes(actions: list[Action]) -> list[bytes]:
    return [action.data for action in actions if isinstance(action, Write)]


def _requests(written: list[bytes]) -> list[bytes]:
    """What was written besides the keep-alive."""
    return [data for data in written if data != b"$"]


def _wait(actions: list[Action]) -> float:
    last = actions[-1]
    assert isinstance(last, WaitUntil)
    return last.deadline


# -- the lines ---------------------------------------------------------------------------------------------


def test_the_engine_level_and_constructs() -> None:
    assert ENGINE_VERSION >= 7
    for name in ("keep_alive", "secret", "lines.signed", "lines.no_value", "lines.no_columns", "lines.refusal"):
        assert name in CONSTRUCTS
        assert name in (PROTOCOL.definition.requires or [])


@pytest.mark.parametrize(("column", "current"), [(b"+0014", 1.0), (b"-0014", -1.0), (b"+0000", 0.0), (b"X", None)])
def test_the_pack_current_is_signed_hex_and_x_is_no_value(column: bytes, current: float | None) -> None:
    snapshot = _decode(b"U_0AF0_+0000_" + column + b"_+0000\r")
    assert snapshot["current"] == current
    assert snapshot["voltage"] == 14.0


def test_a_voltage_of_only_x_is_no_value_and_half_a_hex_number_refuses_the_line() -> None:
    assert _decode(b"U_XXXX_+0014_+0014_+000A\r")["voltage"] is None
    assembler = PROTOCOL.new_assembler()
    assert assembler.feed(b"U_123X_+0014_+0014_+000A\rE_0_0_0_64\r")[0].key == 0x45
    assert assembler.stats.rejected == 1 and "not a hex number" in (assembler.stats.last_error or "")


def test_a_signed_column_refuses_a_sign_alone_and_a_double_sign() -> None:
    assembler = PROTOCOL.new_assembler()
    assert assembler.feed(b"U_0AF0_+_+0014_+000A\rU_0AF0_+0014_--14_+000A\r") == []
    assert assembler.stats.rejected == 2


def test_ok_and_the_refusals_are_lines_without_columns() -> None:
    frames = PROTOCOL.new_assembler().feed(b"OK\rNA\rWRONG\rKO\rE!\rPW1234!\r")
    assert [(frame.key, frame.status_ok) for frame in frames] == [(0x4F, True), *[(None, False)] * 3]


def test_status_bytes_raise_their_documented_alarms() -> None:
    # Status 1: bit 2 communication error, bit 3 "exceeded"; status 2: bits 2 and 3 the low-temperature limits.
    cells = [b"C_01_02_2BC_12C_0C_0C\r", b"C_02_02_2BC_12C_00_00\r"]
    snapshot = _decode(*cells)
    assert set(snapshot["alarms"]) == {
        "internal_communication_fault",
        "system_fault",
        "discharge_undertemperature",
        "charge_undertemperature",
    }
    assert snapshot["charge_enabled"] is False and snapshot["discharge_enabled"] is False


def test_the_simulators_lines_read_back() -> None:
    frames = PROTOCOL.encode_replies(0x55, {"voltage": 13.2, "current": -2.5})
    line = PROTOCOL.wire(frames[0])
    assert line.startswith(b"U_A50_") and b"-0032" in line and line.endswith(b"\r")


# -- definitions: what the new keys allow -----------------------------------------------------------------


def _with(change: dict[str, Any]) -> ProtocolDefinition:
    data = PROTOCOL.definition.ir()
    data.pop("requires")
    data.update(change)
    return definition_from_mapping(data, source="t.yaml")


@pytest.mark.parametrize(
    ("kinds", "reason"),
    [
        ([{"key": 1, "columns": []}], "first"),
        ([{"key": 1, "first": "NA", "refusal": True, "columns": [{"index": 1}]}], "refusal"),
        ([{"key": 1, "first": "U", "columns": [{"index": 1, "signed": True}]}], "hex columns"),
    ],
)
def test_line_kinds_that_cannot_work_are_refused(kinds: list[dict[str, Any]], reason: str) -> None:
    framing = PROTOCOL.definition.ir()["framing"]
    framing["lines"]["kinds"] = kinds
    with pytest.raises(DefinitionError, match=reason):
        _with(
            {"framing": framing, "replies": {}, "requests": [{"name": "a", "frame": "", "reply": 1, "streaming": True}]}
        )


@pytest.mark.parametrize("character", ["1", "F", "-", "_"])
def test_no_value_cannot_be_a_digit_a_sign_or_the_separator(character: str) -> None:
    framing = PROTOCOL.definition.ir()["framing"]
    framing["lines"]["no_value"] = character
    with pytest.raises(DefinitionError, match="no_value"):
        _with({"framing": framing})


def test_a_secret_request_is_a_connect_time_one() -> None:
    requests = PROTOCOL.definition.ir()["requests"]
    requests[0]["when"] = "always"
    with pytest.raises(DefinitionError, match="secret"):
        _with({"requests": requests})


# -- the keep-alive -----------------------------------------------------------------------------------------


def test_the_keep_alive_goes_in_front_when_due_and_ends_every_wait_by_the_next() -> None:
    keep_alive = KeepAlive(KeepAliveSpec(frame=b"$", period=0.25))
    assert keep_alive.around(1.0, [WaitUntil(5.0)]) == [KEEP_ALIVE, WaitUntil(1.25)]
    assert keep_alive.around(1.2, [WaitUntil(1.125)]) == [WaitUntil(1.125)]
    assert keep_alive.around(1.25, [WaitUntil(5.0)]) == [KEEP_ALIVE, WaitUntil(1.5)]
    assert keep_alive.idle(1.375) == [WaitUntil(1.5)]
    # A late tick writes at once and counts the period from then.
    assert keep_alive.idle(1.625) == [KEEP_ALIVE, WaitUntil(1.875)]
    keep_alive.reset()
    assert keep_alive.around(1.8, []) == [KEEP_ALIVE]
    assert KeepAlive(None).idle(1.0) == [] and KeepAlive(None).around(1.0, [WaitUntil(2.0)]) == [WaitUntil(2.0)]


def test_the_warm_up_holds_every_request_back_for_its_seconds_after_the_first_keep_alive() -> None:
    # aiobmsble lets the module see '$' for 1.5 s before it writes the PIN.
    keep_alive = KeepAlive(KeepAliveSpec(frame=b"$", period=0.33, warm_up=1.5))
    assert keep_alive.warming_until(10.0) == 11.5  # asked before the first write: that write goes out now
    assert keep_alive.around(10.0, []) == [KEEP_ALIVE]
    assert keep_alive.warming_until(11.4) == 11.5 and keep_alive.warming_until(11.5) is None
    keep_alive.reset()  # a new connection warms up again
    assert keep_alive.around(20.0, []) == [KEEP_ALIVE] and keep_alive.warming_until(20.1) == 21.5
    assert KeepAlive(KeepAliveSpec(frame=b"$", period=0.33)).warming_until(0.0) is None
    session = PollSession(PROTOCOL, secret=PIN)
    session.connection_reset()
    actions = session.start_poll(0.0)
    assert _writes(actions) == [b"$"] and _wait(actions) == 0.33
    written: list[bytes] = []
    now = 0.0
    while LOGIN not in written:
        now = _wait(actions)
        actions = session.tick(now)
        written += _writes(actions)
    assert now == 1.5 and written == [b"$"] * 4 + [LOGIN]  # at 0.33, 0.66, 0.99, 1.32, then the PIN at 1.5


def test_an_idle_session_ticks_only_the_keep_alive() -> None:
    session = PollSession(PROTOCOL, secret=PIN)
    assert session.tick(0.0) == [KEEP_ALIVE, WaitUntil(0.33)]
    assert session.tick(0.2) == [WaitUntil(0.33)]
    assert PollSession(get_protocol("jbd")).tick(0.0) == []


# -- the login ------------------------------------------------------------------------------------------


def _run(
    session: PollSession, answers: dict[bytes, bytes], stream: bytes = b"", *, start: float = 0.0
) -> tuple[list[bytes], Action]:
    """Drive one poll in virtual time: each write answered 10 ms later, the stream after E!'s answer.

    From `start` on (a later poll on the same connection: the stream is already coming, nothing asks for it).
    """
    now = start
    written: list[bytes] = []
    pending: list[bytes] = [stream] if start and stream else []
    actions = session.start_poll(now)
    for _ in range(500):
        for action in actions:
            if isinstance(action, Write):
                written.append(action.data)
                pending.extend(answer for answer in (answers.get(action.data, b""),) if answer)
                if action.data == b"E!\r" and stream:
                    pending.append(stream)
            elif isinstance(action, DiscardPending):
                pending.clear()
            elif isinstance(action, SnapshotReady | GiveUp):
                return written, action
        deadline = _wait(actions)
        if pending:
            now += 0.01
            actions = session.feed(pending.pop(0), now)
        else:
            now = max(now, deadline)
            actions = session.tick(now)
    raise AssertionError("the poll did not end")


def test_the_pin_and_e_are_sent_once_then_the_lines_are_read() -> None:
    session = PollSession(PROTOCOL, secret=PIN)
    session.connection_reset()
    written, outcome = _run(session, {LOGIN: b"OK\r", b"E!\r": b"OK\r"}, STREAM)
    assert isinstance(outcome, SnapshotReady), outcome
    assert written[0] == b"$" and _requests(written)[:2] == [LOGIN, b"E!\r"]
    snapshot = outcome.snapshot.to_dict()
    assert (snapshot["voltage"], snapshot["current"], snapshot["soc"], snapshot["soh"]) == (14.0, 1.0, 100, 95)
    # The PIN is nowhere in what the poll hands on.
    assert b"1234" not in b"".join(frame.raw for frame in outcome.frames)
    assert "1234" not in repr(outcome)
    # The next poll on this connection asks neither again.
    written, outcome = _run(session, {}, STREAM, start=10.0)
    assert isinstance(outcome, SnapshotReady), outcome
    assert written == [b"$"]  # the keep-alive was due; neither the PIN nor E! again


@pytest.mark.parametrize("refusal", [b"NA\r", b"WRONG\r"])
def test_a_refused_pin_is_an_authentication_error_that_never_shows_the_pin(refusal: bytes) -> None:
    session = PollSession(PROTOCOL, secret=PIN, battery_id="boat")
    written, outcome = _run(session, {LOGIN: refusal})
    assert isinstance(outcome, GiveUp) and isinstance(outcome.error, AuthenticationError)
    assert not outcome.drop_link and "1234" not in str(outcome.error) and "boat" in str(outcome.error)
    assert b"E!\r" not in written


def test_without_a_secret_nothing_is_sent_and_the_poll_says_so() -> None:
    written, outcome = _run(PollSession(PROTOCOL), {})
    assert isinstance(outcome, GiveUp) and isinstance(outcome.error, AuthenticationError)
    assert "secret" in str(outcome.error) and _requests(written) == []
    written, outcome = _run(PollSession(PROTOCOL, secret=b"9" * 17), {})
    assert isinstance(outcome, GiveUp) and "longer" in str(outcome.error) and _requests(written) == []


def test_a_refused_e_is_a_protocol_error() -> None:
    written, outcome = _run(PollSession(PROTOCOL, secret=PIN), {LOGIN: b"OK\r", b"E!\r": b"NA\r"})
    assert isinstance(outcome, GiveUp) and type(outcome.error) is ProtocolError
    assert _requests(written) == [LOGIN, b"E!\r"]


# -- the runtime: the keep-alive between polls ---------------------------------------------------------------


async def test_the_client_keeps_writing_the_keep_alive_between_polls() -> None:
    transport = SimulatorTransport(PROTOCOL, PackConfig(cells=4, ntc_count=1))
    options = ClientOptions(request_timeout=0.5, retries=0, secret=SIMULATED_SECRET)
    async with BatteryClient(PROTOCOL, transport, battery_id="boat", options=options) as client:
        await client.read()
        before = transport.writes.count(b"$")
        wake = Wakeup()
        asyncio.get_running_loop().call_later(0.75, wake.set)
        async with asyncio.timeout(2.0):
            await client.between_polls(wake)
        assert transport.writes.count(b"$") - before >= 2
        snapshot = await client.read()
    assert snapshot.cell_count == 4
    assert SIMULATED_SECRET in b"".join(transport.writes)


async def test_without_a_keep_alive_between_polls_only_waits() -> None:
    protocol = get_protocol("jbd")
    transport = SimulatorTransport(protocol, PackConfig(cells=4, ntc_count=1))
    async with BatteryClient(protocol, transport, options=ClientOptions(request_timeout=0.5)) as client:
        await client.read()
        count = len(transport.writes)
        wake = Wakeup()
        asyncio.get_running_loop().call_later(0.05, wake.set)
        await client.between_polls(wake)
        assert len(transport.writes) == count


@pytest.mark.parametrize("protocol_name", ["x123smart", "jbd"])
async def test_between_polls_ends_at_the_next_polls_time_by_itself(protocol_name: str) -> None:
    # `until` (the next poll's time) ends the wait without a cancellation, keep-alive or not, and a keep-alive
    # due before it still goes out.
    protocol = PROTOCOL if protocol_name == "x123smart" else get_protocol(protocol_name)
    transport = SimulatorTransport(protocol, PackConfig(cells=4, ntc_count=1))
    options = ClientOptions(request_timeout=0.5, retries=0, secret=SIMULATED_SECRET)
    async with BatteryClient(protocol, transport, battery_id="boat", options=options) as client:
        await client.read()
        before = transport.writes.count(b"$")
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        started = loop.time()
        await client.between_polls(Wakeup(), until=started + 0.75)
        assert 0.74 <= loop.time() - started < 1.0
        assert task.cancelling() == 0
        if protocol_name == "x123smart":
            assert transport.writes.count(b"$") - before >= 2
        assert (await client.read()).cell_count == 4
