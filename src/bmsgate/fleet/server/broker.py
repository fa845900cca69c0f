"""The fleet broker: a Mosquitto the fleet server configures, starts, reloads and stops itself.

:class:`FleetBroker` writes into the data directory's ``broker/``:

- ``mosquitto.conf``: a TLS listener for gateways (default ``0.0.0.0:8883``, user name + password), an
  optional mutual-TLS listener (default 8884, the client certificate's CN is the user name), and a plain
  loopback listener for the server's own connection (ingest, desired state, commands). No anonymous
  access anywhere; persistence in ``broker/db`` (queued QoS 1 messages and retained desired state survive
  a broker restart); no per-client queue limit, so a slow ingest makes the queue grow instead of Mosquitto
  dropping messages (it would drop *silently* over MQTT 3.1.1).
- ``passwd``: Mosquitto's ``$7$`` format, written by our code (``passwords.py``) from ``devices.json``.
- ``acl``: an ACL *file* with literal per-gateway rules (the dynamic-security plugin of Mosquitto 2.0.11 does
  not substitute ``%u``): gateway ``<id>`` may write only ``fleet/v1/<id>/{availability,state,telemetry,
  event,reported}`` and read only ``fleet/v1/<id>/{desired,command}``; the server user reads everything under
  ``fleet/v1/`` and writes ``desired`` and ``command``. A revoked gateway has no rules and no password.

A change (enrol, revoke) rewrites ``passwd``, ``acl`` and the CRL and sends the broker SIGHUP; the caller
waits until Mosquitto logs the reload. What Mosquitto 2.0.11 then does (tested in
tests/fleet/server/test_broker.py): it closes the live session of a user no longer in the password file
and of a certificate now in the CRL (despite its manual page saying connected clients are unaffected),
refuses their next connect, and keeps every other session. The closed session's last will is not
published (the will is checked against the ACL, which no longer names the gateway). Were a session
kept, its ACL would be gone anyway: nothing it publishes is delivered. A gateway publishing outside its
own prefix is not just ignored: Mosquitto drops the message *and closes the connection* (MQTT 3.1.1
has no negative PUBACK), so the broker publishes that gateway's last will. ``bmsgate fleet revoke``
(another process) finds the running broker by ``broker/mosquitto.pid``. If the server dies, even by
SIGKILL, the kernel sends Mosquitto SIGTERM (Linux ``PR_SET_PDEATHSIG``), so no broker outlives it.

With ``--broker URL`` (an existing broker) the server starts nothing; :func:`write_access_files` writes
the same ``passwd`` and ``acl`` for the operator to install (see docs/fleet/broker-and-enrolment.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import getpass
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from pydantic import SecretStr

from bmsgate.errors import ConfigError, SinkError
from bmsgate.fleet.protocol import GATEWAY_CHANNELS, MAX_PAYLOAD_BYTES, SERVER_CHANNELS, TOPIC_ROOT, Channel
from bmsgate.fleet.server.datadir import DataDir, write_private
from bmsgate.fleet.server.devices import Device, DeviceRegistry
from bmsgate.fleet.server.passwords import hash_password, new_password
from bmsgate.fleet.server.tls import FleetPki, default_server_names
from bmsgate.mqtt.broker import find_mosquitto, free_port, terminate_process
from bmsgate.mqtt.settings import BrokerSettings

__all__ = [
    "SERVER_STATUS_TOPIC",
    "SERVER_USER",
    "BrokerEndpoints",
    "BrokerOptions",
    "FleetBroker",
    "ServerAccount",
    "apply_device_changes",
    "read_endpoints",
    "render_acl",
    "render_password_file",
    "server_account",
    "write_access_files",
]

_LOGGER = logging.getLogger(__name__)
_SINK: Final = "fleet-broker"
SERVER_USER: Final = "_fleet-server"
"""The server's broker user: the leading ``_`` is not allowed in a gateway id, so no gateway can take it."""
SERVER_STATUS_TOPIC: Final = "fleet/server/availability"
"""Where the server's own connection keeps its last will (outside every gateway's prefix)."""
_START_TIMEOUT: Final = 10.0
_RELOAD_TIMEOUT: Final = 5.0
_RESIGNAL_AFTER: Final = 0.25
_RELOAD_LINE: Final = b"Reloading config."
_RUNNING_LINE: Final = re.compile(rb"mosquitto version \S+ running")
_MAX_LOG_BYTES: Final = 16 * 1024 * 1024
_PR_SET_PDEATHSIG: Final = 1
_MAX_PACKET_BYTES: Final = max(MAX_PAYLOAD_BYTES.values()) + 4096
_MAX_PORT: Final = 65535
_MIN_SERVER_SECRET: Final = 32


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerOptions:
    """Where the fleet broker listens and how it queues.

    Attributes:
        gateway_host: interface of the gateway listeners (``0.0.0.0``: every interface).
        gateway_port: TLS listener with user name + password (8883 is MQTT over TLS).
        cert_port: mutual-TLS listener (client certificate, CN = gateway id); None: none.
        ingest_port: the server's loopback plain listener; 0 picks a free port.
        public_host: the host name gateways reach the broker by (goes into credentials files); None: this
            machine's host name.
        extra_names: more names (DNS or IP) for the broker's certificate.
        max_queued_messages: per-client queue beyond the in-flight window; 0 = unlimited (the server's own
            queue must never overflow: Mosquitto drops without telling an MQTT 3.1.1 client).
        max_inflight_messages: QoS 1 messages in flight per client. The ingest acknowledges a message only once
            its batch is committed, so this window bounds its batch size: keep it above twice the batch.
        autosave_interval: seconds between persistence saves (it also saves on exit).
    """

    gateway_host: str = "0.0.0.0"
    gateway_port: int = 8883
    cert_port: int | None = 8884
    ingest_port: int = 0
    public_host: str | None = None
    extra_names: tuple[str, ...] = ()
    max_queued_messages: int = 0
    max_inflight_messages: int = 20_000
    autosave_interval: int = 60

    def __post_init__(self) -> None:
        """Refuse impossible listener settings before anything is written.

        Raises:
            ConfigError: a port out of range or used twice, or a queue setting below 0.
        """
        ports = {"gateway_port": self.gateway_port, "cert_port": self.cert_port, "ingest_port": self.ingest_port}
        for key, port in ports.items():
            if port is not None and not (key == "ingest_port" and port == 0) and not 1 <= port <= _MAX_PORT:
                raise ConfigError(f"port {port} is not between 1 and {_MAX_PORT}", key_path=key)
        chosen = [port for port in ports.values() if port]
        if len(chosen) != len(set(chosen)):
            raise ConfigError("the gateway, certificate and ingest listeners need different ports", key_path="ports")
        if self.max_queued_messages < 0 or self.max_inflight_messages < 1 or self.autosave_interval < 0:
            raise ConfigError("queue and autosave settings must not be negative", key_path="max_queued_messages")

    @property
    def host_name(self) -> str:
        """The name in gateway URLs."""
        # Not getfqdn(): it asks DNS, which on a box without a resolver stalls the start for seconds.
        return self.public_host or socket.gethostname()


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerEndpoints:
    """The URLs gateways use, as recorded in ``broker/endpoint.json`` by the running server."""

    password_url: str
    cert_url: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ServerAccount:
    """The server's own broker user and password."""

    username: str
    password: str


