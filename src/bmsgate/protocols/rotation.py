"""Rotating replies (engine 6, 123\\SmartBMS): a streamed reply whose numbered frames each carry one item.

The poll session keeps, per connection, the newest frame of each number; a poll is answered once every number
the newest frame's count asks for has a frame. Numbers are one byte, so at most 256 frames are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bmsgate.protocols.constructs import rotating_reply

if TYPE_CHECKING:
    from bmsgate.protocols import CompiledProtocol
    from bmsgate.protocols.framing import Frame

__all__ = ["Rotation"]


class Rotation:
    """The frames of one protocol's rotating reply kept on one connection, oldest first."""

    def __init__(self, protocol: CompiledProtocol) -> None:
        """Keep nothing yet; `key` is None when the protocol has no rotating reply."""
        self._protocol = protocol
        self.key: int | None = rotating_reply(protocol.definition)
        self.frames: dict[int, Frame] = {}
        """Number → the newest frame of that number, in arrival order."""

    def clear(self) -> None:
        """The link was opened anew or dropped."""
        self.frames.clear()

    def keep(self, frames: list[Frame]) -> tuple[list[Frame], bool]:
        """Keep the frames of the rotating reply by number; return the others and whether any was kept."""
        others: list[Frame] = []
        kept = self.frames
        rotated = False
        for frame in frames:
            number = self._protocol.frame_number(frame) if frame.key == self.key else None
            if number is None:
                others.append(frame)
                continue
            kept.pop(number, None)  # re-inserted last: the dict stays in arrival order
            kept[number] = frame
            rotated = True
        return others, rotated

    def whole(self, reply: int | None) -> range | None:
        """The numbers the newest frame's count asks for, once each has a frame (None: still waiting)."""
        kept = self.frames
        if not kept:
            return None
        newest = next(reversed(kept.values()))
        numbers = self._protocol.frame_numbers(reply, self._protocol.variables_of([newest]))
        if numbers is None or not all(number in kept for number in numbers):
            return None
        return numbers
