"""`SimulatedRs485Inverter`: a poller that asks like the dialect's inverter (the demo's and the tests' master).

Voltronic: 0x4F first, then 0x42 and 0x92 in a loop, adopting the VER the 0x4F reply carries (as the
PIP5048GK does with diyBMS); SRNE family: 0x61, 0x62, 0x63 repeatedly. Each request waits up to
`reply_timeout` for its reply; missing replies are counted (a real inverter would raise its
comms-loss warning: error 61 on a Voltronic, 58 on an EASUN SMX II). The 0x92 / 0x63 replies are
decoded into :attr:`limits` so the demo can log what the inverter was told.

It runs like an output (``name`` and ``run(hub)``) but reads nothing from the hub.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Final

from bmsgate.errors import DeviceTimeout, TransportError
from bmsgate.inverter.rs485.frame import FrameAssembler, PylonFrame, build_frame
from bmsgate.inverter.rs485.pylontech import BATTERY, RTN, Rs485Dialect
from bmsgate.runtime.cadence import sleep_until, tick_after
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.transports.base import Transport

__all__ = ["PolledLimits", "SimulatedRs485Inverter"]

_LOGGER = logging.getLogger(__name__)

_MODULE_COMMANDS: Final = frozenset({0x42, 0x44, 0x92, 0x93, 0x96})
_START_VER: Final = 0x20


@dataclasses.dataclass(frozen=True, slots=True)
class PolledLimits:
    """What the last 0x92 or 0x63 reply told the inverter."""

    charge_voltage: float
    discharge_voltage: float
    charge_current: float
    discharge_current: float
    charge_enabled: bool
    discharge_enabled: bool


class SimulatedRs485Inverter:
    """Polls a Pylontech RS485 battery like `dialect`'s inverter.

    Args:
        transport_factory: opens the inverter's end of the link.
        dialect: which commands, in which order, at which address.
        period: s between poll cycles.
        reply_timeout: s to wait for each reply.
        on_stop: called when :meth:`run` ends (the demo releases its pty pair there).
    """

    name = "rs485-inverter"

    def __init__(
        self,
        transport_factory: Callable[[], Transport],
        dialect: Rs485Dialect,
        *,
        period: float = 1.0,
        reply_timeout: float = 1.0,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        if not (period > 0 and reply_timeout > 0):
            raise ValueError("period and reply_timeout must be positive")
        self._factory = transport_factory
        self.dialect = dialect
        self.period = period
        self.reply_timeout = reply_timeout
        self._on_stop = on_stop
        self.address = dialect.addresses[0] if dialect.addresses else 0x02
        self.ver = _START_VER
        self.replies: dict[int, PylonFrame] = {}
        """The last reply per command."""
        self.limits: PolledLimits | None = None
        self.polls = 0
        self.answered = 0
        self.missed = 0
        self._missing = False

    def request(self, command: int) -> bytes:
        """The request frame for `command` as this inverter sends it."""
        info = bytes((self.address,)) if command in _MODULE_COMMANDS else b""
        return build_frame(self.ver, self.address, BATTERY, command, info)

    async def run(self, hub: SnapshotHub) -> None:
        """Poll every `period` until cancelled."""
        del hub
        transport = self._factory()
        try:
            await transport.open()
            _LOGGER.info("demo: simulated %s inverter polls %s", self.dialect.name, transport.description)
            loop = asyncio.get_running_loop()
            while True:
                started = loop.time()
                await self.poll_cycle(transport)
                # On the shared grid (runtime/cadence.py): the same wake-up as the battery side's ticks.
                await sleep_until(max(loop.time(), tick_after(started, self.period)))
        finally:
            await transport.close()
            if self._on_stop is not None:
                self._on_stop()

    async def poll_cycle(self, transport: Transport) -> dict[int, PylonFrame | None]:
        """One round of the dialect's polls; the replies by command (None: no reply in time)."""
        results: dict[int, PylonFrame | None] = {}
        for command in self.dialect.polls:
            reply = await self.ask(transport, command)
            results[command] = reply
        return results

    async def ask(self, transport: Transport, command: int) -> PylonFrame | None:
        """Send one request and wait for its reply."""
        transport.discard_pending()
        assembler = FrameAssembler()
        await transport.write(self.request(command))
        self.polls += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reply_timeout
        while (left := deadline - loop.time()) > 0:
            try:
                chunk = await transport.receive(timeout=left)
            except DeviceTimeout:
                break
            except TransportError:
                raise
            frames = assembler.feed(chunk)
            if frames:
                return self._got(command, frames[0])
        self.missed += 1
        if not self._missing:
            self._missing = True
            _LOGGER.warning("demo: simulated inverter: no reply to 0x%02X (a real one would warn 'BMS lost')", command)
        return None

    def _got(self, command: int, reply: PylonFrame) -> PylonFrame:
        self.answered += 1
        if self._missing:
            self._missing = False
            _LOGGER.info("demo: simulated inverter: battery answers again")
        self.replies[command] = reply
        if command == 0x4F and reply.cid2 == RTN.NORMAL:
            # The Voltronic adopts the version the battery gives it for every later request.
            self.ver = reply.ver
        elif command in {0x92, 0x63} and reply.cid2 == RTN.NORMAL:
            self.limits = _limits(reply.info, command, self.dialect)
        return reply


def _limits(info: bytes, command: int, dialect: Rs485Dialect) -> PolledLimits | None:
    body = info[1:] if command == 0x92 else info
    if len(body) < 9:
        return None
    step = 0.1 if command == 0x92 else dialect.system_current_scale
    cvl, dvl = int.from_bytes(body[0:2], "big"), int.from_bytes(body[2:4], "big")
    ccl = int.from_bytes(body[4:6], "big", signed=True)
    dcl = int.from_bytes(body[6:8], "big", signed=True)
    flags = body[8]
    return PolledLimits(
        charge_voltage=cvl / 1000,
        discharge_voltage=dvl / 1000,
        charge_current=ccl * step,
        discharge_current=abs(dcl) * step,
        charge_enabled=bool(flags & 0x80),
        discharge_enabled=bool(flags & 0x40),
    )
