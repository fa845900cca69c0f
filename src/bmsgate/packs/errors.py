"""The one error of the packs package: a pack, an artifact or its metadata was refused, and why."""

from __future__ import annotations

from bmsgate.errors import BmsgateError
from bmsgate.fleet.updates import FailureReason

__all__ = ["PackError"]


class PackError(BmsgateError):
    """A pack, an artifact or trust metadata was refused; ``reason`` is what the gateway reports.

    Args:
        reason: the failure reason reported to the server (signature, expired, replay, mismatch, ...).
        message: what went wrong, for a person (names the file, role or target).
        source: the file or URL concerned, if any.
    """

    def __init__(self, reason: FailureReason, message: str, *, source: str = "") -> None:
        self.reason = reason
        self.message = message
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)
