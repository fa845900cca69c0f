"""The battery's secret: its form, its binding to the configured definition's use, and the echo screen."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bmsgate.errors import AuthenticationError, DeviceTimeout
from bmsgate.protocols import compile_definition, get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.secret import NO_SECRET_USE, SecretScreen, secret_form_problem, secret_use
from bmsgate.protocols.session import GiveUp, PollSession, SnapshotReady
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.transports.base import Transport

from .test_x123smart import LOGIN, PIN, STREAM, _run

X123 = get_protocol("x123smart")
LOGIN_REQUEST = X123.definition.requests[0]

# A definition that decodes its own login back into a snapshot extra, given a link that echoes what it writes.
ECHOING: dict[str, Any] = {
    "format": 1,
    "name": "x123smart",
    "title": "an update",
    "requires": ["secret", "connect", "fixed_length"],
    "endian": "big",
    "gatt": {
        "profiles": [
            {
                "service": "6e400001-b5a3-f393-e0a9-e50e24dcca9e",
                "notify": "6e400003-b5a3-f393-e0a9-e50e24dcca9e",
                "write": "6e400002-b5a3-f393-e0a9-e50e24dcca9e",
            }
        ]
    },
    "framing": {"start": "50 57", "fixed_length": 8, "key": {"offset": 1}, "payload_offset": 2},
    "requests": [{"name": "login", "frame": "50 57 21 0D", "secret": {"at": 2}, "reply": 0x57, "when": "connect"}],
    "replies": {0x57: {"name": "echo", "fields": [{"target": "extras.pin_digits", "at": 0, "type": "u32"}]}},
}


def _compiled(mapping: dict[str, Any]) -> Any:
    return compile_definition(definition_from_mapping(mapping, source="test"))


class _Echo(Transport):
    """A UART bridge that echoes what is written (some RS485 adapters do)."""

    kind = "echo"

    @property
    def description(self) -> str:
        return "echo"

    async def _do_open(self) -> None:
        return None

    async def _do_close(self) -> None:
        return None

    def __init__(self, *, battery_id: str | None = None) -> None:
        super().__init__(battery_id=battery_id)
        self.writes: list[bytes] = []

    async def _do_write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._deliver(bytes(data))


# -- the form -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "said"),
    [
        (None, "none is configured"),
        (b"", "empty"),
        (b"1" * 17, "longer than the 16"),
        (b"  ", "blank"),
        (b" 1234", "blank"),
        (b"12\r34", "printable ASCII"),
        (b"12\t34", "printable ASCII"),
        ("1234é".encode(), "printable ASCII"),
        (b"12!34", "frame it"),  # '!' ends the PIN in PW<pin>!
        (b"12_34", "frame it"),  # the line separator
    ],
)
def test_a_secret_that_cannot_be_written_is_named_without_being_shown(secret: bytes | None, said: str) -> None:
    problem = secret_form_problem(LOGIN_REQUEST, X123.definition.framing, secret)
    assert problem is not None and said in problem
    if secret:
        assert secret.decode(errors="replace") not in problem


@pytest.mark.parametrize("secret", [b"1", b"0000", b"1" * 16, b"a1b2 c3"])
def test_a_usable_secret_passes(secret: bytes) -> None:
    assert secret_form_problem(LOGIN_REQUEST, X123.definition.framing, secret) is None


def test_the_session_refuses_a_malformed_secret_before_writing_it() -> None:
    written, outcome = _run(PollSession(X123, secret=b"12\r34"), {})
    assert isinstance(outcome, GiveUp) and isinstance(outcome.error, AuthenticationError)
    assert set(written) == {b"$"} and "12" not in str(outcome.error)


# -- the use it is bound to ---------------------------------------------------------------------------------


def test_the_use_covers_the_login_and_the_authenticate_step_not_the_rest() -> None:
    assert secret_use(get_protocol("jbd")) == NO_SECRET_USE == secret_use(get_protocol("daly"))
    assert secret_use(X123) != NO_SECRET_USE and secret_use(get_protocol("stark-varg")) != NO_SECRET_USE
    assert secret_use(_compiled(ECHOING)) != secret_use(X123)
    # The same login with other replies is the same use (the screen guards the replies).
    other_replies = copy.deepcopy(ECHOING)
    other_replies["replies"][0x57]["fields"][0]["target"] = "extras.other"
    assert secret_use(_compiled(other_replies)) == secret_use(_compiled(ECHOING))
    moved = copy.deepcopy(ECHOING)
    moved["requests"][0]["secret"]["at"] = 1
    assert secret_use(_compiled(moved)) != secret_use(_compiled(ECHOING))
    elsewhere = copy.deepcopy(ECHOING)
    elsewhere["gatt"]["profiles"][0]["write"] = "6e400009-b5a3-f393-e0a9-e50e24dcca9e"
    assert secret_use(_compiled(elsewhere)) != secret_use(_compiled(ECHOING))


async def test_a_definition_that_uses_the_secret_otherwise_does_not_get_it() -> None:
    # Built with x123smart (the configured definition), then a definition swapped in under the same name.
    configured = BatteryClient(X123, _Echo(battery_id="boat"), battery_id="boat", options=ClientOptions(secret=PIN))
    assert configured.options.secret_use == secret_use(X123)
    transport = _Echo(battery_id="boat")
    swapped = BatteryClient(_compiled(ECHOING), transport, battery_id="boat", options=configured.options)
    assert swapped.session._secret is None
    with pytest.raises(AuthenticationError, match="restart the gateway") as info:
        await swapped.read()
    assert "1234" not in str(info.value)
    assert transport.writes == [] and not transport.is_open  # nothing was sent, not even connected


async def test_a_definition_that_uses_no_secret_runs_without_it() -> None:
    configured = BatteryClient(X123, _Echo(), options=ClientOptions(secret=PIN))
    swapped = BatteryClient(get_protocol("jbd"), _Echo(), options=configured.options)
    assert swapped.session._secret is None
    await swapped.connect()  # not refused: it has no use for the secret


# -- the echo screen -----------------------------------------------------------------------------------------


async def test_an_echoed_login_is_never_decoded() -> None:
    # The configured definition itself (or one with the same login) cannot read the secret back from an echo.
    client = BatteryClient(
        _compiled(ECHOING), _Echo(battery_id="boat"), options=ClientOptions(secret=PIN, request_timeout=0.2, retries=0)
    )
    with pytest.raises(DeviceTimeout):
        await client.read()
    assert client.session.secret_screen.dropped >= 1
    assert client.last_snapshot is None


def test_the_screen_drops_a_login_split_over_two_chunks_and_nothing_else() -> None:
    screen = SecretScreen()
    assert screen.passes(b"anything")  # nothing written yet: nothing to screen for
    screen.watch(X123.definition.requests[1], b"E!\r", b"E!\r")  # no secret in it: nothing to screen for
    assert screen.passes(b"E!\r")
    screen.watch(LOGIN_REQUEST, LOGIN, LOGIN)
    assert screen.passes(b"E_000000_001234_0000_64\r")  # the PIN alone in ordinary data is no echo
    assert screen.passes(b"xxPW12")
    assert not screen.passes(b"34!\rC_01")
    assert screen.passes(b"OK\r") and screen.dropped == 1
    screen.watch(LOGIN_REQUEST, b"PW")  # shorter than 4 bytes: not kept
    assert screen.passes(b"PW")


def test_a_session_drops_a_chunk_with_an_echoed_login_whole_and_reads_a_bms_that_does_not_echo() -> None:
    echoing = PollSession(X123, secret=PIN)
    written, outcome = _run(echoing, {LOGIN: LOGIN + b"OK\r", b"E!\r": b"OK\r"}, STREAM)
    assert isinstance(outcome, GiveUp) and isinstance(outcome.error, DeviceTimeout)
    assert echoing.secret_screen.dropped == written.count(LOGIN) >= 1  # every answer to a login went with its echo
    session = PollSession(X123, secret=PIN)
    written, outcome = _run(session, {LOGIN: b"OK\r", b"E!\r": b"OK\r"}, STREAM)
    assert isinstance(outcome, SnapshotReady) and session.secret_screen.dropped == 0
