"""The agent against a real Mosquitto with the fleet's per-gateway ACL: what the server sees."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Final

from bmsgate.fleet.agent.agent import FleetAgent, UpdateReporter
from bmsgate.fleet.agent.location import FixedLocation
from bmsgate.fleet.protocol import (
    BatteryDescriptor,
    Channel,
    CommandKind,
    CommandMessage,
    EventKind,
    EventMessage,
    LocationFix,
    StateMessage,
    TelemetryMessage,
    encode,
    topic,
)
from bmsgate.fleet.updates import FailureReason, ReportedState, RunningVersions, UpdatePhase, decode_reported
from bmsgate.model import Alarm
from bmsgate.runtime.hub import SnapshotHub
from tests.fleet.agent.conftest import FleetBroker, Recorder, agent_options, running, snapshot


def _events(recorder: Recorder, kind: EventKind) -> list[EventMessage]:
    return [event for event in recorder.of(Channel.EVENT, "gw-1") if event.kind is kind]


async def test_online_state_telemetry_and_events(fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path) -> None:
    hub = SnapshotHub()
    hub.register("house", stale_after=0.6)
    hub.register("garage", stale_after=30)
    options = agent_options(
        fleet_broker,
        tmp_path,
        name="Farm",
        site="Karoo",
        tags=("pilot",),
        batteries=(BatteryDescriptor(id="house", name="House bank", protocol="jbd"),),
    )
    agent = FleetAgent(
        options, location=FixedLocation(-33.9, 18.4), inverter_status=lambda: {"limits": {"charge_current": 50.0}}
    )
    async with running(agent, hub):
        await recorder.wait_for(lambda: recorder.of(Channel.STATE, "gw-1"))
        hub.publish(snapshot("house", alarms=frozenset({Alarm.LOW_SOC})))
        await recorder.wait_for(lambda: len(recorder.of(Channel.TELEMETRY, "gw-1")) >= 3)
        hub.publish(snapshot("house"))
        await recorder.wait_for(lambda: _events(recorder, EventKind.ALARM_CLEARED))
        # No fresh data for longer than stale_after: offline (the hub's staleness check runs in the supervisor).
        await recorder.wait_for(lambda: (hub.check_staleness(), _events(recorder, EventKind.BATTERY_OFFLINE))[1])
        availability = [message.online for message in recorder.of(Channel.AVAILABILITY, "gw-1")]
        assert availability[0] is True

    state = recorder.of(Channel.STATE, "gw-1")[-1]
    assert isinstance(state, StateMessage)
    assert (state.name, state.site, state.tags, state.hardware) == ("Farm", "Karoo", ["pilot"], "test bench")
    assert state.location is not None
    assert (state.location.fix, state.location.lat) == (LocationFix.FIXED, -33.9)
    assert [battery.id for battery in state.batteries] == ["house", "garage"]
    assert state.batteries[0].name == "House bank"
    telemetry = [message for message in recorder.of(Channel.TELEMETRY, "gw-1") if message.batteries[0].snapshot]
    assert telemetry, "no telemetry carried the house battery"
    sample = telemetry[-1]
    assert isinstance(sample, TelemetryMessage)
    house = sample.batteries[0].to_snapshot()
    assert house is not None
    assert house.cell_voltages == (3.318, 3.322, 3.319, 3.321)
    assert sample.batteries[1].snapshot is None  # garage never reported: said so, not invented
    assert sample.inverter == {"limits": {"charge_current": 50.0}}
    assert not sample.backfill
    kinds = [event.kind for event in recorder.of(Channel.EVENT, "gw-1")]
    assert (
        kinds.index(EventKind.BATTERY_ONLINE)
        < kinds.index(EventKind.ALARM_RAISED)
        < kinds.index(EventKind.ALARM_CLEARED)
    )
    assert _events(recorder, EventKind.ALARM_RAISED)[0].alarm == "low_soc"
    assert _events(recorder, EventKind.CONFIG_APPLIED)
    seqs = [message.seq for message in recorder.of(Channel.TELEMETRY, "gw-1") + recorder.of(Channel.EVENT, "gw-1")]
    assert sorted(seqs) == list(range(len(seqs))), "telemetry and events share one gap-free counter"
    # A clean stop says goodbye on the retained availability topic.
    await recorder.wait_for(lambda: recorder.of(Channel.AVAILABILITY, "gw-1")[-1].online is False)
    assert not recorder.rejected, recorder.rejected


def _command(command_id: str, kind: CommandKind = CommandKind.REFRESH_STATE, *, expires_in: float = 60) -> bytes:
    now = time.time()
    return encode(CommandMessage(v=1, id=command_id, kind=kind, issued_at=now, expires_at=now + expires_in))


async def test_commands_done_and_rejected(fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path) -> None:
    asked: list[str] = []

    def rediscover() -> list[str]:
        asked.append("homeassistant")
        return ["homeassistant"]

    agent = FleetAgent(agent_options(fleet_broker, tmp_path), rediscover=rediscover)
    command_topic = topic("gw-1", Channel.COMMAND)
    async with running(agent, SnapshotHub()):
        await agent.connected.wait()
        states = len(recorder.of(Channel.STATE, "gw-1"))
        await recorder.publish(command_topic, _command("c1"))
        await recorder.publish(command_topic, _command("c2", CommandKind.REDISCOVER_OUTPUTS))
        await recorder.publish(command_topic, _command("c1"))  # a re-delivery
        await recorder.publish(command_topic, _command("c3", expires_in=-5))
        await recorder.publish(command_topic, b'{"v":1,"id":"c4","kind":"shell","issued_at":1,"expires_at":2}')
        await recorder.publish(command_topic, b"rm -rf /")
        await recorder.publish(command_topic, b'{"v":2,"id":"c5","kind":"refresh_state"}')
        await recorder.wait_for(lambda: len(_events(recorder, EventKind.COMMAND_REJECTED)) >= 5)
        await recorder.wait_for(lambda: len(recorder.of(Channel.STATE, "gw-1")) > states)
    done = {event.data["command"]: event for event in _events(recorder, EventKind.COMMAND_DONE)}
    assert set(done) == {"c1", "c2"}
    assert "homeassistant" in done["c2"].detail
    assert asked == ["homeassistant"]
    rejected = [
        (event.data.get("command"), event.data["reason"]) for event in _events(recorder, EventKind.COMMAND_REJECTED)
    ]
    assert rejected == [
        ("c1", "duplicate"),
        ("c3", "expired"),
        ("c4", "unknown_kind"),
        (None, "json"),
        ("c5", "version"),
    ]


async def test_desired_state_without_a_handler_is_reported_unsupported(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    await recorder.publish(topic("gw-1", Channel.DESIRED), b'{"signed":"rollout"}', retain=True)
    agent = FleetAgent(agent_options(fleet_broker, tmp_path))
    async with running(agent, SnapshotHub()):
        await recorder.wait_for(lambda: [raw for raw in recorder.raw if raw[0].endswith("gw-1/reported")])
    reported = json.loads(next(raw[1] for raw in recorder.raw if raw[0].endswith("gw-1/reported")))
    assert reported["status"] == "unsupported"
    assert reported["gateway"] == "gw-1"
    assert len(reported["desired_sha256"]) == 64


class _Handler:
    """A desired-state handler that reports two phases per payload, and what a restart left first."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def resume(self, report: UpdateReporter) -> None:
        report(_reported(UpdatePhase.REVERTED, 3))

    async def take(self, payload: bytes, report: UpdateReporter) -> None:
        self.seen.append(payload)
        report(_reported(UpdatePhase.DOWNLOADING, 4))
        report(_reported(UpdatePhase.FAILED, 4))


