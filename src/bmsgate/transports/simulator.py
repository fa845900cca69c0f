"""A transport to a virtual BMS, with fault injection (no hardware needed).

Replies are split into notification-sized chunks exactly as a BLE module would send them. Faults are
probabilities (0..1, drawn from a seeded generator so runs are reproducible): drop a reply, corrupt a
checksum, delay, cut a frame short, inject ``AT\\r\\n`` noise, drop the link mid-frame, refuse to
connect, or go silent.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time
from collections.abc import Callable
from typing import Final

from bmsgate.errors import ConnectError
from bmsgate.protocols.compiled import CompiledProtocol
from bmsgate.protocols.wirekey import wire_key, xor_bytes
from bmsgate.runtime.cadence import tick_after
from bmsgate.runtime.simulation import PackConfig, PackModel, VirtualBms
from bmsgate.transports.base import Transport

__all__ = ["FaultPlan", "SimulatorTransport"]

AT_NOISE = b"AT\r\n"


@dataclasses.dataclass(slots=True, kw_only=True)
class FaultPlan:
    """Fault probabilities per reply (or per connect attempt for `refuse_connect`). Mutable at run time."""

    drop_reply: float = 0.0
    corrupt_checksum: float = 0.0
    truncate: float = 0.0
    delay: float = 0.0
    """Probability that a reply is late by `delay_seconds`."""
    delay_seconds: float = 2.0
    noise: float = 0.0
    """Probability of an ``AT\\r\\n`` notification before a reply chunk."""
    disconnect_mid_frame: float = 0.0
    refuse_connect: float = 0.0
    silent: bool = False
    """Accept writes, never answer (a hung BMS)."""
    drop_next: int = 0
    """Drop exactly this many of the next replies (deterministic, for tests)."""


_WRITES_KEPT: Final = 256
_MIN_ADVANCE: Final = 0.05
"""Real seconds below which a write does not move the pack on: the requests of one poll come milliseconds
apart and see one state (as a real BMS's one measurement cycle), and the pack's physics ran once per
request, a tenth of the simulated BMS's CPU. The time is not lost: the next advance covers it."""


class SimulatorTransport(Transport):
    """Talks to a `VirtualBms` over an imaginary radio."""

    kind = "simulator"

    def __init__(
        self,
        protocol: CompiledProtocol,
        pack: PackConfig | PackModel | None = None,
        *,
        faults: FaultPlan | None = None,
        battery_id: str | None = None,
        notification_size: int | None = None,
        chunk_interval: float = 0.0,
        connect_delay: float = 0.0,
        rssi: int = -62,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(battery_id=battery_id)
        model = pack if isinstance(pack, PackModel) else PackModel(pack or PackConfig())
        self.pack = model
        self.bms = VirtualBms(protocol, model)
        spec = protocol.definition.framing.wire_key
        key = wire_key(self.bms.device_name, spec) if spec is not None else None
        # The device's XOR over the wire (Offgridtec) is applied here, at the radio's edge, as the session does.
        self._wire_key = key or 0
        self.faults = faults or FaultPlan()
        gatt = protocol.definition.gatt
        self._chunk_size = notification_size or (gatt.notification_size if gatt else 64)
        self._chunk_interval = chunk_interval
        self._connect_delay = connect_delay
        self._rssi = rssi
        self._clock = clock
        self._last_advance = clock()
        self._random = random.Random(model.config.seed + 7)
        # Bumped on close so that replies scheduled for an old connection are never delivered.
        self._generation = 0
        self.connects = 0
        self.writes: collections.deque[bytes] = collections.deque(maxlen=_WRITES_KEPT)
        """The newest writes (for tests and diagnostics); bounded, so a demo that runs for weeks stays small."""
        self.write_count = 0
        self._streaming = False

    @property
    def description(self) -> str:
        """The simulated pack's name."""
        return f"simulator:{self.bms.protocol.name}:{self.pack.config.name}"

    @property
    def device_name(self) -> str | None:
        """The simulated device's advertised name (the definition's ``simulator.device_name``)."""
        return self.bms.device_name

    @property
    def rssi(self) -> int | None:
        """A plausible, slightly noisy signal strength."""
        return self._rssi + self._random.randint(-3, 3) if self.is_open else None

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self._random.random() < probability

    async def _do_open(self) -> None:
        if self._connect_delay:
            await asyncio.sleep(self._connect_delay)
        if self._chance(self.faults.refuse_connect):
            raise ConnectError(f"{self.description}: connection refused (injected)", battery_id=self.battery_id)
        self.connects += 1
        self.bms.listening = bool(self.bms.listen_keys)
        if self.bms.listening and not self.faults.silent:
            # A BMS that is never asked streams from the moment the link is up.
            self._streaming = True
            self._schedule_stream_tick(asyncio.get_running_loop(), self._generation)

    async def _do_close(self) -> None:
        self._generation += 1
        self._streaming = False
        self.bms.streaming_key = None
        self.bms.listening = False

    def _stream_tick(self, generation: int) -> None:
        if generation != self._generation or not self.is_open:
            return
        self._advance(force=True)
        if not self.faults.silent:
            for reply in self.bms.stream():
                chunks, _delay = self._shape(reply)
                for chunk, cut_link in chunks:
                    self._emit(chunk, cut_link, generation)
        self._schedule_stream_tick(asyncio.get_running_loop(), generation)

    def _schedule_stream_tick(self, loop: asyncio.AbstractEventLoop, generation: int) -> None:
        # On the shared grid (runtime/cadence.py): a streaming pack's notifications arrive in the wake-up
        # of the gateway's own ticks, as a real pack's would in a wake-up of the radio.
        loop.call_at(tick_after(loop.time(), self.bms.stream_interval), self._stream_tick, generation)

    async def _do_write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.write_count += 1
        self._advance()
        replies = self.bms.handle_write(xor_bytes(data, self._wire_key) if self._wire_key else data)
        if self.faults.silent:
            return
        loop = asyncio.get_running_loop()
        if self.bms.streaming_key is not None and not self._streaming:
            # A streaming BMS keeps sending on its own until the link closes.
            self._streaming = True
            self._schedule_stream_tick(loop, self._generation)
        # Notifications due at the same moment go out in one callback (without a chunk interval or an
        # injected delay: a whole poll's replies), not one timer each.
        delay = 0.0
        batch: list[tuple[bytes, bool]] = []
        batch_delay = 0.0
        for reply in replies:
            chunks, extra_delay = self._shape(reply)
            delay += extra_delay
            for chunk, cut_link in chunks:
                delay += self._chunk_interval
                if batch and delay != batch_delay:
                    self._schedule(loop, batch_delay, batch)
                    batch = []
                batch_delay = delay
                batch.append((chunk, cut_link))
        if batch:
            self._schedule(loop, batch_delay, batch)

    def _advance(self, *, force: bool = False) -> None:
        now = self._clock()
        elapsed = now - self._last_advance
        if force or elapsed >= _MIN_ADVANCE:
            self.pack.advance(elapsed)
            self._last_advance = now

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay: float, batch: list[tuple[bytes, bool]]) -> None:
        if delay > 0:
            loop.call_later(delay, self._emit_all, batch, self._generation)
        else:
            loop.call_soon(self._emit_all, batch, self._generation)

    def _emit_all(self, batch: list[tuple[bytes, bool]], generation: int) -> None:
        for chunk, cut_link in batch:
            self._emit(chunk, cut_link, generation)

    def _shape(self, reply: bytes) -> tuple[list[tuple[bytes, bool]], float]:
        """Apply faults to one reply: its notifications (True = drop the link there) and extra delay."""
        faults = self.faults
        if faults.drop_next > 0:
            faults.drop_next -= 1
            return [], 0.0
        if self._chance(faults.drop_reply):
            return [], 0.0
        frame = xor_bytes(reply, self._wire_key) if self._wire_key else bytes(reply)
        if self._chance(faults.corrupt_checksum):
            # Only a corrupted reply is copied to be changed (a stream tick sent a copy of every frame).
            corrupted = bytearray(frame)
            corrupted[-2 if len(corrupted) > 2 else -1] ^= 0x5A
            frame = bytes(corrupted)
        if self._chance(faults.truncate):
            frame = frame[: max(1, len(frame) // 2)]
        size = self._chunk_size
        chunks = [frame[i : i + size] for i in range(0, len(frame), size)]
        shaped: list[tuple[bytes, bool]] = []
        for index, chunk in enumerate(chunks):
            if self._chance(faults.noise):
                shaped.append((AT_NOISE, False))
            if index > 0 and self._chance(faults.disconnect_mid_frame):
                shaped.append((b"", True))
                break
            shaped.append((chunk, False))
        extra_delay = faults.delay_seconds if self._chance(faults.delay) else 0.0
        return shaped, extra_delay

    def _emit(self, chunk: bytes, cut_link: bool, generation: int) -> None:
        if generation != self._generation:
            return
        if cut_link:
            self._generation += 1
            self._connection_lost(
                ConnectError(f"{self.description}: link dropped mid-frame (injected)", battery_id=self.battery_id)
            )
            return
        if chunk and self.is_open:
            self._deliver(chunk)
