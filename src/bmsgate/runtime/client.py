"""BatteryClient: one protocol definition + one transport = snapshots.

This is the library API for scripting::

    import asyncio, json
    from bmsgate import BatteryClient, get_protocol
    from bmsgate.transports.simulator import SimulatorTransport

    async def main() -> None:
        jbd = get_protocol("jbd")
        async with BatteryClient(jbd, SimulatorTransport(jbd), battery_id="house") as client:
            print(json.dumps(await client.read_dict(), indent=2))

    asyncio.run(main())

One poll sends the definition's requests in order (never pipelined), waits for each matching reply
within a per-request timeout, retries with backoff, and decodes everything into one snapshot within
an overall deadline. The client keeps link statistics for diagnostics and Home Assistant.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from types import TracebackType
from typing import Any, Final, Literal, Self

from bmsgate.errors import (
    CommandRefused,
    ConnectError,
    DecodeError,
    DeviceError,
    DeviceTimeout,
    FrameError,
    ProtocolError,
    TransportError,
)
from bmsgate.model import BatterySnapshot, DeviceInfo
from bmsgate.protocols.codec import CompiledProtocol
from bmsgate.protocols.definition import RequestSpec
from bmsgate.protocols.framing import Frame, FrameAssembler
from bmsgate.transports.base import Transport

__all__ = ["BatteryClient", "ClientOptions", "LinkStatistics"]

_LOGGER = logging.getLogger(__name__)
_HISTORY: Final = 100


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    """How a client polls.

    Attributes:
        request_timeout: seconds to wait for one reply (a definition may set its own per request).
        retries: extra attempts per request after a timeout or a corrupt reply.
        retry_backoff: first pause between attempts; doubles each time.
        poll_deadline: a whole poll must finish within this many seconds.
        connection: ``keep`` the link open between polls, or connect ``per_poll`` (frees the BMS for the
            phone app and shares scarce BLE connection slots).
        mosfet_sensor: ``ntc1`` when the first NTC really measures the MOSFETs (some JBD boards).
    """

    request_timeout: float = 2.0
    retries: int = 2
    retry_backoff: float = 0.2
    poll_deadline: float = 15.0
    connection: Literal["keep", "per_poll"] = "keep"
    mosfet_sensor: Literal["none", "ntc1"] = "none"
    confirm_timeout: float = 5.0


@dataclasses.dataclass(slots=True)
class LinkStatistics:
    """Link quality of one battery, as outputs and the console show it."""

    polls: int = 0
    failures: int = 0
    last_error: str | None = None
    last_success: float | None = None
    last_duration: float | None = None
    rssi: int | None = None
    connects: int = 0
    frames_rejected: int = 0
    _history: collections.deque[bool] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=_HISTORY))

    def record(self, ok: bool, *, error: str | None = None) -> None:
        """Note one poll's outcome."""
        self.polls += 1
        self._history.append(ok)
        if ok:
            self.last_success = time.time()
        else:
            self.failures += 1
            self.last_error = error

    @property
    def success_rate(self) -> float | None:
        """Share of the last 100 polls that succeeded (0..1), None before the first poll."""
        if not self._history:
            return None
        return sum(self._history) / len(self._history)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        rate = self.success_rate
        return {
            "polls": self.polls,
            "failures": self.failures,
            "success_rate": None if rate is None else round(rate, 3),
            "last_error": self.last_error,
            "last_success": self.last_success,
            "last_duration": None if self.last_duration is None else round(self.last_duration, 3),
            "rssi": self.rssi,
            "connects": self.connects,
            "frames_rejected": self.frames_rejected,
        }


