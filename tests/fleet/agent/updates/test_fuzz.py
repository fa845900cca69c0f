"""Hostile input to the update engine's parsers: only our own outcomes escape (a report, a JournalError)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.fleet.agent.updates.engine import EngineSettings, UpdateEngine
from bmsgate.fleet.agent.updates.journal import JOURNAL_FILE, JournalError, read_journal
from bmsgate.fleet.agent.updates.plan import RunningSite
from bmsgate.fleet.updates import ReportedState, UpdatePhase
from bmsgate.runtime.supervisor import Supervisor
from tests.fleet.agent.updates.conftest import GATEWAY
from tests.fleet.agent.updates.signed import SignedDirectory

_ENVELOPE_PARTS = st.sampled_from(
    [b'{"signed":', b'{"v":1,"gateway":"gw-1","generation":', b"1", b"-1", b"1e999", b'"', b"}", b",", b"[", b"]"]
)
_PAYLOADS = st.one_of(st.binary(max_size=300), st.lists(_ENVELOPE_PARTS, max_size=30).map(b"".join))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_PAYLOADS)
def test_any_desired_payload_gets_a_failed_report_and_changes_nothing(payload: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        source = SignedDirectory(directory, Ed25519PrivateKey.generate().public_key())
        engine = UpdateEngine(
            EngineSettings(directory=directory / "packs", gateway_id=GATEWAY, hardware="bench"),
            Supervisor([], []),
            RunningSite(),
            source=source,
        )
        reports: list[ReportedState] = []
        asyncio.run(engine.take(payload, reports.append))
        assert [report.phase for report in reports] == [UpdatePhase.FAILED]
        assert not (directory / "packs" / JOURNAL_FILE).exists()


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)))
def test_a_damaged_journal_is_a_journal_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        (directory / JOURNAL_FILE).write_bytes(data)
        try:
            read_journal(directory)
        except JournalError as exc:
            problem = str(exc)
        else:
            return
        assert JOURNAL_FILE in problem, "the error names the file"
