"""A definition's keep-alive: bytes the poll session writes every few seconds while connected (pure, engine 7).

123\\SmartBMS gen3 BLE modules only pass on what the BMS sent them while the central keeps writing ``$``
(the vendor app: every 330 ms): without it a PIN is never acknowledged and no line ever arrives. The session
therefore owns the schedule, as it owns every other deadline: each action list it returns is passed through
:meth:`KeepAlive.around`, which puts the keep-alive write in front when it is due and pulls the list's
`WaitUntil` forward to the next one, so a runtime that carries out the actions writes it on time during a
poll without knowing why. Between polls the runtime keeps ticking the idle session while the link stays open
(`PollSession.tick` then returns :meth:`KeepAlive.idle`). A new connection writes it at once.

With a ``warm_up`` the session writes only the keep-alive for that many seconds after a connection's first one
before it writes any request (aiobmsble lets the module see ``$`` for 1.5 s before ``PW<pin>!``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bmsgate.protocols.sessionactions import Action, WaitUntil, Write

if TYPE_CHECKING:
    from bmsgate.protocols.requestspec import KeepAliveSpec

__all__ = ["KeepAlive"]


class KeepAlive:
    """The keep-alive schedule of one session (a definition without ``keep_alive`` changes nothing)."""

    def __init__(self, spec: KeepAliveSpec | None) -> None:
        self._write = None if spec is None else Write(spec.frame)
        self._period = 0.0 if spec is None else spec.period
        self._warm_up = 0.0 if spec is None else spec.warm_up
        self._due = float("-inf")
        self._first: float | None = None
        """When this connection's first keep-alive went out (None: not yet)."""

    @property
    def enabled(self) -> bool:
        """Whether the definition asks for a keep-alive."""
        return self._write is not None

    def reset(self) -> None:
        """A new connection: the next action list starts with the keep-alive."""
        self._due = float("-inf")
        self._first = None

    def warming_until(self, now: float) -> float | None:
        """Until when requests must wait for the warm-up (None: they need not; the first write goes out now)."""
        if self._warm_up <= 0 or self._write is None:
            return None
        if self._first is None:
            self._first = now  # the action list being built starts with the connection's first keep-alive
        end = self._first + self._warm_up
        return end if now < end else None

    def around(self, now: float, actions: list[Action]) -> list[Action]:
        """`actions` with the keep-alive write in front when due, and a wait that ends by the next one."""
        write = self._write
        if write is None:
            return actions
        if now >= self._due:
            actions.insert(0, write)
            self._due = now + self._period
            if self._first is None:
                self._first = now
        last = actions[-1] if actions else None
        if isinstance(last, WaitUntil) and last.deadline > self._due:
            actions[-1] = WaitUntil(self._due)
        return actions

    def idle(self, now: float) -> list[Action]:
        """Between polls: the write when due, then the wait until the next (nothing without a keep-alive)."""
        if self._write is None:
            return []
        return self.around(now, [WaitUntil(float("inf"))])
