"""A transport that plays back a recorded conversation (see docs/capture-analysis.md for the format).

When the host writes a request, the transport looks for the same bytes among the recording's writes
(starting after the previous match and wrapping around, so repeated polls replay the recording
again) and delivers the received chunks that followed it, up to the next write. A request that never
occurs in the recording gets no answer, exactly like a BMS that ignores it.

Given the protocol, a write carrying the battery's secret (a ``secret`` request: ``PW<pin>!``) is matched by
the bytes around the secret, as the simulator does: the secret replayed need not be the recorded one, so a
recording is read back without the BMS's PIN (and a recording whose PIN was blanked out still answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bmsgate.capture.replayfile import ReplayCapture, read_replay
from bmsgate.transports.base import Transport

if TYPE_CHECKING:
    from bmsgate.protocols.compiled import CompiledProtocol

__all__ = ["ReplayTransport"]


class ReplayTransport(Transport):
    """Answers writes with the chunks a real BMS sent in a recording."""

    kind = "replay"

    def __init__(
        self,
        capture: ReplayCapture | str | Path,
        *,
        battery_id: str | None = None,
        protocol: CompiledProtocol | None = None,
    ) -> None:
        super().__init__(battery_id=battery_id)
        # The bytes in front of and after the secret of each `secret` request (the wire form is the frame's).
        self._secret_templates = [
            (request.frame[: request.secret.at], request.frame[request.secret.at :])
            for request in (protocol.definition.requests if protocol is not None else [])
            if request.secret is not None
        ]
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

    def _carries_secret(self, data: bytes) -> tuple[bytes, bytes] | None:
        """The template of the `secret` request `data` is a write of (None: not one)."""
        for before, after in self._secret_templates:
            if len(data) > len(before) + len(after) and data.startswith(before) and data.endswith(after):
                return before, after
        return None

    async def _do_write(self, data: bytes) -> None:
        template = self._carries_secret(data)
        count = len(self._exchanges)
        for step in range(count):
            index = (self._cursor + step) % count
            written, answers = self._exchanges[index]
            if written == data or (template is not None and self._carries_secret(written) == template):
                self._cursor = index + 1
                for chunk in answers:
                    self._deliver(chunk)
                return
