"""The one error of pack handling: a pack or its metadata that cannot be accepted, and why (a rollout counts it)."""

from __future__ import annotations

from bmsgate.errors import BmsgateError
from bmsgate.fleet.updates import FailureReason

__all__ = ["PackError"]


class PackError(BmsgateError):
    """A pack, an artifact or its signed metadata that is refused; nothing was applied.

    Attributes:
        reason: the :class:`~bmsgate.fleet.updates.FailureReason` a gateway reports.
        source: the file, target or URL concerned ("" when there is none).
    """

    def __init__(self, reason: FailureReason, message: str, *, source: str = "") -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)
