"""The simulated fleet against a real Mosquitto: every message decodes, drop-offs leave their last will."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmsgate.fleet.credentials import GatewayCredentials, write_credentials
from bmsgate.fleet.protocol import Channel, EventKind, EventMessage, TelemetryMessage, decode
from bmsgate.fleet.simulate import GatewayLogin, SimulationError, SimulationReport, SimulationSettings, run_simulation
from bmsgate.fleet.simulate.wire import ConnectOptions, connect_packet
from bmsgate.mqtt import client as mqtt
from bmsgate.mqtt.settings import BrokerSettings
from tests.mosquitto import MOSQUITTO, Mosquitto

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

GATEWAYS = 300


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path, extra="allow_anonymous true\nmax_queued_messages 0\n")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


async def _record(broker: Mosquitto, received: list[tuple[str, bytes]], ready: asyncio.Event) -> None:
    async with mqtt.connect(BrokerSettings(url=broker.url), will_topic="test/recorder", will_payload="gone") as session:
        await session.subscribe("fleet/v1/#")
        ready.set()
        async for message in session.messages():
            received.append((message.topic, message.payload))


@pytest.mark.slow
async def test_a_few_hundred_gateways_send_valid_messages_and_their_wills(broker: Mosquitto) -> None:
    received: list[tuple[str, bytes]] = []
    ready = asyncio.Event()
    recorder = asyncio.create_task(_record(broker, received, ready))
    await asyncio.wait_for(ready.wait(), 10)
    seconds: list[SimulationReport] = []
    settings = SimulationSettings(
        logins=[GatewayLogin(f"sim-{index:05d}") for index in range(GATEWAYS)],
        interval_s=1.0,
        host="127.0.0.1",
        port=broker.port,
        duration_s=4.0,
        fault_ratio=0.05,
        churn_ratio=0.03,
    )
    report = await run_simulation(settings, seconds.append)
    await asyncio.sleep(1.0)  # the last deliveries to the recorder
    recorder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await recorder

    assert seconds, "no per-second report"
    assert report.connects >= GATEWAYS
    assert report.connect_failures == 0
    assert report.drops > 0
    assert report.events > 0
    assert report.acked + report.unconfirmed == report.messages
    assert report.telemetry >= GATEWAYS * 3

    decoded = [decode(name, payload) for name, payload in received]  # raises on any invalid message
    by_channel: dict[Channel, list[object]] = defaultdict(list)
    offline: set[str] = set()
    for message in decoded:
        by_channel[message.channel].append(message.message)
        if message.channel is Channel.AVAILABILITY and message.online is False:
            offline.add(message.gateway)
    sent_and_received = len(decoded) - sum(
        1 for message in decoded if message.channel is Channel.AVAILABILITY and message.online is False
    )
    assert report.acked <= sent_and_received <= report.messages
    assert len(by_channel[Channel.STATE]) >= GATEWAYS
    telemetry = [message for message in by_channel[Channel.TELEMETRY] if isinstance(message, TelemetryMessage)]
    assert len(telemetry) >= report.acked - report.events - 2 * report.connects
    assert {message.gateway for message in telemetry} == {f"sim-{index:05d}" for index in range(GATEWAYS)}
    assert all(message.batteries and message.batteries[0].to_snapshot() is not None for message in telemetry[:50])
    kinds = {message.kind for message in by_channel[Channel.EVENT] if isinstance(message, EventMessage)}
    assert EventKind.ALARM_RAISED in kinds
    assert offline == report.dropped_gateways, "each dropped gateway's last will arrives, and no other"


async def test_a_refused_login_is_counted_not_raised(tmp_path: Path) -> None:
    mosquitto = Mosquitto(tmp_path, extra=f"allow_anonymous false\npassword_file {tmp_path / 'none'}\n")
    (tmp_path / "none").write_text("", encoding="utf-8")
    mosquitto.start()
    try:
        settings = SimulationSettings(
            logins=[GatewayLogin("sim-1", "sim-1", "wrong")],
            interval_s=1.0,
            host="127.0.0.1",
            port=mosquitto.port,
            duration_s=0.3,
        )
        report = await run_simulation(settings)
    finally:
        mosquitto.stop()
    assert report.connect_failures >= 1
    assert report.connects == 0
    assert report.messages == 0


def test_the_connect_packet_carries_credentials_and_a_qos1_retained_will() -> None:
    packet = connect_packet(
        ConnectOptions(client_id="g", will_topic="w", will_payload=b"offline", username="u", password="p")
    )
    flags = packet[2 + 6 + 1]
    assert flags == 0b1110_1110  # user, password, will retain, will QoS 1, will, clean session


def test_an_invalid_gateway_id_is_refused_before_connecting() -> None:
    with pytest.raises(SimulationError, match="not a gateway id"):
        GatewayLogin("Not Valid")


def _cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bmsgate", "fleet", "simulate", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_the_command_logs_in_with_enrolled_credentials_and_prints_a_summary(tmp_path: Path) -> None:
    gateways = [f"gw-{index}" for index in range(3)]
    passwords = tmp_path / "passwd"
    passwords.write_text("", encoding="utf-8")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    broker = Mosquitto(tmp_path, extra=f"allow_anonymous false\npassword_file {passwords}\n")
    for gateway in gateways:
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), gateway, f"pw-{gateway}"], check=True)
        login = GatewayCredentials.model_validate(
            {"gateway": gateway, "broker_url": broker.url, "username": gateway, "password": f"pw-{gateway}"}
        )
        write_credentials(login, credentials / f"{gateway}.json")
    broker.start()
    try:
        done = _cli("--credentials-dir", str(credentials), "--interval", "0.5", "--duration", "1.5", "--quiet")
    finally:
        broker.stop()
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["gateways"] == len(gateways)
    assert summary["connects"] == len(gateways)
    assert summary["connect_failures"] == 0
    assert summary["telemetry"] >= 2 * len(gateways)
    assert summary["acked"] == summary["messages"]


def test_the_command_refuses_a_ratio_above_one() -> None:
    done = _cli("--churn", "1.5")
    assert done.returncode != 0
    assert "between 0 and 1" in done.stderr


def test_the_command_splits_the_fleet_over_processes_and_sums_their_reports(broker: Mosquitto) -> None:
    done = _cli(
        "--broker", broker.url, "--gateways", "21", "--processes", "2", "--interval", "0.5", "--duration", "1.5"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["processes"] == 2
    assert summary["gateways"] == 21
    assert summary["connects"] == 21
    assert summary["acked"] == summary["messages"]
    assert "failed_processes" not in summary


@pytest.fixture
def second_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    directory = tmp_path / "second"
    directory.mkdir()
    mosquitto = Mosquitto(directory, extra="allow_anonymous true\n")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


async def _retained_states(broker: Mosquitto) -> set[str]:
    """The gateways whose retained state this broker holds."""
    found: set[str] = set()
    settings = BrokerSettings(url=broker.url)
    async with mqtt.connect(settings, will_topic="test/reader", will_payload="gone") as session:
        await session.subscribe("fleet/v1/+/state")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in session.messages():
                    found.add(message.topic.split("/")[2])
    return found


async def test_the_gateways_take_turns_over_several_brokers(broker: Mosquitto, second_broker: Mosquitto) -> None:
    settings = SimulationSettings(
        logins=[GatewayLogin(f"sim-{index:05d}") for index in range(6)],
        interval_s=0.5,
        host="127.0.0.1",
        port=broker.port,
        more_brokers=[("127.0.0.1", second_broker.port)],
        duration_s=0.6,
    )
    report = await run_simulation(settings)
    assert report.connects == 6
    assert report.connect_s > 0
    assert report.acked == report.messages
    assert await _retained_states(broker) == {"sim-00000", "sim-00002", "sim-00004"}
    assert await _retained_states(second_broker) == {"sim-00001", "sim-00003", "sim-00005"}


async def test_each_process_takes_the_next_broker_url(broker: Mosquitto, second_broker: Mosquitto) -> None:
    urls = f"{broker.url},{second_broker.url}"
    done = await asyncio.to_thread(
        _cli, "--broker", urls, "--gateways", "6", "--processes", "2", "--interval", "0.5", "--duration", "1"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["connects"] == 6
    assert summary["acked"] == summary["messages"]
    assert summary["connect_s"] > 0
    assert await _retained_states(broker) == {"sim-00000", "sim-00001", "sim-00002"}
    assert await _retained_states(second_broker) == {"sim-00003", "sim-00004", "sim-00005"}


@pytest.mark.parametrize(
    ("urls", "named"),
    [
        ("mqtt://127.0.0.1:1883,http://127.0.0.1:1884", "--broker[1]"),
        ("mqtt://127.0.0.1:1883,", "--broker[1]"),
        ("mqtt://127.0.0.1:99999", "--broker[0]"),
        ("mqtt://127.0.0.1:1883,mqtts://127.0.0.1:8883", "same scheme"),
    ],
)
def test_a_bad_broker_list_is_refused_naming_the_entry(urls: str, named: str) -> None:
    done = _cli("--broker", urls, "--gateways", "2", "--duration", "0.1")
    assert done.returncode != 0
    assert named in done.stderr
