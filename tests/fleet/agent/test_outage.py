"""Store-and-forward for real: a broker outage and a kill -9 of the gateway leave no gap in what the server sees."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bmsgate.fleet.agent.agent import FleetAgent
from bmsgate.fleet.protocol import Channel, EventKind, EventMessage, TelemetryMessage
from bmsgate.runtime.hub import SnapshotHub
from tests.fleet.agent.conftest import FleetBroker, Recorder, agent_options, running, snapshot

# The full minute of the issue runs end to end, through the server's store, in
# tests/fleet/test_outage_end_to_end.py; here, at the agent's edge, 20 s shows the same (BMSGATE_AGENT_OUTAGE_S).
OUTAGE_S = float(os.environ.get("BMSGATE_AGENT_OUTAGE_S", "20"))
_PROCESS = Path(__file__).with_name("agent_process.py")


def _sequenced(recorder: Recorder, gateway: str) -> list[TelemetryMessage | EventMessage]:
    return [*recorder.of(Channel.TELEMETRY, gateway), *recorder.of(Channel.EVENT, gateway)]


def _gap_free(recorder: Recorder, gateway: str, up_to: int) -> bool:
    return {message.seq for message in _sequenced(recorder, gateway)} >= set(range(up_to + 1))


@pytest.mark.slow
async def test_a_broker_outage_leaves_no_gap(fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path) -> None:
    hub = SnapshotHub()
    # The server's recorder reconnects every 0.1 s, the agent after 1-2 s: the recorder is back first, as
    # a real server's ingest (with its own persistent session) would be.
    agent = FleetAgent(agent_options(fleet_broker, tmp_path, interval=1.0, backfill_rate=5.0, reconnect_max=2.0))

    async def feed() -> None:
        while True:
            hub.publish(snapshot("house"))
            await asyncio.sleep(0.5)

    feeder = asyncio.create_task(feed())
    try:
        async with running(agent, hub):
            await recorder.wait_for(lambda: len(recorder.of(Channel.TELEMETRY, "gw-1")) >= 3)
            fleet_broker.stop()
            await asyncio.sleep(OUTAGE_S)
            assert agent.outbox is not None
            buffered = agent.outbox.queued
            assert buffered >= OUTAGE_S * 0.8, "the outage's telemetry went to the buffer"
            last_during_outage = agent.outbox.next_seq - 1
            fleet_broker.start()
            await recorder.wait_for(lambda: _gap_free(recorder, "gw-1", last_during_outage), timeout=30)
            await recorder.wait_for(lambda: agent.outbox is not None and agent.outbox.queued == 0, timeout=10)
    finally:
        feeder.cancel()
    messages = _sequenced(recorder, "gw-1")
    backfilled = [message for message in messages if message.backfill]
    assert len(backfilled) >= buffered * 0.9
    # Messages made while offline (also in the second or two before the reconnect) are backfill; once
    # connected, nothing new is.
    live_after_outage = [m.seq for m in messages if not m.backfill and m.seq > last_during_outage]
    assert max(m.seq for m in backfilled) < min(live_after_outage), "live data is never marked backfill"
    # Live data kept flowing while the backlog drained: a live message arrived before the last backfilled one.
    telemetry = recorder.of(Channel.TELEMETRY, "gw-1")
    last_backfill_at = max(index for index, message in enumerate(telemetry) if message.backfill)
    assert any(not message.backfill and message.seq > last_during_outage for message in telemetry[:last_backfill_at]), (
        "backfill starved the live data"
    )
    arrival = [message.message for message in recorder.messages if message.gateway == "gw-1"]
    backlog = [
        message.seq for message in arrival if isinstance(message, TelemetryMessage | EventMessage) and message.backfill
    ]
    assert backlog == sorted(backlog), "the backlog is sent oldest first"
    assert agent.stats.backfilled == len(backfilled)


def _start(credentials: Path, buffer: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, str(_PROCESS), str(credentials), str(buffer), "0.05", "15"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.readline().strip() == b"started"
    return process


@pytest.mark.slow
async def test_a_gateway_killed_during_backfill_resumes_it(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    credentials = fleet_broker.write_credentials("gw-2", tmp_path / "gw-2.json")
    buffer = tmp_path / "gw-2.sqlite"
    fleet_broker.stop()
    first = _start(credentials, buffer)
    try:
        await asyncio.sleep(4)  # ~80 messages buffered while the broker is away
        fleet_broker.start()
        await recorder.wait_for(lambda: sum(m.backfill for m in _sequenced(recorder, "gw-2")) >= 10, timeout=20)
        first.send_signal(signal.SIGKILL)
        first.wait(5)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    before_kill = max(message.seq for message in _sequenced(recorder, "gw-2"))
    # The broker says what the killed gateway could not: the last will.
    await recorder.wait_for(lambda: recorder.of(Channel.AVAILABILITY, "gw-2")[-1].online is False)
    second = _start(credentials, buffer)
    try:
        await recorder.wait_for(
            lambda: any(m.seq > before_kill + 20 and not m.backfill for m in _sequenced(recorder, "gw-2")), timeout=20
        )
        newest = max(message.seq for message in _sequenced(recorder, "gw-2"))
        try:
            await recorder.wait_for(lambda: _gap_free(recorder, "gw-2", newest), timeout=60)
        except TimeoutError:
            seen = {message.seq for message in _sequenced(recorder, "gw-2")}
            missing = sorted(set(range(newest + 1)) - seen)
            with sqlite3.connect(buffer) as db:
                stored = [row[0] for row in db.execute("SELECT seq FROM outbox ORDER BY seq")]
            pytest.fail(f"missing {missing[:20]} ({len(missing)}); before kill {before_kill}; buffered {stored[:20]}")
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(5)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait()
    seqs = [message.seq for message in _sequenced(recorder, "gw-2")]
    # Each sequence number arrives once, or again only when the kill came between PUBACK and delete.
    repeats = len(seqs) - len(set(seqs))
    assert repeats <= 1, f"{repeats} messages were sent twice"


@pytest.mark.slow
async def test_a_full_buffer_drops_the_oldest_and_says_so(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    hub = SnapshotHub()
    for index in range(8):
        hub.publish(snapshot(f"pack{index}", cell_voltages=tuple(3.3 + 0.001 * cell for cell in range(16))))
    agent = FleetAgent(
        agent_options(fleet_broker, tmp_path, interval=0.02, buffer_max_bytes=64 * 1024, reconnect_max=2.0)
    )
    fleet_broker.stop()
    async with running(agent, hub):
        await recorder.wait_for(lambda: agent.outbox is not None and agent.outbox.dropped > 50, timeout=20)
        assert agent.outbox is not None
        assert agent.outbox.stored_bytes <= 64 * 1024
        fleet_broker.start()
        await recorder.wait_for(
            lambda: [e for e in recorder.of(Channel.EVENT, "gw-1") if e.kind is EventKind.BUFFER_DROPPED], timeout=60
        )
        await recorder.wait_for(
            lambda: any(state.buffer.dropped > 50 for state in recorder.of(Channel.STATE, "gw-1")), timeout=30
        )
    dropped = next(e for e in recorder.of(Channel.EVENT, "gw-1") if e.kind is EventKind.BUFFER_DROPPED)
    assert isinstance(dropped.data["dropped"], int)
    assert dropped.data["dropped"] > 0
    received = sorted(message.seq for message in _sequenced(recorder, "gw-1"))
    assert received[0] > 0, "the oldest went first"
