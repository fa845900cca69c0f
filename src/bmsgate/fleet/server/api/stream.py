"""The live stream behind the websocket: one subscriber of the live feed, fanned out to every browser.

Telemetry arrives far more often than a person can read it (5,000 messages/s at full fleet size), so updates
are coalesced: every ``interval_s`` the gateways that changed are read once from the store and their
summary (the overview row) is encoded once and sent to every client. The cost is then bounded by the number
of gateways that changed, not by messages × clients. Alarm changes are sent as they happen. The gateways
read here also keep the overview read model (:mod:`.overview`) current. A telemetry update the read model
can apply by itself (:meth:`.overview.OverviewCache.apply_telemetry`: SoC, cell delta, last seen) needs no
store read at all; that gateway's summary is sent from the read model at the next flush.

Messages to clients (JSON text):

* ``{"type": "hello"}`` after the token was accepted;
* ``{"type": "gateway", "gateway": <gateway summary>}``;
* ``{"type": "gateways", "ids": [<gateway id>, ...]}``: more than ``many_at_once`` gateways changed in one
  interval (a large fleet: 50,000 gateways at 10 s change ~1,250 per interval); one message naming them
  instead of a summary each, which would overflow every client's queue (a page re-asks for what it shows);
* ``{"type": "alarm", "alarm": <alarm>}``;
* ``{"type": "gateway_deleted", "id": <gateway id>}``;
* ``{"type": "rollout", "id": <rollout id>, "state": <its state>}``: reload that rollout if shown;
* ``{"type": "resync"}``: updates were lost (the feed or this client fell behind); reload what is shown.

A client whose queue is full is disconnected (it reconnects and reloads) rather than slowing the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any, Final

from bmsgate.fleet.server.api.overview import OverviewCache
from bmsgate.fleet.server.api.views import alarm_view
from bmsgate.fleet.server.live import LiveFeed, LiveKind, LiveUpdate
from bmsgate.fleet.server.store.repository import Repository, StoreError, UnknownRecord

__all__ = ["HELLO", "LiveClient", "LiveStream", "message"]

_log = logging.getLogger(__name__)


def message(kind: str, **fields: Any) -> str:
    """One message to a client as JSON text."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


HELLO: Final = message("hello")
_RESYNC: Final = message("resync")


class LiveClient:
    """One connected browser's outgoing queue."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize)
        self.overflowed = asyncio.Event()
        """Set when a message did not fit: the connection should be closed."""

    def offer(self, text: str) -> None:
        """Queue `text` without waiting."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.overflowed.set()


class LiveStream:
    """Coalesces the live feed into client messages (run :meth:`run` as one task per server)."""

    def __init__(
        self,
        feed: LiveFeed,
        store: Repository,
        overview: OverviewCache,
        *,
        interval_s: float = 0.25,
        client_queue: int = 1000,
        many_at_once: int = 100,
    ) -> None:
        self._feed = feed
        self._store = store
        self._overview = overview
        self._interval_s = interval_s
        self._client_queue = client_queue
        self._many_at_once = many_at_once
        self._clients: set[LiveClient] = set()
        self._dirty: set[str] = set()
        """Changed gateways to read from the store at the next flush."""
        self._applied: set[str] = set()
        """Changed gateways whose kept summary is current already (telemetry applied in place)."""
        self._wake = asyncio.Event()
        self.sent = 0
        """Messages queued to clients so far."""
        self.read_gateways = 0
        """Changed gateways read from the store (after coalescing)."""
        self.applied_updates = 0
        """Telemetry updates the read model applied in place (no store read)."""

    @property
    def client_count(self) -> int:
        """Browsers connected now."""
        return len(self._clients)

    @contextlib.contextmanager
    def connect(self) -> Iterator[LiveClient]:
        """A client queue, registered while the context is open."""
        client = LiveClient(self._client_queue)
        self._clients.add(client)
        try:
            yield client
        finally:
            self._clients.discard(client)

    def _broadcast(self, text: str) -> None:
        for client in list(self._clients):
            client.offer(text)
            self.sent += 1

    async def run(self) -> None:
        """Follow the feed until cancelled."""
        async with (
            self._feed.subscribe(maxsize=max(10_000, self._client_queue)) as subscription,
            asyncio.TaskGroup() as tasks,
        ):
            tasks.create_task(self._flush_forever())
            dropped = 0
            async for update in subscription:
                if subscription.dropped != dropped:
                    dropped = subscription.dropped
                    self._broadcast(_RESYNC)
                await self._take(update)

    async def _take(self, update: LiveUpdate) -> None:
        if update.kind is LiveKind.ROLLOUT:
            self._broadcast(message("rollout", id=update.data.get("id"), state=update.data.get("state")))
            return
        if update.kind is LiveKind.GATEWAY_DELETED:
            self._dirty.discard(update.gateway)
            self._overview.remove(update.gateway)
            self._broadcast(message("gateway_deleted", id=update.gateway))
            return
        if update.kind is LiveKind.ALARM:
            text = await self._alarm_message(update)
            if text is not None:
                self._broadcast(text)
        if update.kind is LiveKind.TELEMETRY and self._overview.apply_telemetry(update.gateway, update.data):
            self._applied.add(update.gateway)
            self.applied_updates += 1
        else:
            self._dirty.add(update.gateway)
        self._wake.set()

    async def _alarm_message(self, update: LiveUpdate) -> str | None:
        alarm_id = update.data.get("id")
        if not isinstance(alarm_id, int):
            return None
        try:
            record = await self._store.get_alarm(alarm_id)
        except UnknownRecord:
            return None
        except StoreError as exc:
            _log.warning("live stream: alarm %s not readable: %s", alarm_id, exc)
            return None
        return message("alarm", alarm=dataclasses.asdict(alarm_view(record)))

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._interval_s)
            changed, self._dirty = self._dirty, set()
            applied, self._applied = self._applied - changed, set()
            if (changed or applied) and (self._clients or self._overview.loaded):
                try:
                    await self._send_gateways(changed, applied)
                except StoreError as exc:
                    _log.warning("live stream: store not readable, %d updates skipped: %s", len(changed), exc)
                    self._broadcast(_RESYNC)

    async def _send_gateways(self, changed: set[str], applied: set[str]) -> None:
        # A few queries per few hundred ids (not a read of the whole fleet), in the summary form (the store
        # extracts SoC and cell delta; no snapshot is decoded here); a deleted gateway is simply not among
        # the records. Most of a large fleet's changes are `applied` already (telemetry) and read nothing.
        records = await self._store.get_gateway_summaries(changed) if changed else []
        self.read_gateways += len(changed)
        views = await self._overview.update_many(records)
        kept = [view for gateway in sorted(applied) if (view := self._overview.view(gateway)) is not None]
        if not self._clients:
            return
        if len(views) + len(kept) > self._many_at_once:
            self._broadcast(message("gateways", ids=[view.id for view in (*views, *kept)]))
            return
        for view in (*views, *kept):
            self._broadcast(message("gateway", gateway=dataclasses.asdict(view)))
