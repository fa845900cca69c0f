"""Many simulated gateways on one event loop: connect, retained state, telemetry, faults, drop-offs, report.

Scheduling is by slots: the interval is cut into ticks and gateway *i* publishes in tick ``i mod ticks``,
so each tick touches only its own gateways (50,000 gateways at 10 s are 250 per 50 ms tick) instead of
scanning all of them. Faults and drop-offs are drawn per gateway per interval from one seeded generator.

A dropped gateway's socket is cut without DISCONNECT, so the broker publishes its retained ``offline``
will; it comes back after 2–5 intervals with a new connection, ``online`` and its retained state again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import resource
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from bmsgate.fleet.protocol import GATEWAY_ID_PATTERN, OFFLINE, ONLINE, is_gateway_id
from bmsgate.fleet.simulate.messages import GatewayTemplate, build_template
from bmsgate.fleet.simulate.wire import ConnectOptions, RawGatewayConnection, SimulationError

__all__ = ["GatewayLogin", "SimulationReport", "SimulationSettings", "run_simulation"]

_TICK_S: Final = 0.05
_CONNECT_BATCH: Final = 100
"""Connections opened at once: not thousands of TCP handshakes in one burst."""
_CONNECT_TIMEOUT_S: Final = 30.0
_DRAIN_TIMEOUT_S: Final = 10.0
_AWAY_INTERVALS: Final = (2, 6)
_FAULT_INTERVALS: Final = 3
"""A fault clears after this many intervals."""


@dataclass(frozen=True, slots=True)
class GatewayLogin:
    """One gateway's identity on the broker."""

    gateway: str
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        """Refuse a gateway id the protocol does not allow, before anything connects."""
        if not is_gateway_id(self.gateway):
            raise SimulationError(f"not a gateway id: {self.gateway!r} (expected {GATEWAY_ID_PATTERN})")


@dataclass(frozen=True, slots=True)
class SimulationSettings:
    """How many gateways, how often, where to, and how unreliable they are."""

    logins: Sequence[GatewayLogin]
    interval_s: float
    host: str
    port: int
    more_brokers: Sequence[tuple[str, int]] = ()
    """More broker addresses (``(host, port)``, e.g. the other nodes of a cluster): the gateways take turns,
    gateway *i* on address ``i mod n`` of ``[(host, port), *more_brokers]``, and stay on theirs."""
    duration_s: float | None = None
    """None: until cancelled."""
    fault_ratio: float = 0.0
    """Share of the gateways that raise an alarm per interval (cleared :data:`_FAULT_INTERVALS` later)."""
    churn_ratio: float = 0.0
    """Share of the connected gateways whose socket is cut per interval (they come back later)."""
    seed: int = 1
    tls: ssl.SSLContext | None = None
    """TLS to the broker (mqtts://); None: plain TCP."""


@dataclass(slots=True)
class SimulationReport:
    """What was sent; ``unconfirmed`` is what was in flight (no PUBACK) when a connection was cut."""

    seconds: float = 0.0
    messages: int = 0
    telemetry: int = 0
    events: int = 0
    bytes: int = 0
    connects: int = 0
    drops: int = 0
    acked: int = 0
    unconfirmed: int = 0
    connect_failures: int = 0
    connect_s: float = 0.0
    """Seconds the first connection of every gateway took (the start-up, before the first telemetry)."""
    cpu_s: float = 0.0
    dropped_gateways: set[str] = field(default_factory=set)

    def line(self) -> str:
        """A one-line summary."""
        return (
            f"{self.seconds:7.1f}s messages={self.messages} telemetry={self.telemetry} events={self.events} "
            f"bytes={self.bytes} connects={self.connects} drops={self.drops} acked={self.acked} "
            f"unconfirmed={self.unconfirmed} connect_failures={self.connect_failures} cpu_s={self.cpu_s:.2f}"
        )


