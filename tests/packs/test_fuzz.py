"""Hostile bytes where the gateway parses: served metadata, HTTP headers, desired-state signatures.

Only PackError escapes (with a reason), and nothing reaches artifacts_dir.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.fleet.server.api.artifacts import parse_range
from bmsgate.fleet.updates import DesiredEnvelope, DesiredState, FailureReason, Signature
from bmsgate.packs.errors import PackError
from bmsgate.packs.fetch import parse_content_range

from .conftest import Fleet

_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _mutated(document: dict[str, Any], data: st.DataObject) -> bytes:
    """The document with one field somewhere in ``signed`` replaced by arbitrary JSON."""
    node: Any = document["signed"]
    while isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node)))
        if not isinstance(node[key], dict) or data.draw(st.booleans()):
            node[key] = data.draw(_json_values)
            break
        node = node[key]
    return json.dumps(document).encode()


@_FUZZ
@given(data=st.data())
def test_hostile_timestamp_metadata_only_raises_pack_error(fleet: Fleet, data: st.DataObject) -> None:
    if fleet.targets_json is None:
        fleet.publish({"packs/demo.pack": b"demo"})
    genuine = json.loads((fleet.server.metadata_dir / "timestamp.json").read_bytes())
    body = data.draw(st.one_of(st.binary(max_size=300), st.builds(lambda: _mutated(genuine, data))))
    fleet.tap.override = {"/timestamp.json": body}
    gateway = fleet.gateway("fuzzed")
    reason: FailureReason | None = None
    try:
        gateway.refresh()
    except PackError as exc:
        reason = exc.reason
    finally:
        fleet.tap.override = {}
    if reason is None:  # only a re-serialisation of the valid timestamp may pass
        assert json.loads(body)["signed"] == genuine["signed"]
    else:
        assert isinstance(reason, FailureReason)
    assert not any(path.is_file() for path in (fleet.tmp / "fuzzed" / "artifacts").rglob("*"))


@_FUZZ
@given(body=st.binary(max_size=400))
def test_hostile_root_metadata_only_raises_pack_error(fleet: Fleet, body: bytes) -> None:
    fleet.tap.override = {"/2.root.json": body}
    reasons = []
    try:
        fleet.gateway("fuzzed-root").refresh()
    except PackError as exc:
        reasons.append(exc.reason)
    finally:
        fleet.tap.override = {}
    assert all(isinstance(reason, FailureReason) for reason in reasons)


@given(st.text(max_size=60))
def test_content_range_parsing_only_raises_pack_error(value: str) -> None:
    try:
        first, last, total = parse_content_range(value)
    except PackError as exc:
        reason = exc.reason
        assert reason is FailureReason.DOWNLOAD, reason
        return
    assert total >= 0
    if first is not None and last is not None:
        assert 0 <= first <= last < total


@given(st.text(max_size=60), st.integers(0, 10**12))
def test_range_parsing_stays_inside_the_file(header: str, size: int) -> None:
    wanted = parse_range(header, size)
    if isinstance(wanted, tuple):
        first, last = wanted
        assert 0 <= first <= last < size


@_FUZZ
@given(
    signatures=st.lists(
        st.builds(
            Signature,
            keyid=st.text("0123456789abcdef", min_size=64, max_size=64),
            sig=st.text("0123456789abcdef", min_size=2, max_size=200),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_forged_desired_state_signatures_only_raise_pack_error(fleet: Fleet, signatures: list[Signature]) -> None:
    gateway = fleet.gateway("desired")
    now = time.time()
    state = DesiredState(v=1, gateway="gw", generation=1, issued_at=now, expires_at=now + 60)
    timestamp_keyid = fleet.signers["timestamp"].keyid
    mixed = [*signatures, Signature(keyid=timestamp_keyid, sig=signatures[0].sig)]
    for chosen in (signatures, mixed):
        envelope = DesiredEnvelope(signed=state, signatures=tuple(chosen))
        with pytest.raises(PackError) as excinfo:
            gateway.verify_desired(envelope)
        assert excinfo.value.reason is FailureReason.SIGNATURE
