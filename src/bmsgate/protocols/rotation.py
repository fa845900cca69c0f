"""Rotating replies (engine 6, 123\\SmartBMS): a streamed reply whose numbered frames each carry one item.

The poll session keeps, per connection, the newest frame of each number; a poll is answered once every number
the newest frame's count asks for has a frame. Numbers are one byte, so at most 256 frames are kept.

Kept frames must never stand in for a stream that stopped: a poll is answered only when a frame of the rotation
arrived since the previous answer, and a number whose newest frame is more than `STALE_AFTER_ROTATIONS`
rotations behind the newest frame counts as missing (that cell stopped arriving: its value is not current).
A rotation is as many frames as the stream has distinct numbers (at least the count; at most 256).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bmsgate.protocols.constructs import rotating_reply

if TYPE_CHECKING:
    from bmsgate.protocols import CompiledProtocol
    from bmsgate.protocols.framing import Frame

__all__ = ["STALE_AFTER_ROTATIONS", "Rotation"]

STALE_AFTER_ROTATIONS: Final = 2
"""Rotations after which a number's newest frame no longer counts as current."""


class Rotation:
    """The frames of one protocol's rotating reply kept on one connection, oldest first."""

    def __init__(self, protocol: CompiledProtocol) -> None:
        """Keep nothing yet; `key` is None when the protocol has no rotating reply."""
        self._protocol = protocol
        self.key: int | None = rotating_reply(protocol.definition)
        self.frames: dict[int, Frame] = {}
        """Number → the newest frame of that number, in arrival order."""
        self._arrival: dict[int, int] = {}
        """Number → the position of its newest frame in the rotation's frames of this connection."""
        self._arrived = 0
        self._unanswered = False
        """A frame arrived since the last answer (`answered`)."""

    def clear(self) -> None:
        """The link was opened anew or dropped."""
        self.frames.clear()
        self._arrival.clear()
        self._arrived = 0
        self._unanswered = False

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
            self._arrived += 1
            self._arrival[number] = self._arrived
            rotated = True
        self._unanswered = self._unanswered or rotated
        return others, rotated

    def whole(self, reply: int | None) -> range | None:
        """The numbers the newest frame's count asks for, once each has a current frame (None: still waiting).

        Current: a frame arrived since the last answer, and each number's newest frame is at most
        `STALE_AFTER_ROTATIONS` rotations behind the newest frame.
        """
        kept = self.frames
        if not kept or not self._unanswered:
            return None
        newest = next(reversed(kept.values()))
        numbers = self._protocol.frame_numbers(reply, self._protocol.variables_of([newest]))
        if numbers is None:
            return None
        # One rotation: every number the stream sends, those beyond the count included (a cell since removed).
        rotation = max(len(numbers), len(kept), 1)
        oldest_current = self._arrived - STALE_AFTER_ROTATIONS * rotation
        arrival = self._arrival
        if not all(number in kept and arrival[number] > oldest_current for number in numbers):
            return None
        return numbers

    def answered(self) -> None:
        """A poll was answered from the kept frames: the next one needs a frame that arrives after it."""
        self._unanswered = False
