"""The fleet broker with a real Mosquitto: per-gateway confinement, revocation, TLS, clean stop, persistence.

Gateways connect the way the agent will: :func:`bmsgate.mqtt.client.connect` over TLS with the generated CA
and the credentials :func:`enroll_gateway` returned. The server side is the server's own account on the
loopback listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest

from bmsgate.errors import ConfigError, SinkError
from bmsgate.fleet.credentials import GatewayCredentials
from bmsgate.fleet.server.broker import (
    SERVER_STATUS_TOPIC,
    SERVER_USER,
    BrokerOptions,
    FleetBroker,
    apply_device_changes,
    render_acl,
)
from bmsgate.fleet.server.datadir import DataDir
from bmsgate.fleet.server.devices import Device, DeviceRegistry, enroll_gateway
from bmsgate.mqtt.broker import find_mosquitto, free_port
from bmsgate.mqtt.client import IncomingMessage, MqttSession, connect
from bmsgate.mqtt.settings import BrokerSettings, TlsSettings

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not installed")

TIMEOUT = 5.0
QUIET = 0.5
"""How long "nothing arrives" is watched for (Mosquitto forwards within milliseconds on loopback)."""
QUEUED = 1500
"""Messages queued for an absent ingest: beyond Mosquitto's default limit of 1,000, which would drop the rest."""


def options() -> BrokerOptions:
    return BrokerOptions(
        gateway_host="127.0.0.1", gateway_port=free_port(), cert_port=free_port(), public_host="localhost"
    )


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[FleetBroker]:
    async with FleetBroker(DataDir.open(tmp_path / "data"), options()) as running:
        yield running


def gateway_settings(credentials: GatewayCredentials, directory: Path) -> BrokerSettings:
    """The agent's view of its credentials file: CA (and certificate) as files, as TlsSettings wants."""
    directory.mkdir(parents=True, exist_ok=True)
    assert credentials.ca_pem is not None
    ca = directory / f"{credentials.gateway}-ca.pem"
    ca.write_text(credentials.ca_pem)
    cert = key = None
    if credentials.cert_pem is not None and credentials.key_pem is not None:
        cert, key = directory / f"{credentials.gateway}.pem", directory / f"{credentials.gateway}.key"
        cert.write_text(credentials.cert_pem)
        key.write_text(credentials.key_pem.get_secret_value())
    return BrokerSettings.model_validate(
        {
            "url": credentials.broker_url,
            "username": None if cert else credentials.username,
            "password": credentials.password.get_secret_value() if credentials.password else None,
            "tls": TlsSettings(ca_file=ca, cert_file=cert, key_file=key),
        }
    )


async def enrol(broker: FleetBroker, gateway_id: str, *, client_cert: bool = False) -> BrokerSettings:
    url = broker.endpoints.cert_url if client_cert else broker.endpoints.password_url
    assert url is not None
    credentials = enroll_gateway(broker.data, gateway_id, broker_url=url, client_cert=client_cert)
    await broker.reload()
    return gateway_settings(credentials, broker.data.root.parent / "gateways")


def gateway(settings: BrokerSettings, gateway_id: str) -> contextlib.AbstractAsyncContextManager[MqttSession]:
    return connect(settings, will_topic=f"fleet/v1/{gateway_id}/availability", will_payload="offline")


def server(broker: FleetBroker) -> contextlib.AbstractAsyncContextManager[MqttSession]:
    return connect(broker.server_settings, will_topic=SERVER_STATUS_TOPIC, will_payload="offline")


class Inbox:
    """Collects a session's messages in the background."""

    def __init__(self, session: MqttSession) -> None:
        self.messages: list[IncomingMessage] = []
        self._session = session
        self._arrived = asyncio.Event()

    async def run(self) -> None:
        async for message in self._session.messages():
            self.messages.append(message)
            self._arrived.set()

    def count(self, payload: bytes) -> int:
        return sum(message.payload == payload for message in self.messages)

    def topics(self, suffix: str = "") -> list[str]:
        return [message.topic for message in self.messages if message.topic.endswith(suffix)]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not predicate():
                self._arrived.clear()
                await self._arrived.wait()


@contextlib.asynccontextmanager
async def inbox(session: MqttSession, *filters: str) -> AsyncIterator[Inbox]:
    await session.subscribe(*filters)
    box = Inbox(session)
    task = asyncio.create_task(box.run())
    try:
        yield box
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SinkError):
            await task