def server_account(data: DataDir) -> ServerAccount:
    """The server's broker account, created on first use (kept in ``broker/server-user.json``, 0600)."""
    path = data.broker_dir / "server-user.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stored = json.loads(path.read_text(encoding="utf-8"))
        password = stored["password"]
        # Anything else is damage: a fresh account costs nothing (passwd is rewritten at every start).
        if stored["username"] == SERVER_USER and isinstance(password, str) and len(password) >= _MIN_SERVER_SECRET:
            return ServerAccount(SERVER_USER, password)
    account = ServerAccount(SERVER_USER, new_password())
    write_private(path, json.dumps({"username": account.username, "password": account.password}) + "\n")
    return account


def _topics(gateway_id: str, channels: Iterable[Channel]) -> list[str]:
    return [f"{TOPIC_ROOT}/{gateway_id}/{channel.value}" for channel in sorted(channels)]


def render_acl(devices: Iterable[Device], server_user: str = SERVER_USER) -> str:
    """The ACL file: the server's rules, then literal rules per active gateway (revoked ones get none)."""
    lines = [
        "# Generated by bmsgate from devices.json: edits are overwritten.",
        f"user {server_user}",
        f"topic read {TOPIC_ROOT}/#",
        *(f"topic write {TOPIC_ROOT}/+/{channel.value}" for channel in sorted(SERVER_CHANNELS)),
        "topic readwrite fleet/server/#",
    ]
    for device in sorted(devices, key=lambda device: device.gateway_id):
        if not device.active:
            continue
        lines += ["", f"user {device.gateway_id}"]
        lines += [f"topic write {name}" for name in _topics(device.gateway_id, GATEWAY_CHANNELS)]
        lines += [f"topic read {name}" for name in _topics(device.gateway_id, SERVER_CHANNELS)]
    return "\n".join(lines) + "\n"