class _Gateway:
    __slots__ = ("address", "connection", "fault_until", "login", "return_at", "seq", "template")

    def __init__(self, login: GatewayLogin, template: GatewayTemplate, address: tuple[str, int]) -> None:
        self.login = login
        self.template = template
        self.address = address
        self.connection: RawGatewayConnection | None = None
        self.seq = 0
        self.return_at: float | None = None
        self.fault_until: float | None = None


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Simulation:
    def __init__(self, settings: SimulationSettings, on_second: Callable[[SimulationReport], None] | None) -> None:
        self.settings = settings
        self.report = SimulationReport()
        self.rng = random.Random(settings.seed)
        brokers = [(settings.host, settings.port), *settings.more_brokers]
        self.gateways = [
            _Gateway(
                login,
                build_template(login.gateway, settings.interval_s, seed=settings.seed),
                brokers[index % len(brokers)],
            )
            for index, login in enumerate(settings.logins)
        ]
        self.ticks = max(1, round(settings.interval_s / _TICK_S))
        self.keepalive_s = min(65535, max(60, int(settings.interval_s * 3)))
        self.on_second = on_second
        self.started = time.monotonic()
        self.cpu_start = _cpu_s()

    def _lost(self, gateway: _Gateway, connection: RawGatewayConnection) -> None:
        self.report.unconfirmed += connection.in_flight
        self.report.acked += connection.acked
        connection.acked = 0
        if gateway.connection is connection:
            gateway.connection = None
            if gateway.return_at is None:  # cut by the broker, not by us: try again soon
                gateway.return_at = time.monotonic() + self.settings.interval_s

    async def connect(self, gateway: _Gateway) -> None:
        loop = asyncio.get_running_loop()
        options = ConnectOptions(
            client_id=gateway.login.gateway,
            will_topic=gateway.template.availability_topic,
            will_payload=OFFLINE,
            keepalive_s=self.keepalive_s,
            username=gateway.login.username,
            password=gateway.login.password,
        )
        holder: list[RawGatewayConnection] = []

        def factory() -> RawGatewayConnection:
            connection = RawGatewayConnection(options, lambda lost: self._lost(gateway, lost))
            holder.append(connection)
            return connection

        try:
            host, port = gateway.address
            _, connection = await loop.create_connection(factory, host, port, ssl=self.settings.tls)
            await asyncio.wait_for(connection.connected, _CONNECT_TIMEOUT_S)
        except (OSError, SimulationError, TimeoutError):
            self.report.connect_failures += 1
            for connection in holder:
                connection.abort()
            gateway.return_at = time.monotonic() + self.settings.interval_s
            return
        gateway.connection = connection
        gateway.return_at = None
        self.report.connects += 1
        self._send(connection, gateway.template.availability_topic.encode(), ONLINE, retain=True)
        self._send(connection, gateway.template.state_topic, gateway.template.state, retain=True)

    def _send(self, connection: RawGatewayConnection, name: bytes, payload: bytes, *, retain: bool = False) -> None:
        written = connection.publish(name, payload, retain=retain)
        if written:
            self.report.messages += 1
            self.report.bytes += written

    async def connect_all(self, gateways: Sequence[_Gateway]) -> None:
        for first in range(0, len(gateways), _CONNECT_BATCH):
            await asyncio.gather(*(self.connect(gateway) for gateway in gateways[first : first + _CONNECT_BATCH]))

    def publish_slot(self, slot: int, now: float, wall: float) -> list[_Gateway]:
        """Publish for the gateways of ``slot``; returns those due to reconnect."""
        returning = []
        settings = self.settings
        for gateway in self.gateways[slot :: self.ticks]:
            connection = gateway.connection
            if connection is None:
                if gateway.return_at is not None and gateway.return_at <= now:
                    gateway.return_at = now + 3600  # until the connect attempt decides
                    returning.append(gateway)
                continue
            template = gateway.template
            gateway.seq += 1
            self._send(connection, template.telemetry_topic, template.telemetry(gateway.seq, wall))
            self.report.telemetry += 1
            if gateway.fault_until is not None and gateway.fault_until <= now:
                gateway.fault_until = None
                gateway.seq += 1
                self._send(connection, template.event_topic, template.alarm_event(gateway.seq, wall, raised=False))
                self.report.events += 1
            elif settings.fault_ratio and gateway.fault_until is None and self.rng.random() < settings.fault_ratio:
                gateway.fault_until = now + _FAULT_INTERVALS * settings.interval_s
                gateway.seq += 1
                self._send(connection, template.event_topic, template.alarm_event(gateway.seq, wall, raised=True))
                self.report.events += 1
            if settings.churn_ratio and self.rng.random() < settings.churn_ratio:
                gateway.return_at = now + self.rng.uniform(*_AWAY_INTERVALS) * settings.interval_s
                self.report.drops += 1
                self.report.dropped_gateways.add(template.gateway)
                connection.abort()
        return returning

    def snapshot(self) -> SimulationReport:
        report = self.report
        report.seconds = time.monotonic() - self.started
        report.cpu_s = _cpu_s() - self.cpu_start
        live = sum(gateway.connection.acked for gateway in self.gateways if gateway.connection is not None)
        return dataclasses.replace(report, acked=report.acked + live, dropped_gateways=set(report.dropped_gateways))

    async def run(self) -> SimulationReport:
        connecting = time.monotonic()
        await self.connect_all(self.gateways)
        self.report.connect_s = time.monotonic() - connecting
        start = time.monotonic()
        end = None if self.settings.duration_s is None else start + self.settings.duration_s
        next_report = start + 1.0
        tick = 0
        reconnects: set[asyncio.Task[None]] = set()
        try:
            while end is None or time.monotonic() < end:
                due = start + tick * _TICK_S
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.monotonic()
                for gateway in self.publish_slot(tick % self.ticks, now, time.time()):
                    task = asyncio.create_task(self.connect(gateway))
                    reconnects.add(task)
                    task.add_done_callback(reconnects.discard)
                if self.keepalive_s < self.settings.interval_s and tick % self.ticks == 0:
                    for gateway in self.gateways:  # pragma: no cover - the keepalive is at least 3 intervals
                        if gateway.connection is not None:
                            gateway.connection.ping()
                if self.on_second is not None and now >= next_report:
                    next_report += 1.0
                    self.on_second(self.snapshot())
                tick += 1
        finally:
            for task in list(reconnects):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*reconnects, return_exceptions=True)
            await self._drain()
        return self.snapshot()

    async def _drain(self) -> None:
        """Wait (bounded) for the last PUBACKs, then disconnect cleanly (no last will)."""
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 - a poll of counters
            gateway.connection is not None and gateway.connection.in_flight for gateway in self.gateways
        ):
            await asyncio.sleep(0.05)
        for gateway in self.gateways:
            connection = gateway.connection
            if connection is not None:
                gateway.connection = None
                gateway.return_at = -1.0  # ours: not a drop
                self.report.acked += connection.acked
                self.report.unconfirmed += connection.in_flight
                connection.acked = connection.in_flight = 0
                connection.disconnect()
        await asyncio.sleep(0)


async def run_simulation(
    settings: SimulationSettings, on_second: Callable[[SimulationReport], None] | None = None
) -> SimulationReport:
    """Run the simulated fleet for ``settings.duration_s`` (or until cancelled); the final report.

    ``on_second`` gets a report snapshot about every second. A gateway that cannot connect is counted in
    ``connect_failures`` and retried one interval later.
    """
    return await _Simulation(settings, on_second).run()
