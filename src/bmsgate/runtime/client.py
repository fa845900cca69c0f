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
an overall deadline. Those rules live in the sans-IO `bmsgate.protocols.session.PollSession`; the
client drives it over a transport and keeps link statistics for diagnostics and Home Assistant.
Between polls `between_polls` keeps driving the idle session while the link is kept, so a protocol's
keep-alive (123\\SmartBMS gen3's ``$``) goes on being written; it runs in the caller's task, nothing is
spawned.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Literal, Self

from bmsgate.errors import (
    AuthenticationError,
    CommandRefused,
    ConnectError,
    DeviceError,
    DeviceTimeout,
    ProtocolError,
    TransportError,
)
from bmsgate.model import BatterySnapshot
from bmsgate.protocols import CompiledProtocol
from bmsgate.protocols.definition import RequestSpec
from bmsgate.protocols.secret import NO_SECRET_USE as _NO_SECRET_USE
from bmsgate.protocols.secret import secret_use
from bmsgate.protocols.session import (
    Action,
    DiscardPending,
    GiveUp,
    PollSession,
    ReplyReady,
    SessionTiming,
    SnapshotReady,
    WaitUntil,
    Write,
)
from bmsgate.runtime.wakeup import Wakeup
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
        secret: the credential the protocol asks for after connecting (a PIN, a key), from the battery's
            ``secret``; the session hands it only to the definition's authentication step.
        secret_use: the use of `secret` it is bound to (`bmsgate.protocols.secret.secret_use` of the definition
            it was configured with); None: bound by the first client built with these options. A client whose
            definition uses the secret otherwise (one swapped in live) does not hand it over and refuses to
            connect when that definition uses a secret at all.
    """

    request_timeout: float = 2.0
    retries: int = 2
    retry_backoff: float = 0.2
    poll_deadline: float = 15.0
    connection: Literal["keep", "per_poll"] = "keep"
    mosfet_sensor: Literal["none", "ntc1"] = "none"
    confirm_timeout: float = 5.0
    secret: bytes | None = dataclasses.field(default=None, repr=False)
    secret_use: str | None = None


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
    """Polls one battery: sends the query commands, reads the notify responses, returns snapshots.

    What a poll means (requests, retries, timeouts, multi-frame and streamed replies) lives in the
    sans-IO `PollSession`; this class only moves its writes and waits onto the transport and the loop.
    """

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
        options = options or ClientOptions()
        use = secret_use(protocol)
        if options.secret is not None and options.secret_use is None:
            options = dataclasses.replace(options, secret_use=use)
        self.options = options
        # Withheld from a definition that would use it otherwise; refused outright if it uses one at all.
        withheld = options.secret is not None and options.secret_use != use
        self._refuse_for_secret = withheld and use != _NO_SECRET_USE
        self.stats = LinkStatistics()
        self.session = PollSession(
            protocol,
            battery_id=battery_id,
            timing=SessionTiming(
                request_timeout=options.request_timeout,
                retries=options.retries,
                retry_backoff=options.retry_backoff,
                poll_deadline=options.poll_deadline,
            ),
            secret=None if withheld else options.secret,
        )
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
        if self._refuse_for_secret:
            raise AuthenticationError(
                f"protocol {self.protocol.name} uses the battery's secret otherwise than the definition it was "
                "configured with (a definition swapped in live), so it does not get it: restart the gateway or "
                "change the battery's configuration to accept the new use",
                battery_id=self.battery_id,
            )
        self.session.connection_reset()
        await self.transport.open()
        self.session.device_name = self.transport.device_name
        self.stats.connects += 1
        _LOGGER.debug("%s: connected via %s", self.battery_id, self.transport.description)

    async def close(self) -> None:
        """Close the transport."""
        await self.transport.close()

    async def between_polls(self, wake: Wakeup, *, until: float | None = None) -> None:
        """Wait until `wake` is set or the loop's clock reaches `until`, writing the keep-alive meanwhile.

        The protocol's keep-alive goes out on schedule while the link is kept. `until` is the next poll's time
        (None: only `wake` ends the wait); reaching it is no cancellation (runtime/wakeup.py). What arrives
        meanwhile is fed to the idle session (it keeps only the newest frames), so the link's queue does not
        grow. A write that fails (any `DeviceError`) closes the link: the next poll reconnects and reports what
        is wrong.
        Without a keep-alive (or with ``per_poll`` connections) this only waits.
        """
        clock = asyncio.get_running_loop().time
        while True:
            deadline: float | None = None
            async with self._lock:
                if self.transport.is_open and not self.session.busy:
                    try:
                        deadline = await self._keep_alive(clock)
                    except DeviceError as exc:
                        # Any device error (a lost link, a BLE write refused for want of authentication): the
                        # next poll reconnects and reports what is wrong; the wait between polls goes on.
                        _LOGGER.debug("%s: keep-alive failed, closing the link: %s", self.battery_id, exc)
                        await self.transport.close()
                        deadline = None
            if until is not None and (deadline is None or until <= deadline):
                await wake.wait_until(until)
                return
            if await wake.wait_until(deadline):
                return

    async def _keep_alive(self, clock: Callable[[], float]) -> float | None:
        """One idle step: the keep-alive's writes, what arrived fed; the next deadline (None: no keep-alive)."""
        actions = self.session.tick(clock())
        if not actions:
            return None
        while (chunk := self.transport.receive_nowait()) is not None:
            actions.extend(action for action in self.session.feed(chunk, clock()) if isinstance(action, Write))
        deadline: float | None = None
        for action in actions:
            if isinstance(action, Write):
                await self.transport.write(action.data)
            elif isinstance(action, WaitUntil):
                deadline = action.deadline
        return deadline

    # -- polling ------------------------------------------------------------------------------------

    async def read(self) -> BatterySnapshot:
        """One full poll within the deadline.

        Raises:
            DeviceError: a subclass saying what failed (timeout, link, protocol).
        """
        async with self._lock:
            started = time.monotonic()
            try:
                # The session keeps the deadline on its own clock; this one also bounds a hung connect or write.
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
                self.stats.frames_rejected = self.session.assembler_stats.rejected
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
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self.connect()
            outcome = await self._drive(self.session.start_poll(started, epoch=time.time() - loop.time()))
        except TransportError:
            # A broken link is not reused: the next poll reconnects from scratch.
            await self.transport.close()
            raise
        finally:
            if per_poll:
                await self.transport.close()
        if isinstance(outcome, SnapshotReady):
            return self._apply_options(outcome.snapshot)
        if isinstance(outcome, GiveUp):
            if outcome.drop_link:
                await self.transport.close()
            raise outcome.error
        raise TypeError("poll session ended a poll with a command reply")

    def _apply_options(self, snapshot: BatterySnapshot) -> BatterySnapshot:
        if self.options.mosfet_sensor == "ntc1" and snapshot.temperatures:
            return snapshot.replace(mosfet_temperature=snapshot.temperatures[0], temperatures=snapshot.temperatures[1:])
        return snapshot

    async def _drive(self, actions: list[Action]) -> SnapshotReady | ReplyReady | GiveUp:
        """Carry out the session's actions until it reaches a terminal one."""
        session = self.session
        transport = self.transport
        clock = asyncio.get_running_loop().time
        while True:
            deadline: float | None = None
            for action in actions:
                if isinstance(action, WaitUntil):
                    deadline = action.deadline
                elif isinstance(action, Write):
                    await transport.write(action.data)
                elif isinstance(action, DiscardPending):
                    transport.discard_pending()
                else:
                    return action
            if deadline is None:
                raise TypeError("poll session returned neither a wait nor an outcome")
            remaining = deadline - clock()
            chunk: bytes | None
            if remaining > 0:
                try:
                    chunk = await transport.receive(timeout=remaining)
                except DeviceTimeout:
                    chunk = None
            else:
                chunk = transport.receive_nowait()
            actions = session.tick(clock()) if chunk is None else session.feed(chunk, clock())

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
                loop = asyncio.get_running_loop()
                outcome = await self._drive(self.session.start_command(request, loop.time()))
            if isinstance(outcome, GiveUp):
                error = outcome.error
                if isinstance(error, ProtocolError):
                    raise CommandRefused(f"{name}: {error}", battery_id=self.battery_id) from error
                if isinstance(error, DeviceTimeout):
                    raise CommandRefused(f"{name}: no acknowledgement ({error})", battery_id=self.battery_id) from error
                raise error
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
