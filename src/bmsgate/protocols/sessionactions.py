"""What a poll session asks its runtime to do (its actions) and the timing it runs by.

Kept apart from `bmsgate.protocols.session`, which re-exports every name here: the session is pure logic, and
these small immutable values are all the runtime and the vector runner need to know of it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final, TypeAlias

from bmsgate.errors import DeviceError

if TYPE_CHECKING:
    from bmsgate.model import BatterySnapshot
    from bmsgate.protocols.framing import Frame

__all__ = [
    "Action",
    "DiscardPending",
    "GiveUp",
    "ReplyReady",
    "SessionTiming",
    "SnapshotReady",
    "WaitUntil",
    "Write",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Write:
    """Send `data` to the BMS."""

    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class DiscardPending:
    """Drop received chunks not fed yet."""


@dataclasses.dataclass(frozen=True, slots=True)
class WaitUntil:
    """Feed chunks as they arrive until `deadline`, then call `tick`."""

    deadline: float


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotReady:
    """A poll completed."""

    snapshot: BatterySnapshot
    frames: tuple[Frame, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyReady:
    """A command exchange completed; `frame` is the acknowledgement (None when the command has no reply)."""

    frame: Frame | None


@dataclasses.dataclass(frozen=True, slots=True)
class GiveUp:
    """The job failed with `error`; `drop_link` when the link should be closed (the next poll reconnects)."""

    error: DeviceError
    drop_link: bool


Action: TypeAlias = Write | DiscardPending | WaitUntil | SnapshotReady | ReplyReady | GiveUp

_DISCARD: Final = DiscardPending()
"""The one instance the session hands out."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SessionTiming:
    """Timeouts and retries of a session (the poll-related part of `ClientOptions`).

    Attributes:
        request_timeout: seconds to wait for one reply (a request may set its own).
        retries: extra attempts per request after a timeout or a corrupt reply.
        retry_backoff: first pause between attempts; doubles each time.
        poll_deadline: a whole poll must finish within this many seconds (commands have no overall deadline).
    """

    request_timeout: float = 2.0
    retries: int = 2
    retry_backoff: float = 0.2
    poll_deadline: float = 15.0