def render_password_file(devices: Iterable[Device], account: ServerAccount) -> str:
    """The password file: the server user and every active gateway that has a password."""
    lines = [f"{account.username}:{hash_password(account.password)}"]
    lines += [
        f"{device.gateway_id}:{device.password_hash}"
        for device in sorted(devices, key=lambda device: device.gateway_id)
        if device.active and device.password_hash is not None
    ]
    return "\n".join(lines) + "\n"


def write_access_files(data: DataDir, directory: Path | None = None) -> tuple[Path, Path]:
    """Write ``passwd`` and ``acl`` (and the CRL) from ``devices.json``; returns their paths.

    Args:
        data: the data directory.
        directory: where to write them (default the data directory's ``broker/``; another for an
            operator's own broker).

    Raises:
        DeviceError: ``devices.json`` is damaged (the old files stay as they were).
    """
    registry = DeviceRegistry(data.devices_file)
    devices = registry.list()
    target = directory or data.broker_dir
    target.mkdir(parents=True, exist_ok=True)
    passwd, acl = target / "passwd", target / "acl"
    write_private(passwd, render_password_file(devices, server_account(data)))
    write_private(acl, render_acl(devices))
    pki = FleetPki(data.tls_dir)
    if pki.ca_file.exists():
        pki.write_crl(registry.revoked_serials())
    return passwd, acl


