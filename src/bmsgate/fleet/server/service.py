"""``bmsgate fleet serve``: the whole fleet server in one process, embedded defaults, nothing to configure.

It owns, for as long as it runs: the broker (its own Mosquitto with per-gateway ACLs and TLS, unless
``broker_url`` names an existing one), the store (SQLite in the data directory, or PostgreSQL), the ingest,
the alarm engine with its notifier, store maintenance (rollups, retention), the command publisher, and the
HTTP server with the API and dashboard. Leaving the ``async with`` block (SIGTERM in the command) stops them
in reverse order, the broker last, so nothing the ingest acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bmsgate.errors import BmsgateError, SinkError
from bmsgate.fleet.protocol import Channel, CommandMessage, encode, topic
from bmsgate.fleet.server.alarm_rules import AlarmSettings
from bmsgate.fleet.server.alarms import AlarmEngine
from bmsgate.fleet.server.api.app import create_app
from bmsgate.fleet.server.api.artifacts import ArtifactFiles
from bmsgate.fleet.server.api.server import HttpServer
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.broker import SERVER_STATUS_TOPIC, BrokerOptions, FleetBroker
from bmsgate.fleet.server.datadir import DataDir
from bmsgate.fleet.server.devices import DeviceRegistry
from bmsgate.fleet.server.ingest import Ingest, IngestSource, IngestWorkers
from bmsgate.fleet.server.live import LiveFeed
from bmsgate.fleet.server.notify import Notifier, NotifySettings
from bmsgate.fleet.server.rollouts.service import RolloutService, SignDesired
from bmsgate.fleet.server.store import open_store
from bmsgate.fleet.server.store.maintenance import maintain
from bmsgate.fleet.server.store.repository import Availability, IngestBatch, Repository
from bmsgate.fleet.server.store.settings import StoreSettings
from bmsgate.fleet.server.tls import FleetPki, default_server_names
from bmsgate.mqtt.client import MqttSession, connect
from bmsgate.mqtt.settings import BrokerSettings
from bmsgate.packs.repository import PackRepository

if TYPE_CHECKING:
    from bmsgate.fleet.server.leadership import Leadership
    from bmsgate.fleet.server.nats_broadcast import CommittedBroadcast

__all__ = ["CommandPublisher", "FleetServer", "FleetServerSettings", "RunningServer"]

_log = logging.getLogger(__name__)
_COMMAND_CLIENT_ID: Final = "bmsgate-fleet-commands"
_RESIGN_EVERY_S: Final = 600.0


class FleetServerSettings(BaseModel):
    """Everything ``fleet serve`` can be told; every field has a working default."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    data_dir: Path | None = None
    """Default: ``$XDG_STATE_HOME/bmsgate/fleet`` (else ``~/.local/state/bmsgate/fleet``)."""
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    postgres_url: str | None = None
    """Use PostgreSQL (``postgresql://user:pass@host/db``) instead of SQLite."""
    broker_url: str | None = None
    """Use an existing broker (``mqtt://user:pass@host:port``) instead of starting Mosquitto."""
    broker_hosts: list[str] = []
    """More addresses of that broker tier (``host:port``; :attr:`BrokerSettings.hosts`): the server's own MQTT
    clients (ingest on MQTT, commands, desired states) try them when ``broker_url`` does not connect."""
    gateway_port: int = Field(default=8883, ge=0, le=65535)
    """The own broker's TLS listener for gateways (password login)."""
    cert_port: int | None = Field(default=8884, ge=0, le=65535)
    """The own broker's mutual-TLS listener (client certificates); None: off."""
    gateway_host: str = "0.0.0.0"
    artifacts_port: int | None = Field(default=None, ge=0, le=65535)
    """The pack repository's HTTPS listener (TUF metadata and artifacts for gateways, on ``gateway_host``,
    certificate from the fleet CA); None: off. ``fleet serve`` turns it on at 8443; 0: a free port."""
    public_host: str | None = None
    """The name gateways reach this server by (credentials files carry it); default: this host's name."""
    tile_url: str | None = None
    """A map tile server URL template; default off (the map draws an offline country outline)."""
    tile_attribution: str = ""
    retention: dict[str, float] = {}
    """Overrides of the store's retention settings (``raw_retention_days``, ... of ``StoreSettings``)."""
    alarms: AlarmSettings = AlarmSettings()
    notify: NotifySettings = NotifySettings()
    ingest_workers: int = Field(default=1, ge=1, le=64)
    """Ingest processes: 1 runs ingest in the server process (best on 2 cores); N > 1 starts N worker
    processes on a shared subscription (see :mod:`bmsgate.fleet.server.ingest.workers`)."""
    cluster: list[str] = []
    """Cluster mode: the NATS cluster's client URLs (``nats://host:4222``). Ingest then reads one shared
    JetStream consumer (:mod:`bmsgate.fleet.server.nats_ingest`) instead of MQTT; ``broker_url`` names the
    cluster's MQTT endpoint (commands, desired states). Needs the ``cluster`` extra (nats-py)."""
    processes: int = Field(default=1, ge=1, le=64)
    """Cluster mode only: server processes sharing the HTTP port (:mod:`bmsgate.fleet.server.processes`
    starts and supervises them; each is told its ``process_index``)."""
    process_index: int | None = Field(default=None, ge=0, lt=64)
    """Set in each process of a ``processes`` group: bind the HTTP port with ``SO_REUSEPORT``, fan committed
    batches out over NATS (:mod:`.nats_broadcast`) and run the singletons only while leading
    (:mod:`.leadership`)."""

    @field_validator("cluster")
    @classmethod
    def _check_cluster_urls(cls, urls: list[str]) -> list[str]:
        for index, url in enumerate(urls):
            if not url.startswith(("nats://", "tls://")) or len(url.split("://", 1)[1]) == 0:
                raise ValueError(f"cluster[{index}]: not a NATS URL: {url!r} (expected nats://host:port)")
        return urls

    @field_validator("broker_hosts")
    @classmethod
    def _check_broker_hosts(cls, hosts: list[str]) -> list[str]:
        try:
            BrokerSettings(hosts=hosts)  # the same rules (and message: hosts[i]) as a gateway's
        except ValidationError as exc:
            raise ValueError(f"broker_{exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        return hosts

    @model_validator(mode="after")
    def _check_cluster(self) -> Self:
        if self.broker_hosts and self.broker_url is None:
            raise ValueError("broker_hosts needs broker_url (the first address of that broker)")
        if self.cluster and self.broker_url is None:
            raise ValueError("cluster needs broker_url too (the NATS cluster's MQTT endpoint, mqtt://host:1883)")
        if (self.processes > 1 or self.process_index is not None) and (not self.cluster or not self.postgres_url):
            raise ValueError("processes: several server processes need cluster mode (cluster and postgres_url)")
        if (self.processes > 1 or self.process_index is not None) and self.ingest_workers > 1:
            raise ValueError("processes: each server process ingests itself; ingest_workers must be 1")
        return self

    @property
    def member(self) -> bool:
        """One process of a ``processes`` group (leader election and the NATS fan-out on)."""
        return self.process_index is not None


class CommandPublisher:
    """Publishes commands to gateways on one MQTT session, connected on first use and again after a failure."""

    def __init__(self, broker: BrokerSettings, *, client_id: str = _COMMAND_CLIENT_ID) -> None:
        self._broker = broker
        self._client_id = client_id
        self._session: MqttSession | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    async def send(self, gateway_id: str, command: CommandMessage) -> None:
        """Publish one command (QoS 1, not retained: an offline gateway gets it from its persistent session).

        Raises:
            SinkError: the broker cannot be reached (the API answers 503).
        """
        async with self._lock:
            for attempt in (1, 2):
                session = await self._connected()
                try:
                    await session.publish(topic(gateway_id, Channel.COMMAND), encode(command), retain=False, qos=1)
                except SinkError:
                    await self._close()
                    if attempt == 2:
                        raise
                else:
                    return

    async def _connected(self) -> MqttSession:
        if self._session is None:
            stack = contextlib.AsyncExitStack()
            self._session = await stack.enter_async_context(
                connect(
                    self._broker,
                    will_topic=f"{SERVER_STATUS_TOPIC}/commands",
                    will_payload="offline",
                    client_id=self._client_id,
                )
            )
            self._stack = stack
        return self._session

    async def _close(self) -> None:
        stack, self._stack, self._session = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(BmsgateError):
                await stack.aclose()

    async def close(self) -> None:
        """Disconnect (idempotent)."""
        async with self._lock:
            await self._close()


@dataclasses.dataclass(slots=True)
class RunningServer:
    """What a started server offers its owner (the command prints it; tests and the demo use it)."""

    data: DataDir
    url: str
    """The dashboard and API base URL."""
    admin_token: str | None
    """The first admin token, only on the very first start of a data directory (shown once)."""
    store: Repository
    ingest: Ingest | IngestWorkers
    """The in-process ingest, or the worker processes (both offer ``counters`` and ``connected``)."""
    alarms: AlarmEngine
    feed: LiveFeed
    broker: FleetBroker | None
    ingest_broker: BrokerSettings
    """How the server itself reaches the broker (the demo's simulated gateways use the gateway URLs)."""
    failure: asyncio.Future[BaseException]
    """Resolves when a long-lived task (ingest, alarms, maintenance, notifier) stopped by itself: the
    server is then no longer whole, and its owner should stop it and say why."""
    packs: PackRepository | None = None
    artifacts_url: str | None = None
    """The pack repository's HTTPS base URL for gateways (None: the listener is off)."""
    leadership: Leadership | None = None
    """In a ``processes`` group: whether this process leads (runs the singletons)."""
    broadcast: CommittedBroadcast | None = None
    """In a ``processes`` group: the committed-batch fan-out feeding this process's live feed and alarms."""


class FleetServer:
    """The composed server: ``async with FleetServer(settings) as running: ...`` runs it."""

    def __init__(self, settings: FleetServerSettings | None = None, *, sign_desired: SignDesired | None = None) -> None:
        self.settings = settings or FleetServerSettings()
        self.sign_desired = sign_desired
        """Signs desired states; None: the pack repository's online timestamp key (``PackRepository.sign_desired``)."""
        self._stack = contextlib.AsyncExitStack()
        self._tasks: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> RunningServer:
        try:
            return await self._start()
        except BaseException:
            await self._stack.aclose()
            raise

    async def __aexit__(self, *_exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> RunningServer:
        settings = self.settings
        data = DataDir.open(settings.data_dir)
        admin_token = data.ensure_admin_token()
        broker: FleetBroker | None = None
        if settings.broker_url is None:
            options = BrokerOptions(
                gateway_host=settings.gateway_host,
                gateway_port=settings.gateway_port,
                cert_port=settings.cert_port,
                public_host=settings.public_host,
            )
            broker = await self._stack.enter_async_context(FleetBroker(data, options))
            ingest_broker = broker.server_settings
        else:
            ingest_broker = BrokerSettings.model_validate({"url": settings.broker_url, "hosts": settings.broker_hosts})
        where: dict[str, Any] = (
            {"postgres_url": settings.postgres_url} if settings.postgres_url else {"data_dir": data.root}
        )
        store_settings = StoreSettings.model_validate({**settings.retention, **where})
        store = await open_store(store_settings)
        self._stack.push_async_callback(store.close)
        feed = LiveFeed()
        leadership: Leadership | None = None
        if settings.member:
            from bmsgate.fleet.server.leadership import LeaderOnly, Leadership  # noqa: PLC0415 - PostgreSQL only
            from bmsgate.fleet.server.nats_broadcast import (  # noqa: PLC0415 - the cluster extra
                CommittedBroadcast,
                SharedLiveFeed,
            )

            assert settings.postgres_url is not None  # the settings' validator
            feed = SharedLiveFeed()
            leadership = Leadership(settings.postgres_url)
        notifier = Notifier(settings.notify, store) if _notifies(settings.notify) else None
        alarms = AlarmEngine(
            store,
            settings=settings.alarms,
            feed=feed,
            notifier=notifier,
            term=leadership.current_term if leadership is not None else None,
        )
        source: BrokerSettings | IngestSource = ingest_broker
        if settings.cluster:
            from bmsgate.fleet.server.nats_ingest import JetStreamSource  # noqa: PLC0415 - the cluster extra

            source = JetStreamSource(servers=tuple(settings.cluster))
        broadcast: CommittedBroadcast | None = None
        ingest: Ingest | IngestWorkers
        if leadership is not None:
            broadcast = CommittedBroadcast(
                settings.cluster, feed=feed, observers=[LeaderOnly(alarms, leadership)], forgotten=alarms.forget
            )
            ingest = Ingest(store, source, committed=broadcast.committed)  # feed and alarms: from the broadcast
        elif settings.ingest_workers > 1:
            ingest = IngestWorkers(
                store_settings, source, workers=settings.ingest_workers, feed=feed, observers=[alarms]
            )
        else:
            ingest = Ingest(store, source, feed=feed, observers=[alarms])
        commands = CommandPublisher(
            ingest_broker,
            client_id=_COMMAND_CLIENT_ID if not settings.member else f"{_COMMAND_CLIENT_ID}-{settings.process_index}",
        )
        self._stack.push_async_callback(commands.close)
        packs = PackRepository(data.root / "tuf")
        rollouts = RolloutService(
            store,
            self.sign_desired or packs.sign_desired,
            feed=feed,
            signing_ready=(lambda: None) if self.sign_desired is not None else lambda: _packs_unready(packs),
        )
        app = create_app(
            store=store,
            tokens=data.tokens,
            feed=feed,
            send_command=commands.send,
            settings=ApiSettings(tile_url=settings.tile_url, tile_attribution=settings.tile_attribution),
            alarm_deleted=alarms.forget if broadcast is None else broadcast.forget_alarm,
            rollouts=rollouts,
        )

        def singletons() -> list[Coroutine[Any, Any, Any]]:
            """What exactly one process of a store runs (in a ``processes`` group: the leader)."""
            return [
                alarms.run(),
                maintain(store),
                _keep_packs_signed(packs),
                rollouts.run(ingest_broker),
                *([notifier.run()] if notifier is not None else []),
            ]

        if leadership is not None and broadcast is not None:
            jobs = [ingest.run(), broadcast.run(), leadership.run(lambda: _together(singletons()))]
        else:
            jobs = [ingest.run(), *singletons()]
        failure = await self._stack.enter_async_context(
            _background(
                *jobs,
                *([broker.watch(), _revoked_go_offline(data, store)] if broker is not None else []),
            )
        )
        http = HttpServer(app, settings.http_host, settings.http_port, reuse_port=settings.member)
        await http.start()
        self._stack.push_async_callback(http.stop)
        artifacts_url = (
            await self._serve_packs(data, packs, own_broker=broker is not None)
            if settings.artifacts_port is not None
            else None
        )
        return RunningServer(
            data=data,
            url=http.url,
            admin_token=admin_token,
            store=store,
            ingest=ingest,
            alarms=alarms,
            feed=feed,
            broker=broker,
            ingest_broker=ingest_broker,
            failure=failure,
            packs=packs,
            artifacts_url=artifacts_url,
            leadership=leadership,
            broadcast=broadcast,
        )

    async def _serve_packs(self, data: DataDir, packs: PackRepository, *, own_broker: bool) -> str:
        """Start the HTTPS listener of the pack repository; returns its base URL for gateways.

        It presents the broker's certificate (same host, same fleet CA); with an external broker the
        certificate is made here.
        """
        settings = self.settings
        host = BrokerOptions(public_host=settings.public_host).host_name
        pki = FleetPki(data.tls_dir)
        if not own_broker:
            pki.ensure_ca()
            pki.ensure_server_certificate(default_server_names([host]))
        server = HttpServer(
            ArtifactFiles(packs.directory),
            settings.gateway_host,
            settings.artifacts_port or 0,
            tls_cert_file=pki.server_cert_file,
            tls_key_file=pki.server_key_file,
            reuse_port=settings.member,
        )
        await server.start()
        self._stack.push_async_callback(server.stop)
        url = f"https://{host}:{server.port}/tuf"
        packs.write_endpoint(url)
        _log.info("pack repository on %s", url)
        return url


async def _keep_packs_signed(packs: PackRepository, *, every_s: float = _RESIGN_EVERY_S) -> None:
    """Re-sign snapshot and timestamp before they expire (their keys are online; targets' are not)."""
    while True:
        try:
            if await asyncio.to_thread(packs.refresh):
                _log.info("pack repository: snapshot/timestamp re-signed")
        except BmsgateError as exc:
            _log.warning("pack repository: could not re-sign snapshot/timestamp (retrying): %s", exc)
        await asyncio.sleep(every_s)


def _packs_unready(packs: PackRepository) -> str | None:
    """Why desired states cannot be signed yet (None: they can)."""
    if packs.initialised:
        return None
    return "the pack repository has no root yet (bmsgate fleet pack init, see docs/packs.md)"


def _notifies(settings: NotifySettings) -> bool:
    return bool(settings.webhooks) or settings.smtp is not None


async def _revoked_go_offline(data: DataDir, store: Repository, *, every_s: float = 2.0) -> None:
    """Mark a revoked gateway offline at once.

    The broker closes a revoked gateway's session on reload but publishes no last will for it (the will
    fails the ACL it no longer has), so the store would show it online until the no-data alarm.
    """
    registry = DeviceRegistry(data.devices_file)
    marked: dict[str, float | None] = {}
    stamp: tuple[int, int] | None = None
    while True:
        with contextlib.suppress(OSError):
            status = data.devices_file.stat()
            if (status.st_mtime_ns, status.st_size) != stamp:
                stamp = (status.st_mtime_ns, status.st_size)
                now = time.time()
                batch = IngestBatch()
                for device in registry.list():
                    if device.revoked and marked.get(device.gateway_id) != device.revoked_at:
                        batch.availability.append((device.gateway_id, Availability.OFFLINE, now))
                        marked[device.gateway_id] = device.revoked_at
                if batch.availability:
                    try:
                        await store.write_batch(batch)
                    except BmsgateError as exc:
                        _log.warning("could not mark revoked gateways offline (retrying): %s", exc)
                        stamp = None
                        for gateway_id, _, _ in batch.availability:
                            marked.pop(gateway_id, None)
        await asyncio.sleep(every_s)


async def _together(jobs: list[Coroutine[Any, Any, Any]]) -> None:
    """Run the jobs until one fails (then the others are cancelled and the failure raised)."""
    async with asyncio.TaskGroup() as group:
        for job in jobs:
            group.create_task(job)


@contextlib.asynccontextmanager
async def _background(*jobs: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Future[BaseException]]:
    """Run the long-lived tasks; yields a future that resolves when one stops by itself (they never should).

    On exit they are cancelled and awaited.
    """
    failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    def stopped(task: asyncio.Task[Any]) -> None:
        if task.cancelled() or failure.done():
            return
        exc = task.exception() or BmsgateError(f"{task.get_name()} ended unexpectedly")
        _log.error("fleet server task %s stopped: %s", task.get_name(), exc, exc_info=exc)
        failure.set_result(exc)

    tasks = [asyncio.create_task(job, name=f"fleet-{getattr(job, '__qualname__', 'task')}") for job in jobs]
    for task in tasks:
        task.add_done_callback(stopped)
    try:
        yield failure
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
