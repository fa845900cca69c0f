"""Which address of a broker tier to try first: the one after the node that last failed or dropped us.

:meth:`BrokerSettings.addresses` lists a tier's nodes (``host:port``, then ``hosts``). Each reconnect is a
new :func:`bmsgate.mqtt.client.connect` call with the same frozen settings, so what one attempt learnt
about a node must outlive it: without that, every reconnect began at ``host`` again, and a dead first node
that does not refuse but times out cost each reconnect its whole connect timeout (10 s).

The memory is per address list and per process: every connection of a process to one tier (a gateway's
agent, a server's command sender) shares what it learnt; the first of them to find a node dead saves the
others the wait. It is bounded (:data:`_REMEMBERED` lists; the oldest forgotten first).
"""

from __future__ import annotations

import collections
import threading
from typing import Final

__all__ = ["AddressRotation", "rotation_for"]

Address = tuple[str, int]

_REMEMBERED: Final = 256
"""Address lists a process remembers a starting point for (a process talks to one or two broker tiers)."""


class AddressRotation:
    """The order to try one tier's addresses in; moves past an address that failed or dropped a session."""

    __slots__ = ("_addresses", "_lock", "_start")

    def __init__(self, addresses: tuple[Address, ...]) -> None:
        if not addresses:
            raise ValueError("a broker tier needs at least one address")
        self._addresses = addresses
        self._start = 0
        self._lock = threading.Lock()

    def in_order(self) -> list[Address]:
        """Every address once, from the current starting point on (wrapping round)."""
        with self._lock:
            start = self._start
        return [*self._addresses[start:], *self._addresses[:start]]

    def connected(self, address: Address) -> None:
        """`address` took a session: the next attempt starts there again."""
        with self._lock:
            self._start = self._index(address, self._start)

    def failed(self, address: Address) -> None:
        """`address` did not connect, or its session broke: the next attempt starts at the one after it.

        Only when it is the current starting point: a late report about a node already passed over must
        not move the start away from one that works.
        """
        with self._lock:
            index = self._index(address, -1)
            if index == self._start:
                self._start = (index + 1) % len(self._addresses)

    def _index(self, address: Address, default: int) -> int:
        try:
            return self._addresses.index(address)
        except ValueError:
            return default


_rotations: collections.OrderedDict[tuple[Address, ...], AddressRotation] = collections.OrderedDict()
_rotations_lock = threading.Lock()


def rotation_for(addresses: list[Address]) -> AddressRotation:
    """This process's rotation for the tier `addresses` (created on first use)."""
    key = tuple(addresses)
    with _rotations_lock:
        rotation = _rotations.get(key)
        if rotation is None:
            rotation = _rotations[key] = AddressRotation(key)
            while len(_rotations) > _REMEMBERED:
                _rotations.popitem(last=False)
        else:
            _rotations.move_to_end(key)
        return rotation
