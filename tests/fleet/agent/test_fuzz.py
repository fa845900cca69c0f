"""Hostile input from the network: gpsd reports and server commands. Only our own exceptions escape."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsgate.fleet.agent.commands import CommandRejected, CommandScreen
from bmsgate.fleet.agent.location import location_from_tpv
from bmsgate.fleet.protocol import LocationFix

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_TPV_KEYS = st.sampled_from(["class", "mode", "lat", "lon", "alt", "altMSL", "eph", "time", "device"])


@given(st.dictionaries(_TPV_KEYS, _JSON | st.floats(allow_nan=True, allow_infinity=True), max_size=9))
def test_fuzz_tpv_reports_never_raise_and_never_invent_a_position(report: dict[str, Any]) -> None:
    location = location_from_tpv(report)
    if location.fix is LocationFix.NONE:
        assert location.lat is None
    else:
        assert report.get("mode") in (2, 3)
        assert location.lat == report["lat"]


_COMMAND_KEYS = st.sampled_from(["v", "id", "kind", "issued_at", "expires_at", "extra"])


@given(st.one_of(st.binary(max_size=200), st.dictionaries(_COMMAND_KEYS, _JSON, max_size=6).map(json.dumps)))
def test_fuzz_commands_are_rejected_with_a_reason_or_accepted(payload: bytes | str) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    reason = None
    try:
        command = CommandScreen().check("fleet/v1/gw-1/command", data, now=time.time())
    except CommandRejected as exc:
        reason = exc.reason
    else:
        assert command.expires_at >= time.time() - 1
    assert reason in {None, "json", "schema", "version", "unknown_kind", "too_large", "expired", "duplicate"}


def test_an_oversized_command_is_rejected_before_parsing() -> None:
    with pytest.raises(CommandRejected) as caught:
        CommandScreen().check("fleet/v1/gw-1/command", b"{" + b" " * 10_000 + b"}", now=0)
    assert (caught.value.reason, caught.value.command_id) == ("too_large", None)
