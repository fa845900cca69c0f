"""A transport that plays back a recorded conversation (see docs/capture-analysis.md for the format).

When the host writes a request, the transport looks for the same bytes among the recording's writes
(starting after the previous match and wrapping around, so repeated polls replay the recording
again) and delivers the received chunks that followed it, up to the next write. A request that never
occurs in the recording gets no answer, exactly like a BMS that ignores it.
"""

from __future__ import annotations

from pathlib import Path

from bmsgate.capture.replayfile import ReplayCapture, read_replay
from bmsgate.transports.base import Transport

__all__ = ["ReplayTransport"]


class ReplayTransport(Transport):
    """Answers writes with the chunks a real BMS sent in a recording."""

    kind = "replay"

    def __init__(self, capture: ReplayCapture | str | Path, *, battery_id: str | None = None) -> None:
        super().__init__(battery_id=battery_id)
        self.capture = capture if isinstance(capture, ReplayCapture) else read_replay(str(capture))
        records = self.capture.records
        self._exchanges: list[tuple[bytes, list[bytes]]] = []
        self._unsolicited: list[bytes] = []
        for record in records:
            if record.direction == "tx":
                self._exchanges.append((record.data, []))
            elif self._exchanges:
                self._exchanges[-1][1].append(record.data)
            else:
                self._unsolicited.append(record.data)
        self._cursor = 0

    @property
    def description(self) -> str:
        """The recording's source."""
        return f"replay:{self.capture.source}"

    async def _do_open(self) -> None:
        self._cursor = 0
        for chunk in self._unsolicited:
            self._deliver(chunk)

    async def _do_close(self) -> None:
        return None

    async def _do_write(self, data: bytes) -> None:
        count = len(self._exchanges)
        for step in range(count):
            index = (self._cursor + step) % count
            written, answers = self._exchanges[index]
            if written == data:
                self._cursor = index + 1
                for chunk in answers:
                    self._deliver(chunk)
                return
