"""Commands from the server: checked before anything is done. Pure.

There is no remote shell: :class:`~bmsgate.fleet.protocol.CommandKind` is the whole list. A command is
rejected (and the rejection reported with its reason) when it is malformed, of an unknown kind, of another
protocol version, already expired, or a repeat of one already handled (a broker re-delivers QoS 1).
"""

from __future__ import annotations

import collections
import json

from bmsgate.errors import BmsgateError
from bmsgate.fleet.protocol import CommandMessage, FleetMessageError, decode

__all__ = ["CommandRejected", "CommandScreen"]

_REMEMBERED = 256


class CommandRejected(BmsgateError):
    """A command the gateway will not execute.

    Attributes:
        reason: a short code (``json``, ``schema``, ``version``, ``unknown_kind``, ``too_large``, ``expired``,
            ``duplicate``).
        command_id: the command's id when it could be read, else None.
    """

    def __init__(self, reason: str, detail: str, command_id: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.command_id = command_id
        super().__init__(f"command {command_id or '?'} rejected: {reason}: {detail}")


def _readable_id(payload: bytes) -> str | None:
    """The ``id`` of a payload that failed validation, if it is a harmless short string."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    identifier = data.get("id") if isinstance(data, dict) else None
    if isinstance(identifier, str) and 0 < len(identifier) <= 64 and identifier.isprintable():
        return identifier
    return None


class CommandScreen:
    """Decides whether a received command may run (remembers recent ids to drop re-deliveries)."""

    def __init__(self) -> None:
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    def check(self, topic: str, payload: bytes, *, now: float) -> CommandMessage:
        """The command, when it may run now.

        Raises:
            CommandRejected: it may not; ``reason`` says why.
        """
        try:
            message = decode(topic, payload).message
        except FleetMessageError as exc:
            reason = exc.reason
            if reason == "schema" and "kind" in exc.detail:
                reason = "unknown_kind"
            command_id = _readable_id(payload) if reason != "too_large" else None
            raise CommandRejected(reason, exc.detail, command_id) from None
        if not isinstance(message, CommandMessage):
            raise CommandRejected("schema", f"not a command topic: {topic}")
        if message.id in self._seen:
            raise CommandRejected("duplicate", "already handled", message.id)
        self._seen[message.id] = None
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        if message.expires_at < now:
            raise CommandRejected("expired", f"expired {now - message.expires_at:.0f} s ago", message.id)
        return message
