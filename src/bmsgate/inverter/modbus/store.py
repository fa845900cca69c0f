"""The Modbus datastore: exactly a register map's registers, what a master may read and write.

Pure (no pymodbus): our own Modbus TCP server (tcp.py) and the pymodbus RTU server (server.py) both
answer from it, through the datastore interface pymodbus defined (``validate``, ``getValues``,
``setValues``, with function codes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from bmsgate.inverter.modbus.registermap import RegisterImage, RegisterKind, RegisterMap

__all__ = ["READ_CODES", "WRITE_CODES", "RegisterStore", "WriteCallback"]

READ_CODES: Final = {3: RegisterKind.HOLDING, 4: RegisterKind.INPUT, 23: RegisterKind.HOLDING}
"""Function codes that read, and the table each reads."""
WRITE_CODES: Final = frozenset({6, 16, 22})
"""Function codes that write holding registers (23 both reads and writes)."""

WriteCallback = Callable[[int, Sequence[int]], None]


class RegisterStore:
    """Our datastore: exactly the map's registers, refreshed from a :class:`RegisterImage`.

    Args:
        register_map: defines which addresses exist and which a master may write.
        on_write: called with ``(address, values)`` after a master wrote holding registers.
        before_read: called before every read, so the single writer can encode its newest status
            only when a master (or anyone) actually looks, instead of on every status.
    """

    def __init__(
        self,
        register_map: RegisterMap,
        on_write: WriteCallback | None = None,
        *,
        before_read: Callable[[], None] | None = None,
    ) -> None:
        self._on_write = on_write
        self._before_read = before_read
        self.use(register_map)

    def use(self, register_map: RegisterMap) -> None:
        """Serve `register_map`'s addresses from now on (a live swap: the server keeps running)."""
        self._tables = register_map.layout()
        self._writable = frozenset(
            entry.address + offset for entry in register_map.writable() for offset in range(entry.count)
        )

    def update(self, image: RegisterImage) -> None:
        """Replace the computed registers' values (called by the single writer)."""
        for kind, values in image.items():
            self._tables[kind].update(values)

    def snapshot(self, kind: RegisterKind) -> dict[int, int]:
        """A copy of one register table."""
        if self._before_read is not None:
            self._before_read()
        return dict(self._tables[kind])

    def read(self, kind: RegisterKind, address: int, count: int = 1) -> list[int]:
        """Register values, as a master would read them.

        Raises:
            KeyError: an address is not in the map.
        """
        if self._before_read is not None:
            self._before_read()
        table = self._tables[kind]
        return [table[a] for a in range(address, address + count)]

    # -- the datastore interface both servers call (pymodbus fixed these names and signatures) -----

    def reset(self) -> None:
        """Nothing to reset: values always come from the bank."""

    def validate(self, fc_as_hex: int, address: int, count: int = 1) -> bool:
        """Whether a request may touch these addresses (False → "illegal data address")."""
        addresses = range(address, address + count)
        if fc_as_hex in WRITE_CODES or fc_as_hex == 23:
            # FC 23 validates its read and write ranges with the same call: only the writable
            # registers can pass both, which is all a master needs to write here.
            return count > 0 and all(a in self._writable for a in addresses)
        kind = READ_CODES.get(fc_as_hex)
        if kind is None:
            return False
        table = self._tables[kind]
        return count > 0 and all(a in table for a in addresses)

    def getValues(self, fc_as_hex: int, address: int, count: int = 1) -> list[int]:  # noqa: N802
        """Values for a validated read."""
        return self.read(READ_CODES.get(fc_as_hex, RegisterKind.HOLDING), address, count)

    def setValues(self, fc_as_hex: int, address: int, values: Sequence[int | bool]) -> None:  # noqa: N802
        """Store a validated write of writable holding registers."""
        del fc_as_hex
        words = [int(value) & 0xFFFF for value in values]
        table = self._tables[RegisterKind.HOLDING]
        for offset, word in enumerate(words):
            if address + offset in self._writable:
                table[address + offset] = word
        if self._on_write is not None:
            self._on_write(address, words)
