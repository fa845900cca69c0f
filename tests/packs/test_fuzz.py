"""Hostile bytes where the gateway parses: served metadata, HTTP headers, desired-state signatures.

Only PackError escapes (with a reason), and nothing reaches artifacts_dir.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.fleet.server.api.artifacts import parse_range
from bmsgate.fleet.updates import DesiredEnvelope, DesiredState, FailureReason, Signature
from bmsgate.packs.errors import PackError
from bmsgate.packs.fetch import HttpsDownloader, parse_content_range

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


class _RawServer:
    """A TCP server that answers every request with the bytes it is given, then closes."""

    def __init__(self) -> None:
        self.response = b""
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                with contextlib.suppress(OSError):
                    connection.recv(65536)
                    connection.sendall(self.response)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()


_status_lines = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 206 Partial Content",
        b"HTTP/1.1 416 X",
        b"HTTP/1.1 404 N",
        b"HTTP/1.0 200",
        b"",
        b"garbage",
    ]
)
_headers = st.lists(
    st.sampled_from(
        [
            b"Content-Length: 5",
            b"Content-Length: 999999999999",
            b"Content-Length: -3",
            b"Content-Length: x",
            b"Content-Range: bytes 3-9/10",
            b"Content-Range: bytes */10",
            b"Content-Range: nonsense",
            b"Transfer-Encoding: chunked",
            b"X: \xff\xfe",
        ]
    )
    | st.binary(max_size=40),
    max_size=4,
)


@pytest.fixture(scope="module")
def raw_server() -> Iterator[_RawServer]:
    server = _RawServer()
    yield server
    server.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=_status_lines, headers=_headers, body=st.binary(max_size=200), have=st.integers(0, 12))
def test_hostile_http_responses_only_raise_pack_error(
    raw_server: _RawServer, status: bytes, headers: list[bytes], body: bytes, have: int
) -> None:
    raw_server.response = status + b"\r\n" + b"".join(header + b"\r\n" for header in headers) + b"\r\n" + body
    downloader = HttpsDownloader(ca_pem=None, timeout_s=2)
    url = f"http://127.0.0.1:{raw_server.port}/tuf/targets/packs/x"
    with tempfile.TemporaryDirectory() as directory:
        partial = Path(directory) / "x.part"
        if have:
            partial.write_bytes(b"p" * have)
        reasons = []
        for attempt in (lambda: downloader.fetch(url, 10), lambda: downloader.fetch_to(url, partial, 10)):
            try:
                result = attempt()
            except PackError as exc:
                reasons.append(exc.reason)
                continue
            data = result if isinstance(result, bytes) else result.read_bytes()
            assert len(data) <= 10
        assert all(isinstance(reason, FailureReason) for reason in reasons)
