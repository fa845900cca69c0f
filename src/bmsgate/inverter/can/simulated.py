"""`SimulatedInverter`: the demo's stand-in for an inverter on the virtual CAN bus.

It opens the CAN output's channel (through bus.py, like the sink) and sends what a real inverter sends:
the profile's keep-alive (0x305, 8 zero bytes) about once a second, or for request-mode profiles
(Growatt: 0x301) the request the battery answers. So the demo's :class:`~bmsgate.inverter.can.sink.CanSink`
sees an inverter, and shows "inverter seen" instead of "inverter missing".

It runs like an output (``name`` and ``run(hub)``) but reads nothing from the hub; the frames the sink
sends are counted and dropped once a period, on the event loop (its bus has no receiving thread: the
demo's CPU budget is a few milliseconds a second, and a thread waking for every frame set cost a tenth of it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from bmsgate.inverter.can.bus import CanBus
from bmsgate.inverter.can.profiles import CanFrame, CanProfile, load_profile
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.runtime.cadence import sleep_until, tick_after
from bmsgate.runtime.hub import SnapshotHub

__all__ = ["SimulatedInverter"]

_LOGGER = logging.getLogger(__name__)

_LIVENESS_DATA: Final = bytes(8)


class SimulatedInverter:
    """Sends the inverter side of the profile (keep-alive or request frames) on a virtual bus.

    Args:
        settings: the CAN output's settings (its ``interface`` must be ``virtual``; same channel).
        profile: the CAN output's profile; loaded from ``settings.profile`` when omitted.
        period: s between keep-alive/request frames.

    Raises:
        ValueError: the interface is not ``virtual`` (never impersonate an inverter on a real bus), or
            `period` is not positive.
        DefinitionError: the profile cannot be loaded.
    """

    name = "can-inverter"

    def __init__(self, settings: CanSettings, *, profile: CanProfile | None = None, period: float = 1.0) -> None:
        if settings.interface != "virtual":
            raise ValueError("the simulated inverter only runs on a virtual bus")
        if not period > 0:
            raise ValueError("period must be positive")
        self.settings = settings
        self.profile = profile or load_profile(settings.profile)
        self.period = period
        self.frames_sent = 0
        self.frames_received = 0

    @property
    def frame_id(self) -> int | None:
        """What this inverter sends: the profile's liveness frame (None: the profile watches nothing)."""
        return self.profile.liveness_id

    async def run(self, hub: SnapshotHub) -> None:
        """Send the keep-alive/request frame every `period` until cancelled.

        Raises:
            SinkError: the virtual bus failed (the supervisor retries).
        """
        del hub  # an inverter reads the bus, not the hub
        frame_id = self.frame_id
        if frame_id is None:
            _LOGGER.info("demo: CAN profile %s watches no inverter frame; simulated inverter idle", self.profile.name)
            await asyncio.Event().wait()
            return
        bus = CanBus(self.settings)
        bus.open(receive=False)
        _LOGGER.info(
            "demo: simulated inverter on virtual bus %s sends %#05x every %g s",
            self.settings.channel,
            frame_id,
            self.period,
        )
        frame = [CanFrame(frame_id, _LIVENESS_DATA)]
        try:
            loop = asyncio.get_running_loop()
            while True:
                await bus.send(frame)
                self.frames_sent += 1
                # The bus queues every frame the battery side sends: dropped here so nothing piles up.
                self.frames_received += bus.discard_received()
                # On the shared grid (runtime/cadence.py): the same wake-up as the battery side's ticks.
                await sleep_until(tick_after(loop.time(), self.period))
        finally:
            await bus.close()
