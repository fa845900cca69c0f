"""A pseudo-terminal pair in-process: the far (master) end as a :class:`Transport` (stdlib only).

The demo runs the RS485 output on a real serial port without hardware or socat: the output opens the
pair's *port* (the slave side, a real tty path) through the serial transport exactly as it would open
``/dev/ttyUSB0``, while a simulated inverter reads and writes the master end here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty

from bmsgate.errors import ConnectError
from bmsgate.transports.base import Transport

__all__ = ["PtyPair", "PtyTransport"]

_READ_SIZE = 4096


class PtyPair:
    """A raw pseudo-terminal pair that lives until :meth:`close`.

    Attributes:
        port: the slave side's path, to open like any serial port.
    """

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        # Raw: no echo, no line editing, no CR/LF translation (frames end in CR).
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)

    def transport(self) -> PtyTransport:
        """The master end as a transport (one at a time)."""
        return PtyTransport(self._master)

    def close(self) -> None:
        """Release both ends."""
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class PtyTransport(Transport):
    """Moves bytes through a pty master file descriptor (it does not own the descriptor)."""

    kind = "pty"

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._reading = False

    @property
    def description(self) -> str:
        """``pty:master``."""
        return "pty:master"

    async def _do_open(self) -> None:
        try:
            os.set_blocking(self._fd, False)
            asyncio.get_running_loop().add_reader(self._fd, self._readable)
        except (OSError, ValueError) as exc:
            raise ConnectError(f"{self.description}: cannot open: {exc}") from exc
        self._reading = True

    async def _do_close(self) -> None:
        if self._reading:
            self._reading = False
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(self._fd)

    async def _do_write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError as exc:
            raise ConnectError(f"{self.description}: write failed: {exc}") from exc

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            # EIO: the slave side has no reader attached right now; wait for the next readiness.
            return
        self._deliver(chunk)