async def test_a_gateway_cannot_publish_as_another(broker: FleetBroker) -> None:
    alpha = await enrol(broker, "gw-alpha")
    beta = await enrol(broker, "gw-beta")
    async with server(broker) as srv, inbox(srv, "fleet/v1/#") as seen:
        async with gateway(alpha, "gw-alpha") as session:
            await session.publish("fleet/v1/gw-alpha/state", b"alpha-own", retain=False)
            await seen.wait_for(lambda: "fleet/v1/gw-alpha/state" in seen.topics())
            # Mosquitto 2.0.11 drops the packet and closes the offender's connection (MQTT 3.1.1 has no
            # negative PUBACK): the forgery reaches nobody, and the broker publishes the gateway's last will.
            # (QoS 0 and one forgery per session only so that the client does not wait out a confirmation
            # that never comes on the closed connection.)
            await session.publish("fleet/v1/gw-beta/state", b"forged-by-alpha", retain=False, qos=0)
            await seen.wait_for(lambda: seen.count(b"offline") == 1)
        async with gateway(beta, "gw-beta") as session:
            await session.publish("fleet/v1/gw-beta/state", b"beta-own", retain=False)
            await seen.wait_for(lambda: "fleet/v1/gw-beta/state" in seen.topics())
        await asyncio.sleep(QUIET)
    payloads = {(message.topic, message.payload) for message in seen.messages}
    assert ("fleet/v1/gw-alpha/state", b"alpha-own") in payloads
    assert ("fleet/v1/gw-beta/state", b"beta-own") in payloads
    assert not [message for message in seen.messages if message.payload == b"forged-by-alpha"]
    # ...nor may it write the server's channels, even its own.
    async with server(broker) as srv, inbox(srv, "fleet/v1/#") as seen:
        async with gateway(alpha, "gw-alpha") as session:
            await session.publish("fleet/v1/gw-alpha/desired", b"self-desired", retain=True, qos=0)
            await seen.wait_for(lambda: seen.count(b"offline") == 1)
    async with server(broker) as srv, inbox(srv, "fleet/v1/+/desired") as desired:
        await asyncio.sleep(QUIET)
    assert desired.messages == []


async def test_a_gateway_reads_only_its_own_desired_state(broker: FleetBroker) -> None:
    alpha = await enrol(broker, "gw-alpha")
    await enrol(broker, "gw-beta")
    async with server(broker) as srv:
        await srv.publish("fleet/v1/gw-alpha/desired", b"for-alpha", retain=True)
        await srv.publish("fleet/v1/gw-beta/desired", b"for-beta", retain=True)
    async with (
        gateway(alpha, "gw-alpha") as session,
        inbox(session, "fleet/v1/+/desired", "fleet/v1/gw-beta/desired", "fleet/v1/gw-beta/command", "#") as seen,
    ):
        await seen.wait_for(lambda: bool(seen.messages))
        async with server(broker) as srv:
            await srv.publish("fleet/v1/gw-beta/command", b"beta-command", retain=False)
            await srv.publish("fleet/v1/gw-alpha/command", b"alpha-command", retain=False)
        await seen.wait_for(lambda: "fleet/v1/gw-alpha/command" in seen.topics())
        await asyncio.sleep(QUIET)
    assert {(message.topic, message.payload) for message in seen.messages} == {
        ("fleet/v1/gw-alpha/desired", b"for-alpha"),
        ("fleet/v1/gw-alpha/command", b"alpha-command"),
    }


async def test_a_revoked_gateway_is_cut_off_at_once_and_refused(broker: FleetBroker) -> None:
    alpha = await enrol(broker, "gw-alpha")
    async with server(broker) as srv, inbox(srv, "fleet/v1/+/state", "fleet/v1/+/availability") as seen:
        async with gateway(alpha, "gw-alpha") as session:
            await session.publish("fleet/v1/gw-alpha/state", b"before", retain=False)
            await seen.wait_for(lambda: len(seen.messages) == 1)
            DeviceRegistry(broker.data.devices_file).revoke("gw-alpha")
            # What `bmsgate fleet revoke` does from another process: files, then SIGHUP via the pid file.
            assert await apply_device_changes(broker.data) is True
            # Mosquitto 2.0.11 closes the live session of a user no longer in the password file on reload.
            # (Without a last will: the will is checked against the ACL, which no longer has the gateway.)
            await asyncio.sleep(QUIET)
            with pytest.raises(SinkError):
                await session.publish("fleet/v1/gw-alpha/state", b"after-revoke", retain=False, qos=0)
        await asyncio.sleep(QUIET)
        assert [message.payload for message in seen.messages] == [b"before"]
    with pytest.raises(SinkError, match=r"[Nn]ot authori[sz]ed"):
        async with gateway(alpha, "gw-alpha"):
            pass
    assert "user gw-alpha" not in (broker.data.broker_dir / "acl").read_text()