class BatteryClient:
    """Polls one battery: sends the query commands, reads the notify responses, returns snapshots."""

    def __init__(
        self,
        protocol: CompiledProtocol,
        transport: Transport,
        *,
        battery_id: str = "battery",
        options: ClientOptions | None = None,
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.battery_id = battery_id
        transport.battery_id = transport.battery_id or battery_id
        self.options = options or ClientOptions()
        self.stats = LinkStatistics()
        self._assembler: FrameAssembler = protocol.new_assembler()
        self._device: DeviceInfo | None = None
        self._connection_frames: dict[int, Frame] = {}
        self._backlog: collections.deque[Frame] = collections.deque()
        self._streaming_started = False
        self._lock = asyncio.Lock()
        self.last_snapshot: BatterySnapshot | None = None

    # -- connection ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.options.connection == "keep":
            await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the transport (resets per-connection state)."""
        if self.transport.is_open:
            return
        self._assembler.reset()
        self._connection_frames.clear()
        self._streaming_started = False
        await self.transport.open()
        self.stats.connects += 1
        _LOGGER.debug("%s: connected via %s", self.battery_id, self.transport.description)

    async def close(self) -> None:
        """Close the transport."""
        await self.transport.close()

    # -- polling ------------------------------------------------------------------------------------

    async def read(self) -> BatterySnapshot:
        """One full poll within the deadline.

        Raises:
            DeviceError: a subclass saying what failed (timeout, link, protocol).
        """
        async with self._lock:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.options.poll_deadline):
                    snapshot = await self._poll()
            except TimeoutError as exc:
                error: DeviceError = (
                    exc
                    if isinstance(exc, DeviceTimeout)
                    else DeviceTimeout(
                        f"poll did not finish within {self.options.poll_deadline:.0f} s",
                        battery_id=self.battery_id,
                    )
                )
                self._failed(error)
                raise error from None
            except DeviceError as exc:
                self._failed(exc)
                raise
            finally:
                self.stats.last_duration = time.monotonic() - started
                self.stats.frames_rejected = self._assembler.stats.rejected
            self.stats.record(True)
            self.stats.rssi = self.transport.rssi
            self.last_snapshot = snapshot
            return snapshot

    async def read_dict(self) -> dict[str, Any]:
        """One poll, as the documented JSON-ready dictionary."""
        return (await self.read()).to_dict()

    def _failed(self, error: DeviceError) -> None:
        self.stats.record(False, error=str(error))
        if isinstance(error, TransportError) and self.transport.is_open and isinstance(error, ConnectError):
            _LOGGER.debug("%s: dropping link after %s", self.battery_id, error)

    async def _poll(self) -> BatterySnapshot:
        per_poll = self.options.connection == "per_poll"
        try:
            await self.connect()
            frames = await self._exchange_all()
        except TransportError:
            # A broken link is not reused: the next poll reconnects from scratch.
            await self.transport.close()
            raise
        finally:
            if per_poll:
                await self.transport.close()
        try:
            snapshot = self.protocol.decode(
                frames, battery_id=self.battery_id, timestamp=time.time(), device=self._device
            )
        except ProtocolError as exc:
            exc.battery_id = exc.battery_id or self.battery_id
            raise
        self._device = snapshot.device
        return self._apply_options(snapshot)

    def _apply_options(self, snapshot: BatterySnapshot) -> BatterySnapshot:
        if self.options.mosfet_sensor == "ntc1" and snapshot.temperatures:
            return snapshot.replace(mosfet_temperature=snapshot.temperatures[0], temperatures=snapshot.temperatures[1:])
        return snapshot

    async def _exchange_all(self) -> list[Frame]:
        frames: list[Frame] = []
        for request in self.protocol.requests:
            if request.when == "connect" and request.reply in self._connection_frames:
                frames.append(self._connection_frames[request.reply])
                continue
            try:
                frame = await self._exchange(request)
            except (DeviceTimeout, FrameError, DecodeError) as exc:
                if request.required:
                    raise
                _LOGGER.debug("%s: optional request %s skipped: %s", self.battery_id, request.name, exc)
                if request.when == "connect" and request.reply is not None:
                    # Do not ask again on every poll of this connection.
                    self._connection_frames[request.reply] = Frame(b"", None)
                continue
            if frame is None:
                continue
            if request.when == "connect" and request.reply is not None:
                self._connection_frames[request.reply] = frame
            frames.append(frame)
            frames.extend(await self._collect_numbered(request, frames))
        return [frame for frame in frames if frame.raw]

    async def _collect_numbered(self, request: RequestSpec, frames: list[Frame]) -> list[Frame]:
        """The further frames of a reply that arrives as several numbered frames (Daly A5 cells).

        How many come follows from a value decoded earlier in this poll (e.g. the cell count).
        """
        expected = self.protocol.frames_expected(request.reply, {})
        if expected == 1:
            return []
        expected = self.protocol.frames_expected(request.reply, self.protocol.variables_of(frames))
        more: list[Frame] = []
        timeout = request.timeout or self.options.request_timeout
        while expected is None or len(more) + 1 < expected:
            try:
                more.append(await self._await_reply(request, timeout))
            except DeviceTimeout:
                if expected is None or not request.required:
                    break  # unknown count: the quiet line ends the reply
                raise
        return more

    async def _exchange(self, request: RequestSpec) -> Frame | None:
        timeout = request.timeout or self.options.request_timeout
        attempts = 1 + max(0, self.options.retries)
        backoff = self.options.retry_backoff
        last_error: DeviceError | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff * 2 ** (attempt - 1))
            if request.streaming and self._streaming_started and attempt == 0:
                # The BMS kept streaming since the last poll: the newest frame that already arrived is
                # this poll's answer. Older ones queued behind it must never be presented as current.
                newest = self._newest_streamed(request)
                if newest is not None:
                    return newest
            else:
                self.transport.discard_pending()
                self._assembler.reset()
                self._backlog.clear()
                await self.transport.write(request.frame)
                if request.streaming:
                    self._streaming_started = True
            if request.reply is None:
                return None
            try:
                return await self._await_reply(request, timeout)
            except (DeviceTimeout, FrameError) as exc:
                last_error = exc
                _LOGGER.debug("%s: %s attempt %d failed: %s", self.battery_id, request.name, attempt + 1, exc)
        assert last_error is not None  # the loop ran at least once
        raise last_error

    def _newest_streamed(self, request: RequestSpec) -> Frame | None:
        """Drain what has arrived; keep only the newest frame answering `request` (others are dropped)."""
        while (chunk := self.transport.receive_nowait()) is not None:
            self._backlog.extend(self._assembler.feed(chunk))
        newest: Frame | None = None
        while self._backlog:
            frame = self._backlog.popleft()
            if frame.key is None or frame.key == request.reply:
                newest = frame
        if newest is not None and not newest.status_ok:
            raise ProtocolError(f"{request.name}: the BMS answered with an error status", battery_id=self.battery_id)
        return newest

    async def _await_reply(self, request: RequestSpec, timeout: float) -> Frame:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        rejected_before = self._assembler.stats.rejected
        while True:
            # Frames completed by an earlier chunk come first (one notification may carry several).
            while self._backlog:
                frame = self._backlog.popleft()
                if request.reply is not None and frame.key is not None and frame.key != request.reply:
                    _LOGGER.debug(
                        "%s: ignoring reply %#04x while waiting for %s",
                        self.battery_id,
                        frame.key,
                        request.name,
                    )
                    continue
                if not frame.status_ok:
                    raise ProtocolError(
                        f"{request.name}: the BMS answered with an error status", battery_id=self.battery_id
                    )
                return frame
            remaining = deadline - loop.time()
            if remaining <= 0:
                if self._assembler.stats.rejected > rejected_before:
                    raise FrameError(
                        f"{request.name}: only corrupt replies ({self._assembler.stats.last_error})",
                        battery_id=self.battery_id,
                    )
                raise DeviceTimeout(f"{request.name}: no reply within {timeout:.1f} s", battery_id=self.battery_id)
            try:
                chunk = await self.transport.receive(timeout=remaining)
            except DeviceTimeout:
                continue
            self._backlog.extend(self._assembler.feed(chunk))

    # -- control ------------------------------------------------------------------------------------

    async def set_mosfets(self, *, charge: bool | None = None, discharge: bool | None = None) -> BatterySnapshot:
        """Switch the charge and/or discharge MOSFET and confirm by reading the BMS back.

        Raises:
            CommandRefused: the protocol cannot do it, the BMS refused, or the read-back disagrees.
            DeviceError: the link failed.
        """
        commands = self.protocol.definition.commands
        wanted = {"charge": charge, "discharge": discharge}
        relevant = [
            (name, spec)
            for name, spec in commands.items()
            if any(wanted[direction] is not None for direction in spec.affects)
        ]
        if not relevant:
            raise CommandRefused(
                f"protocol {self.protocol.name} has no MOSFET control command", battery_id=self.battery_id
            )
        current = self.last_snapshot or await self.read()
        for name, spec in relevant:
            # Commands that carry both directions must restate the one we are not changing.
            state_charge = charge if charge is not None else current.charge_enabled
            state_discharge = discharge if discharge is not None else current.discharge_enabled
            frame = self.protocol.build_command(
                name,
                charge=state_charge if "charge" in spec.affects else None,
                discharge=state_discharge if "discharge" in spec.affects else None,
            )
            request = RequestSpec(name=name, frame=frame, reply=spec.reply, timeout=self.options.confirm_timeout)
            async with self._lock:
                await self.connect()
                try:
                    await self._exchange(request)
                except ProtocolError as exc:
                    raise CommandRefused(f"{name}: {exc}", battery_id=self.battery_id) from exc
                except DeviceTimeout as exc:
                    raise CommandRefused(f"{name}: no acknowledgement ({exc})", battery_id=self.battery_id) from exc
        confirmed = await self.read()
        mismatches = [
            direction
            for direction, value in (("charge", charge), ("discharge", discharge))
            if value is not None
            and getattr(confirmed, f"{direction}_enabled") is not None
            and getattr(confirmed, f"{direction}_enabled") != value
        ]
        if mismatches:
            raise CommandRefused(
                f"the BMS did not switch the {' and '.join(mismatches)} MOSFET (read back after the command)",
                battery_id=self.battery_id,
            )
        return confirmed
