"""Write transmitted frames in can-utils' candump log format (``candump -l`` / ``canplayer`` input).

One line per frame: ``(1700000000.123456) can0 351#1402E803E803`` — Unix time with six decimals, the
interface name, the id in hex (3 digits for standard frames, 8 for extended) and the data bytes in
uppercase hex.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import TextIO

from bmsgate.errors import SinkError
from bmsgate.inverter.can.profiles import CanFrame

__all__ = ["CandumpWriter", "candump_line"]

_LOGGER = logging.getLogger(__name__)


def candump_line(frame: CanFrame, timestamp: float, interface: str) -> str:
    """One candump log line (without the newline)."""
    return f"({timestamp:.6f}) {interface} {frame.candump()}"


class CandumpWriter:
    """Appends frames to a candump log file; flushes after every frame set.

    Args:
        path: the log file (appended to, created if missing).
        interface: the interface name written on each line.
    """

    def __init__(self, path: Path, interface: str) -> None:
        self.path = path
        self.interface = interface
        self._file: TextIO | None = None
        self.lines = 0

    def open(self) -> None:
        """Open the file for appending.

        Raises:
            SinkError: the file cannot be opened.
        """
        try:
            self._file = self.path.open("a", encoding="ascii")
        except OSError as exc:
            raise SinkError(f"cannot open CAN log {self.path}: {exc}", sink="can") from exc
        _LOGGER.info("CAN: logging transmitted frames to %s", self.path)

    def write(self, frames: list[CanFrame], timestamp: float) -> None:
        """Log frames sent at `timestamp` (Unix time)."""
        if self._file is None:
            return
        try:
            for frame in frames:
                self._file.write(candump_line(frame, timestamp, self.interface) + "\n")
            self._file.flush()
        except OSError as exc:
            raise SinkError(f"cannot write CAN log {self.path}: {exc}", sink="can") from exc
        self.lines += len(frames)

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> CandumpWriter:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