async def test_re_enrolment_rotates_the_password(broker: FleetBroker) -> None:
    old = await enrol(broker, "gw-alpha")
    new = await enrol(broker, "gw-alpha")
    assert old.resolved_password() != new.resolved_password()
    async with gateway(new, "gw-alpha"):
        pass
    with pytest.raises(SinkError, match=r"[Nn]ot authori[sz]ed"):
        async with gateway(old, "gw-alpha"):
            pass


async def test_wrong_password_unknown_user_and_plain_tcp_are_refused(broker: FleetBroker) -> None:
    alpha = await enrol(broker, "gw-alpha")
    for wrong in (
        alpha.model_copy(update={"password": alpha.password and type(alpha.password)("not-the-password")}),
        alpha.model_copy(update={"username": "gw-nobody"}),
        alpha.model_copy(update={"username": SERVER_USER}),
    ):
        with pytest.raises(SinkError, match=r"[Nn]ot authori[sz]ed"):
            async with gateway(wrong, "gw-alpha"):
                pass
    # The gateway listener speaks TLS only: a plain MQTT CONNECT gets no CONNACK, the broker hangs up.
    assert await asyncio.to_thread(_plain_connect, broker.options.gateway_port, alpha) == b""
    assert (await asyncio.to_thread(_plain_connect, broker.ingest_port, alpha))[:1] == bytes([0x20])  # CONNACK
    # Nor does anyone get in anonymously on the server's loopback listener.
    with pytest.raises(SinkError, match=r"[Nn]ot authori[sz]ed"):
        async with gateway(BrokerSettings(host="127.0.0.1", port=broker.ingest_port), "gw-alpha"):
            pass


def _plain_connect(port: int, settings: BrokerSettings) -> bytes:
    """Send an MQTT 3.1.1 CONNECT over plain TCP; what comes back before the broker closes (b"": nothing)."""
    user, password = (settings.username or "").encode(), (settings.resolved_password() or "").encode()
    client_id = b"plain-probe"
    body = b"\x00\x04MQTT\x04\xc2\x00\x1e"
    for field in (client_id, user, password):
        body += len(field).to_bytes(2, "big") + field
    packet = bytes([0x10, len(body)]) + body
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as plain:
        plain.sendall(packet)
        try:
            return plain.recv(4)
        except ConnectionResetError:
            return b""


def _tls_handshake(port: int, settings: BrokerSettings) -> None:
    """A TLS handshake plus one read, as a gateway with a client certificate does it."""
    assert settings.tls is not None and settings.tls.ca_file and settings.tls.cert_file
    context = ssl.create_default_context(cafile=str(settings.tls.ca_file))
    context.load_cert_chain(str(settings.tls.cert_file), str(settings.tls.key_file))
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            # TLS 1.3 reports a refused client certificate on the first read, not in the handshake.
            tls.sendall(bytes([0xC0, 0x00]))  # PINGREQ before CONNECT: the broker closes, fine
            tls.recv(16)


async def test_client_certificate_gateways_are_confined_and_revocable(broker: FleetBroker) -> None:
    gamma = await enrol(broker, "gw-gamma", client_cert=True)
    assert gamma.username is None and gamma.port == broker.options.cert_port
    async with server(broker) as srv, inbox(srv, "fleet/v1/#") as seen:
        async with gateway(gamma, "gw-gamma") as session:
            await session.publish("fleet/v1/gw-gamma/state", b"by-certificate", retain=False)
            await seen.wait_for(lambda: "fleet/v1/gw-gamma/state" in seen.topics())
            with contextlib.suppress(SinkError):
                await session.publish("fleet/v1/gw-other/state", b"forged", retain=False, qos=0)
        await asyncio.sleep(QUIET)
    assert not [message for message in seen.messages if message.payload == b"forged"]
    await asyncio.to_thread(_tls_handshake, broker.options.cert_port or 0, gamma)

    DeviceRegistry(broker.data.devices_file).revoke("gw-gamma")
    await broker.reload()
    # The CRL is reloaded with the SIGHUP: the revoked certificate fails the handshake itself (the client
    # sees the "certificate revoked" alert, or only the closed connection when the alert loses the race).
    log_before = broker.log_file.read_text()
    with pytest.raises(ssl.SSLError, match=r"revoked|EOF occurred"):
        await asyncio.to_thread(_tls_handshake, broker.options.cert_port or 0, gamma)
    async with asyncio.timeout(TIMEOUT):
        while "certificate verify failed" not in broker.log_file.read_text()[len(log_before) :]:
            await asyncio.sleep(0.02)


