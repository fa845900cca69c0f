"""`Rs485Sink`: the battery side of Pylontech LV RS485 — the controller's status → replies on a serial port.

The inverter is master: nothing is ever sent unasked (half duplex). Every well-formed request is
answered from the controller's latest status in the current phase:

* **keep** (fresh data): the limit engine's values;
* **safe** (no fresh pack, or the controller stalled): zero current limits, charge/discharge enable
  bits clear (Voltronic stops only through the 0x92 enable bits), "internal communication error" and
  "system fault" in 0x62, no current and no FET states claimed;
* **silent** (data older than the dialect's ``silent_after``, after at least :data:`SAFE_HOLD` s of safe
  replies): no reply at all, so the inverter's own comms-loss fallback engages (docs/inverters.md lists
  what each inverter then does).

The serial I/O goes through :class:`~bmsgate.transports.serial.SerialTransport` (the one pyserial
adapter); a port that fails is reopened with backoff. Data ages use the controller's (the hub's) clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from bmsgate.errors import TransportError
from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.phases import ForceChargeRequest, OutputPhase, PhaseTracker, Requests
from bmsgate.inverter.rs485.frame import FrameAssembler, PylonFrame
from bmsgate.inverter.rs485.pylontech import answer
from bmsgate.inverter.rs485.settings import Rs485Settings
from bmsgate.inverter.status import InverterLiveness, InverterStatus, expired
from bmsgate.model import Alarm
from bmsgate.runtime.backoff import Backoff
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.transports.base import Transport

__all__ = ["SAFE_HOLD", "Rs485Sink"]

_LOGGER = logging.getLogger(__name__)

SAFE_HOLD: Final = 10.0
"""Seconds of safe replies at least before the output may go silent (several polls at ~1 s)."""

_INITIAL_BACKOFF: Final = 0.5
_UNDER_VOLTAGE: Final = frozenset({Alarm.CELL_UNDERVOLTAGE, Alarm.PACK_UNDERVOLTAGE})
_FORCE_CHARGE_SOC: Final = (5.0, 2.0, 5.0)
"""SoC thresholds of the "charge immediately" requests and their hysteresis, as the CAN output's defaults."""

TransportFactory = Callable[[Rs485Settings], Transport]


def _serial_port(settings: Rs485Settings) -> Transport:
    from bmsgate.transports.serial import SerialTransport  # noqa: PLC0415 - needs the [serial] extra

    return SerialTransport(settings.port, baudrate=settings.baudrate, bytesize=8, parity="N", stopbits=1)


class Rs485Sink:
    """Answers an inverter's Pylontech RS485 polls with the bank's status.

    Args:
        settings: the ``outputs.rs485`` configuration.
        controller: the inverter controller whose status this output encodes.
        transport_factory: opens the port (tests and the demo inject others); default: the serial port.
        clock: monotonic clock for data ages (default: the controller's).
    """

    name = "rs485"

    def __init__(
        self,
        settings: Rs485Settings,
        controller: InverterController,
        *,
        transport_factory: TransportFactory | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.controller = controller
        self.dialect = settings.resolved_dialect()
        self.identity = settings.identity()
        self._clock = clock or controller.clock
        self._factory = transport_factory or _serial_port
        self._phases = PhaseTracker(self.dialect.silent_after, safe_hold=SAFE_HOLD, label="RS485 output")
        self._liveness = controller.watch(InverterLiveness(settings.poll_timeout, self._clock(), what="RS485 poll"))
        self._force_charge = ForceChargeRequest(*_FORCE_CHARGE_SOC)
        self._status = controller.status
        self._failing = False
        self.assembler = FrameAssembler()
        self.requests = 0
        self.replies = 0
        self.unanswered = 0
        self.port_failures = 0
        self.listening = asyncio.Event()
        """Set while the port is open (bytes sent before that may be flushed by the open)."""
        self.answered = asyncio.Event()
        """Set after every reply written (cleared by whoever waits on it)."""

    @property
    def phase(self) -> OutputPhase:
        """Keep (normal) / safe / silent / waiting, as of the last request."""
        return self._phases.phase

    @property
    def status(self) -> InverterStatus:
        """The status the last reply was built from."""
        return self._status

    def respond(self, request: PylonFrame) -> bytes | None:
        """The reply to one request now, or None (silent phase, another address, not a battery request)."""
        now = self._clock()
        self._liveness.seen(now)
        self.requests += 1
        status = self.controller.status
        if status.age(now) > self.controller.settings.status_timeout:
            # The controller stopped: the last status is not current any more.
            status = expired(status)
        self._status = status
        bank = status.bank
        phase = self._phases.update(bank, status.data_age_at(now), now=now)
        normal = phase is OutputPhase.NORMAL
        requests: Requests = self._force_charge.update(
            bank.soc if normal else None, under_voltage=normal and not bank.alarms.isdisjoint(_UNDER_VOLTAGE)
        )
        reply = answer(request, status, phase, requests, self.dialect, self.identity)
        if reply is None:
            self.unanswered += 1
            return None
        return reply.encode()

    async def run(self, hub: SnapshotHub) -> None:
        """Answer polls until cancelled (`hub` is the controller's business)."""
        del hub
        _LOGGER.info(
            "RS485: Pylontech battery side, dialect %s on %s at %d baud",
            self.dialect.name,
            self.settings.port,
            self.settings.baudrate,
        )
        backoff = Backoff(_INITIAL_BACKOFF, max(_INITIAL_BACKOFF, self.settings.reopen_backoff_max))
        while True:
            transport = self._factory(self.settings)
            try:
                await transport.open()
                self.listening.set()
                await self._serve(transport, backoff)
            except TransportError as exc:
                self._report_failure(exc)
            finally:
                self.listening.clear()
                await transport.close()
            await asyncio.sleep(backoff.next_delay())

    async def _serve(self, transport: Transport, backoff: Backoff) -> None:
        while True:
            chunk = await transport.receive()
            for request in self.assembler.feed(chunk):
                reply = self.respond(request)
                if reply is None:
                    continue
                await transport.write(reply)
                self.replies += 1
                self.answered.set()
                if self._failing:
                    self._failing = False
                    _LOGGER.info("RS485: port working again")
                backoff.reset()

    def _report_failure(self, exc: BaseException) -> None:
        self.port_failures += 1
        if self._failing:
            _LOGGER.debug("RS485: port still failing: %s", exc)
            return
        self._failing = True
        _LOGGER.warning("RS485: port failed (%s); reopening with backoff", exc)