def read_endpoints(data: DataDir) -> BrokerEndpoints | None:
    """The gateway URLs the server last started with, or None (never started, or not an embedded broker)."""
    try:
        stored = json.loads((data.broker_dir / "endpoint.json").read_text(encoding="utf-8"))
        return BrokerEndpoints(str(stored["password_url"]), stored.get("cert_url"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reload_count(log: Path) -> int:
    try:
        return log.read_bytes().count(_RELOAD_LINE)
    except OSError:
        return 0


def _hang_up(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise SinkError(f"broker (pid {pid}) is gone", sink=_SINK) from exc


async def _signal_reload(pid: int, log: Path) -> None:
    """SIGHUP `pid` and wait until its log says it reloaded (so the caller knows the change is live).

    The signal is repeated while unconfirmed: one that lands just before Mosquitto goes back to waiting
    for events is only acted on when its wait ends, which on an idle broker can be many seconds later.
    A second reload of the same files is harmless.
    """
    before = _reload_count(log)
    _hang_up(pid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _RELOAD_TIMEOUT
    next_signal = loop.time() + _RESIGNAL_AFTER
    while _reload_count(log) <= before:
        now = loop.time()
        if now > deadline:
            raise SinkError(f"broker (pid {pid}) did not confirm the reload within {_RELOAD_TIMEOUT:g} s", sink=_SINK)
        if now > next_signal:
            _hang_up(pid)
            next_signal = now + _RESIGNAL_AFTER
        await asyncio.sleep(0.02)
    # The reload runs within one pass of Mosquitto's single-threaded loop: a packet read after the line
    # was logged sees the new rules. A short pause covers the rest of that pass.
    await asyncio.sleep(0.05)


async def apply_device_changes(data: DataDir) -> bool:
    """Rewrite the broker's access files and make a running broker reload them.

    Returns:
        True when a running broker (found by its pid file) reloaded; False when none runs (the files
        are read at its next start).

    Raises:
        DeviceError: ``devices.json`` is damaged.
        SinkError: the broker did not confirm the reload.
    """
    write_access_files(data)
    pid = data.running_broker_pid()
    if pid is None:
        return False
    await _signal_reload(pid, data.broker_dir / "mosquitto.log")
    return True


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the server dies, even by SIGKILL (Linux; elsewhere nothing).

    Linux sends it when the *thread* that started the child ends, so the broker must be started from the
    event loop's thread (as :class:`FleetBroker` does), never from a short-lived worker thread.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class FleetBroker:
    """The server's own Mosquitto, for as long as the ``async with`` block runs.

    Example::

        async with FleetBroker(DataDir.open(path)) as broker:
            async with connect(broker.server_settings, will_topic=SERVER_STATUS_TOPIC, ...) as session:
                ...

    Args:
        data: the data directory (its ``broker/`` and ``tls/`` are written).
        options: listeners, names and queueing.
    """

    def __init__(self, data: DataDir, options: BrokerOptions | None = None) -> None:
        self.data = data
        self.options = options or BrokerOptions()
        self.ingest_port = self.options.ingest_port
        self._process: asyncio.subprocess.Process | None = None
        self._account: ServerAccount | None = None

    @property
    def config_file(self) -> Path:
        """The generated ``mosquitto.conf``."""
        return self.data.broker_dir / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        """Mosquitto's log."""
        return self.data.broker_dir / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return None if self._process is None or self._process.returncode is not None else self._process.pid

    @property
    def endpoints(self) -> BrokerEndpoints:
        """The URLs gateways use."""
        host = self.options.host_name
        cert = None if self.options.cert_port is None else f"mqtts://{host}:{self.options.cert_port}"
        return BrokerEndpoints(f"mqtts://{host}:{self.options.gateway_port}", cert)

    @property
    def server_settings(self) -> BrokerSettings:
        """How the server itself connects (loopback listener, its own user).

        Raises:
            SinkError: the broker has not been started.
        """
        if self._account is None or not self.ingest_port:
            raise SinkError("the fleet broker is not running", sink=_SINK)
        return BrokerSettings(
            host="127.0.0.1",
            port=self.ingest_port,
            username=self._account.username,
            password=SecretStr(self._account.password),
            client_id=self._account.username,
        )

    def _render_config(self) -> str:
        pki = FleetPki(self.data.tls_dir)
        options = self.options
        broker_dir = self.data.broker_dir
        access = [
            "allow_anonymous false",
            f"password_file {broker_dir / 'passwd'}",
            f"acl_file {broker_dir / 'acl'}",
        ]
        lines = [
            "# Generated by bmsgate fleet: edits are overwritten at every start.",
            # Started as root, mosquitto would switch to the "mosquitto" user and lose the private files.
            f"user {getpass.getuser()}",
            # Per-listener settings, so that only the gateway listeners force client id = user name: a gateway
            # cannot take over another client's session (the server's persistent ingest session among them) by
            # connecting with its client id. The server's own listener is loopback-only.
            "per_listener_settings true",
            # A gateway's largest message (telemetry, 256 KiB) plus MQTT framing: a bigger packet closes the
            # connection before the broker holds it in memory or hands it to the server.
            f"max_packet_size {_MAX_PACKET_BYTES}",
            "persistence true",
            f"persistence_location {self.data.persistence_dir}/",
            f"autosave_interval {options.autosave_interval}",
            f"max_queued_messages {options.max_queued_messages}",
            f"max_inflight_messages {options.max_inflight_messages}",
            "check_retain_source true",
            "log_dest stderr",
            *(f"log_type {kind}" for kind in ("error", "warning", "notice", "information")),
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
            "",
            "# The server's own connection: loopback only, plain.",
            f"listener {self.ingest_port} 127.0.0.1",
            *access,
            "",
            "# Gateways: TLS, user name = gateway id + password; the client id is forced to the user name.",
            f"listener {options.gateway_port} {options.gateway_host}",
            *access,
            "use_username_as_clientid true",
            f"certfile {pki.server_cert_file}",
            f"keyfile {pki.server_key_file}",
            "tls_version tlsv1.2",
        ]
        if options.cert_port is not None:
            lines += [
                "",
                "# Gateways with a client certificate: its CN is the user name (and the client id).",
                f"listener {options.cert_port} {options.gateway_host}",
                *access,
                "use_username_as_clientid true",
                f"cafile {pki.ca_file}",
                f"certfile {pki.server_cert_file}",
                f"keyfile {pki.server_key_file}",
                f"crlfile {pki.crl_file}",
                "tls_version tlsv1.2",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        if self.data.running_broker_pid() is not None:
            raise SinkError(
                f"a fleet broker already runs for {self.data.root} (pid file {self.data.pid_file})", sink=_SINK
            )
        pki = FleetPki(self.data.tls_dir)
        pki.ensure_ca()
        pki.ensure_server_certificate(default_server_names([self.options.host_name, *self.options.extra_names]))
        self._account = server_account(self.data)
        write_access_files(self.data)
        if not pki.crl_file.exists():
            pki.write_crl(())
        if not self.ingest_port:
            self.ingest_port = free_port()
        write_private(self.config_file, self._render_config())
        endpoints = self.endpoints
        write_private(
            self.data.broker_dir / "endpoint.json",
            json.dumps({"password_url": endpoints.password_url, "cert_url": endpoints.cert_url}) + "\n",
        )
        with contextlib.suppress(OSError):
            if self.log_file.stat().st_size > _MAX_LOG_BYTES:
                self.log_file.replace(self.log_file.with_suffix(".log.1"))

    async def start(self) -> None:
        """Write the files, start Mosquitto and wait until every listener accepts connections.

        Raises:
            SinkError: mosquitto is missing, a port is taken, or it did not start (with its log).
            DeviceError: ``devices.json`` is damaged.
            TlsError: the TLS material cannot be made.
        """
        binary = find_mosquitto()
        if binary is None:
            raise SinkError("mosquitto is not installed (apt install mosquitto)", sink=_SINK)
        await asyncio.to_thread(self._prepare)
        start_of_log = self.log_file.stat().st_size if self.log_file.exists() else 0
        try:
            with self.log_file.open("ab") as log:
                self._process = await asyncio.create_subprocess_exec(
                    str(binary),
                    "-c",
                    str(self.config_file),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                    # Out of the terminal's process group: Ctrl-C reaches the server, which stops the broker
                    # last, after the ingest has committed what it acknowledged (not the broker first).
                    start_new_session=True,
                )
        except OSError as exc:
            raise SinkError(f"cannot run {binary}: {exc}", sink=_SINK) from exc
        process = self._process
        try:
            write_private(self.data.pid_file, f"{process.pid}\n")
            await self._wait_running(process, start_of_log)
        except SinkError as exc:
            await self.stop()
            with self.log_file.open("rb") as log:
                log.seek(start_of_log)
                detail = log.read(4096).decode(errors="replace").strip()
            raise SinkError(f"{exc}: {detail}", sink=_SINK) from exc
        except BaseException:
            await self.stop()
            raise
        _LOGGER.info(
            "fleet broker (pid %d): gateways on %s, server on 127.0.0.1:%d",
            process.pid,
            ", ".join(url for url in (self.endpoints.password_url, self.endpoints.cert_url) if url),
            self.ingest_port,
        )

    async def _wait_running(self, process: asyncio.subprocess.Process, start_of_log: int) -> None:
        """Wait for Mosquitto's "running" line: every listener is bound and its signal handlers are set.

        Not a TCP probe: a port taken by another program accepts the probe while Mosquitto fails to bind
        it, and a SIGHUP sent before the handlers are installed would kill the broker.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT
        while True:
            with self.log_file.open("rb") as log:
                log.seek(start_of_log)
                if _RUNNING_LINE.search(log.read()):
                    return
            if process.returncode is not None:
                raise SinkError(f"mosquitto exited during start-up (status {process.returncode})", sink=_SINK)
            if loop.time() > deadline:
                raise SinkError(f"mosquitto did not start within {_START_TIMEOUT:g} s", sink=_SINK)
            await asyncio.sleep(0.02)

    async def reload(self) -> None:
        """Rewrite the access files from ``devices.json`` and have the broker apply them now.

        Raises:
            SinkError: the broker is not running or did not confirm the reload.
            DeviceError: ``devices.json`` is damaged.
        """
        pid = self.pid
        if pid is None:
            raise SinkError("the fleet broker is not running", sink=_SINK)
        await asyncio.to_thread(write_access_files, self.data)
        await _signal_reload(pid, self.log_file)

    async def watch(self) -> None:
        """Return never while the broker runs; raise when it dies on its own (for the server's task group).

        Raises:
            SinkError: Mosquitto exited without being stopped (with the end of its log).
        """
        process = self._process
        if process is None:
            raise SinkError("the fleet broker is not running", sink=_SINK)
        code = await process.wait()
        if self._process is not process:  # stop() was called: not a failure
            await asyncio.Event().wait()
        self._process = None
        with contextlib.suppress(FileNotFoundError):
            self.data.pid_file.unlink()
        tail = self.log_file.read_bytes()[-1024:].decode(errors="replace").strip().splitlines()[-3:]
        raise SinkError(f"mosquitto exited unexpectedly (status {code}): {' | '.join(tail)}", sink=_SINK)

    async def stop(self) -> None:
        """Stop the broker: SIGTERM (it saves its persistence), a bounded wait, then SIGKILL. Idempotent."""
        process, self._process = self._process, None
        try:
            if process is not None:
                await terminate_process(process)
        finally:
            if process is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.data.pid_file.unlink()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