async def test_a_certificate_alone_does_not_open_the_password_listener(broker: FleetBroker) -> None:
    gamma = await enrol(broker, "gw-gamma", client_cert=True)
    on_password_port = gamma.model_copy(update={"port": broker.options.gateway_port, "username": "gw-gamma"})
    with pytest.raises(SinkError, match=r"[Nn]ot authori[sz]ed"):
        async with gateway(on_password_port, "gw-gamma"):
            pass


async def test_exit_stops_mosquitto_and_removes_the_pid_file(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "data")
    async with FleetBroker(data, options()) as running:
        pid = running.pid
        assert pid is not None and data.running_broker_pid() == pid
        with pytest.raises(SinkError, match="already runs"):
            await FleetBroker(data, options()).start()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not data.pid_file.exists()
    assert data.running_broker_pid() is None


_SERVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, signal, sys
    from pathlib import Path
    from bmsgate.fleet.server.broker import BrokerOptions, FleetBroker
    from bmsgate.fleet.server.datadir import DataDir

    async def main() -> None:
        task = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        options = BrokerOptions(gateway_host="127.0.0.1", gateway_port=int(sys.argv[2]), cert_port=None)
        async with FleetBroker(DataDir.open(Path(sys.argv[1])), options) as broker:
            print(broker.pid, flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    """
)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_server_ending_leaves_no_mosquitto(tmp_path: Path, how: signal.Signals) -> None:
    script = tmp_path / "server.py"
    script.write_text(_SERVER_SCRIPT)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "data"), str(free_port())],
        stdout=subprocess.PIPE,
        env=environment,
    ) as process:
        assert process.stdout is not None
        pid = int(process.stdout.readline())
        os.kill(pid, 0)
        process.send_signal(how)
        # SIGTERM: the server stops its broker; SIGKILL: the kernel's parent-death signal does.
        assert process.wait(TIMEOUT) == (0 if how == signal.SIGTERM else -signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT
    while _alive(pid):
        assert time.monotonic() < deadline, f"mosquitto {pid} outlived its server"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def test_queued_messages_and_retained_desired_survive_a_broker_restart(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "data")
    fixed = options()
    async with FleetBroker(data, fixed) as first:
        alpha = await enrol(first, "gw-alpha")
        account = first.server_settings
        # A durable ingest session (clean_session false) that then goes away: the broker queues for it.
        async with aiomqtt.Client(
            "127.0.0.1",
            first.ingest_port,
            username=account.username,
            password=account.resolved_password(),
            identifier="ingest",
            clean_session=False,
        ) as ingest:
            await ingest.subscribe("fleet/v1/+/telemetry", qos=1)
        async with gateway(alpha, "gw-alpha") as session:
            for number in range(QUEUED):
                await session.publish("fleet/v1/gw-alpha/telemetry", f"sample-{number}".encode(), retain=False)
        async with server(first) as srv:
            await srv.publish("fleet/v1/gw-alpha/desired", b"desired-v1", retain=True)
        ingest_port = first.ingest_port
    async with FleetBroker(data, dataclasses.replace(fixed, ingest_port=ingest_port)) as second:
        received: list[bytes] = []
        async with aiomqtt.Client(
            "127.0.0.1",
            second.ingest_port,
            username=account.username,
            password=account.resolved_password(),
            identifier="ingest",
            clean_session=False,
        ) as ingest:
            async with asyncio.timeout(TIMEOUT):
                async for message in ingest.messages:
                    received.append(bytes(message.payload))
                    if len(received) == QUEUED:
                        break
        async with gateway(alpha, "gw-alpha") as session, inbox(session, "fleet/v1/gw-alpha/desired") as desired:
            await desired.wait_for(lambda: bool(desired.messages))
    assert received == [f"sample-{number}".encode() for number in range(QUEUED)]
    assert desired.messages[0].payload == b"desired-v1"


def test_the_acl_names_each_active_gateway_literally() -> None:
    devices = [
        Device("gw-b", 1.0, password_hash=None),
        Device("gw-a", 2.0),
        Device("gw-gone", 3.0, revoked=True, revoked_at=4.0),
    ]
    acl = render_acl(devices)
    assert "%u" not in acl and "pattern" not in acl
    assert acl.index("user gw-a") < acl.index("user gw-b")
    assert "gw-gone" not in acl
    section = acl.split("user gw-a\n")[1].split("\n\n")[0].splitlines()
    assert sorted(section) == sorted(
        [
            f"topic write fleet/v1/gw-a/{channel}"
            for channel in ("availability", "state", "telemetry", "event", "reported")
        ]
        + [f"topic read fleet/v1/gw-a/{channel}" for channel in ("desired", "command")]
    )
    assert f"user {SERVER_USER}\ntopic read fleet/v1/#\n" in acl


async def test_a_broker_that_cannot_start_says_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = DataDir.open(tmp_path / "data")
        broker = FleetBroker(data, BrokerOptions(gateway_host="127.0.0.1", gateway_port=port, cert_port=None))
        with pytest.raises(SinkError, match=r"Address already in use|did not listen|exited"):
            await broker.start()
    assert broker.pid is None and not data.pid_file.exists()


@pytest.mark.parametrize(
    "bad",
    [
        {"gateway_port": 0},
        {"gateway_port": 70000},
        {"gateway_port": 8883, "cert_port": 8883},
        {"ingest_port": 8883},
        {"max_queued_messages": -1},
    ],
)
def test_impossible_listener_settings_are_config_errors(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        BrokerOptions(**bad)  # type: ignore[arg-type]


async def test_watch_reports_a_broker_that_died(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "data")
    async with FleetBroker(data, options()) as running:
        watcher = asyncio.create_task(running.watch())
        await asyncio.sleep(0.1)
        assert not watcher.done()
        pid = running.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(SinkError, match="exited unexpectedly"):
            await asyncio.wait_for(watcher, TIMEOUT)
        assert running.pid is None and not data.pid_file.exists()


async def test_watch_stays_quiet_when_the_broker_is_stopped(tmp_path: Path) -> None:
    running = FleetBroker(DataDir.open(tmp_path / "data"), options())
    await running.start()
    watcher = asyncio.create_task(running.watch())
    await asyncio.sleep(0.05)
    await running.stop()
    await asyncio.sleep(0.1)
    assert not watcher.done()
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher


async def test_a_gateway_cannot_take_over_the_servers_session_by_its_client_id(broker: FleetBroker) -> None:
    """The client id is forced to the user name on the gateway listeners: the ingest's queue survives."""
    alpha = await enrol(broker, "gw-alpha")
    beta = await enrol(broker, "gw-beta")
    ingest_id = "bmsgate-fleet-ingest"

    def server() -> contextlib.AbstractAsyncContextManager[MqttSession]:
        return connect(
            broker.server_settings,
            will_topic=SERVER_STATUS_TOPIC,
            will_payload="offline",
            client_id=ingest_id,
            clean_session=False,
            manual_ack=True,
        )

    async with server() as session:
        await session.subscribe("fleet/v1/+/telemetry")
    async with connect(beta, will_topic="fleet/v1/gw-beta/availability", will_payload="offline") as gateway:
        for index in range(5):
            await gateway.publish("fleet/v1/gw-beta/telemetry", f"m{index}".encode(), retain=False)
    will = "fleet/v1/gw-alpha/availability"
    async with connect(alpha, will_topic=will, will_payload="offline", client_id=ingest_id):
        await asyncio.sleep(0.3)
    got: list[bytes] = []
    async with server() as session:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                async for message in session.messages():
                    got.append(message.payload)
                    session.ack(message)
                    if len(got) == 5:
                        break
    assert got == [f"m{index}".encode() for index in range(5)]


async def test_a_packet_beyond_the_largest_message_is_refused_by_the_broker(broker: FleetBroker) -> None:
    """Bounded memory: the broker closes the connection instead of holding (and forwarding) a huge payload."""
    gateway = await enrol(broker, "gw-big")
    got: list[int] = []
    async with connect(broker.server_settings, will_topic=SERVER_STATUS_TOPIC, will_payload="offline") as server:
        await server.subscribe("fleet/v1/+/telemetry")
        with contextlib.suppress(SinkError):
            async with connect(gateway, will_topic="fleet/v1/gw-big/availability", will_payload="offline") as session:
                await session.publish("fleet/v1/gw-big/telemetry", b"x" * 1_000_000, retain=False)
                await session.publish("fleet/v1/gw-big/telemetry", b"small", retain=False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                async for message in server.messages():
                    got.append(len(message.payload))
    assert 1_000_000 not in got