def _reports(recorder: Recorder) -> list[ReportedState]:
    name = topic("gw-1", Channel.REPORTED)
    return [decode_reported(raw[1], topic=name, gateway="gw-1") for raw in recorder.raw if raw[0] == name]


def _reported(phase: UpdatePhase, generation: int) -> ReportedState:
    return ReportedState(
        v=1,
        gateway="gw-1",
        at=time.time(),
        phase=phase,
        generation=generation,
        reason=FailureReason.HARDWARE if phase is UpdatePhase.FAILED else None,
        running=RunningVersions(software="1.0"),
    )


async def test_desired_state_goes_to_the_installed_handler(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    handler = _Handler()
    agent = FleetAgent(agent_options(fleet_broker, tmp_path), desired=handler)
    async with running(agent, SnapshotHub()):
        await agent.connected.wait()
        await recorder.wait_for(lambda: _reports(recorder))
        assert _reports(recorder)[0].phase is UpdatePhase.REVERTED
        await recorder.publish(topic("gw-1", Channel.DESIRED), b'{"signed":"rollout"}', retain=True)
        await recorder.wait_for(lambda: _reports(recorder)[-1].phase is UpdatePhase.FAILED)
    assert handler.seen == [b'{"signed":"rollout"}']
    reported = _reports(recorder)[-1]
    assert reported.generation == 4
    assert reported.reason is FailureReason.HARDWARE


class _BrokenSource:
    kind: Final = "gpsd"

    async def run(self, report: object) -> None:
        del report
        raise RuntimeError("receiver driver crashed")


async def test_failing_parts_are_reported_and_the_telemetry_goes_on(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    def rediscover() -> list[str]:
        raise RuntimeError("output hook crashed")

    agent = FleetAgent(agent_options(fleet_broker, tmp_path), location=_BrokenSource(), rediscover=rediscover)
    async with running(agent, SnapshotHub()) as task:
        await agent.connected.wait()
        await recorder.publish(topic("gw-1", Channel.COMMAND), _command("c9", CommandKind.REDISCOVER_OUTPUTS))
        await recorder.wait_for(lambda: _events(recorder, EventKind.COMMAND_REJECTED))
        count = len(recorder.of(Channel.TELEMETRY, "gw-1"))
        await recorder.wait_for(lambda: len(recorder.of(Channel.TELEMETRY, "gw-1")) > count + 2)
        assert not task.done()
    rejected = _events(recorder, EventKind.COMMAND_REJECTED)[0]
    assert rejected.data == {"reason": "failed", "command": "c9"}
    assert _events(recorder, EventKind.LOCATION_LOST)
    assert agent.location is not None
    assert agent.location.fix is LocationFix.NONE
