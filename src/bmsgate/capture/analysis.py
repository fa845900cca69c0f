"""Analysis of an ATT timeline: request/response pairs and which protocol decodes the traffic.

Per connection, every write (except CCCD subscriptions) opens an :class:`Exchange` that collects the
notifications and indications arriving until the next write. Every protocol definition's frame
assembler then runs over the connection's notification stream; complete frames are grouped into polls
(a poll ends when a reply key repeats) and decoded. Pure: bytes in, :class:`CaptureReport` out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from bmsgate.capture.att import CCCD_UUID, AttEvent, AttKind
from bmsgate.capture.packets import CaptureBytes, Progress
from bmsgate.capture.replayfile import ReplayCapture, ReplayRecord
from bmsgate.capture.timeline import CaptureTimeline, read_capture
from bmsgate.catalog import default_catalog
from bmsgate.errors import ProtocolError
from bmsgate.model import BatterySnapshot
from bmsgate.protocols import CompiledProtocol, Frame

__all__ = [
    "CaptureReport",
    "DecodedPoll",
    "Exchange",
    "HandleSummary",
    "ProtocolMatch",
    "analyze_capture",
    "analyze_timeline",
]

_CCCD_VALUES: Final = frozenset({b"\x00\x00", b"\x01\x00", b"\x02\x00"})


@dataclasses.dataclass(frozen=True, slots=True)
class Exchange:
    """One write and the notifications that followed it on the same connection.

    Attributes:
        connection: the connection id.
        request: the write (``None`` for notifications that arrived before any write).
        responses: notifications/indications until the next write, in order.
    """

    connection: str
    request: AttEvent | None
    responses: tuple[AttEvent, ...]

    @property
    def response_bytes(self) -> bytes:
        """The notification payloads joined (one reply split over several notifications)."""
        return b"".join(event.value for event in self.responses)

    def to_dict(self, start: float) -> dict[str, Any]:
        """JSON form; times relative to `start`."""
        request = self.request
        return {
            "connection": self.connection,
            "t": round((request or self.responses[0]).timestamp - start, 6),
            "request": None
            if request is None
            else {
                "kind": request.kind.value,
                "handle": request.handle,
                "uuid": request.uuid,
                "data": request.value.hex(),
            },
            "responses": [
                {"t": round(event.timestamp - start, 6), "handle": event.handle, "data": event.value.hex()}
                for event in self.responses
            ],
            "response": self.response_bytes.hex(),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class HandleSummary:
    """What one handle of one connection did in the capture."""

    connection: str
    handle: int
    uuid: str | None
    service: str | None
    properties: tuple[str, ...] | None
    writes: int
    notifications: int
    is_cccd: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "connection": self.connection,
            "handle": self.handle,
            "uuid": self.uuid,
            "service": self.service,
            "properties": list(self.properties) if self.properties is not None else None,
            "writes": self.writes,
            "notifications": self.notifications,
            "cccd": self.is_cccd,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class DecodedPoll:
    """A group of frames decoded together (one poll's replies).

    Attributes:
        timestamp: time of the notification that completed the last frame.
        raw_frames: the frames' bytes.
        decoded: the decoded snapshot, or None when decoding failed.
        error: why decoding failed.
    """

    timestamp: float
    raw_frames: tuple[bytes, ...]
    decoded: BatterySnapshot | None
    error: str | None = None

    # A long capture has tens of thousands of polls: the JSON forms are made when asked for, not kept.
    @property
    def frames(self) -> tuple[str, ...]:
        """The frames, as hex."""
        return tuple(frame.hex() for frame in self.raw_frames)

    @property
    def snapshot(self) -> dict[str, Any] | None:
        """The decoded snapshot in its JSON form, or None when decoding failed."""
        return None if self.decoded is None else self.decoded.to_dict()

    def to_dict(self, start: float) -> dict[str, Any]:
        """JSON form; time relative to `start`."""
        return {
            "t": round(self.timestamp - start, 6),
            "frames": list(self.frames),
            "snapshot": self.snapshot,
            "error": self.error,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ProtocolMatch:
    """How well one protocol definition explains one connection's traffic.

    Attributes:
        protocol: definition name.
        connection: the connection id.
        frames: valid frames (length, markers and checksum right) assembled from the notifications.
        rejected: candidate frames the assembler rejected.
        requests_seen: names of the definition's requests that appear byte for byte among the writes.
        gatt_match: the notify/write characteristics used match one of the definition's GATT profiles.
        polls: the decoded frame groups.
    """

    protocol: str
    connection: str
    frames: int
    rejected: int
    requests_seen: tuple[str, ...]
    gatt_match: bool
    polls: tuple[DecodedPoll, ...]

    @property
    def decoded(self) -> int:
        """Polls that decoded into a snapshot."""
        return sum(1 for poll in self.polls if poll.decoded is not None)

    @property
    def score(self) -> tuple[int, int, int, int]:
        """Sort key: decoded polls, frames, requests seen, GATT match (higher is better)."""
        return (self.decoded, self.frames, len(self.requests_seen), int(self.gatt_match))

    def to_dict(self, start: float) -> dict[str, Any]:
        """JSON form."""
        return {
            "protocol": self.protocol,
            "connection": self.connection,
            "frames": self.frames,
            "rejected": self.rejected,
            "decoded": self.decoded,
            "requests_seen": list(self.requests_seen),
            "gatt_match": self.gatt_match,
            "polls": [poll.to_dict(start) for poll in self.polls],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class CaptureReport:
    """The result of analysing one capture.

    Attributes:
        timeline: what the readers found (connections, handles, ATT events, warnings).
        handles: per connection and handle, what was written/notified.
        exchanges: request/response pairs per connection, in time order.
        matches: protocol matches with at least one valid frame, best first.
    """

    timeline: CaptureTimeline
    handles: tuple[HandleSummary, ...]
    exchanges: tuple[Exchange, ...]
    matches: tuple[ProtocolMatch, ...]

    @property
    def best_match(self) -> ProtocolMatch | None:
        """The protocol that explains the traffic best, if any decoded or framed anything."""
        return self.matches[0] if self.matches else None

    @property
    def warnings(self) -> tuple[str, ...]:
        """Reading problems (truncation, malformed packets, encrypted links)."""
        return self.timeline.warnings

    def primary_connection(self) -> str | None:
        """The connection of the best match, else the one with the most data events."""
        if self.best_match is not None:
            return self.best_match.connection
        counts: dict[str, int] = {}
        for exchange in self.exchanges:
            counts[exchange.connection] = counts.get(exchange.connection, 0) + 1 + len(exchange.responses)
        return max(counts, key=counts.__getitem__) if counts else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (times in seconds from the first ATT event)."""
        start = self.timeline.start
        best = self.best_match
        return {
            "source": self.timeline.source,
            "format": self.timeline.format,
            "link_types": list(self.timeline.link_types),
            "packet_count": self.timeline.packet_count,
            "start": start,
            "connections": [connection.to_dict() for connection in self.timeline.connections],
            "handles": [handle.to_dict() for handle in self.handles],
            "timeline": [event.to_dict(start) for event in self.timeline.events],
            "exchanges": [exchange.to_dict(start) for exchange in self.exchanges],
            "protocol": best.protocol if best and best.decoded else None,
            "protocol_matches": [match.to_dict(start) for match in self.matches],
            "warnings": list(self.warnings),
        }

    def to_replay(self, connection: str | None = None) -> ReplayCapture:
        """The conversation of one connection (default: :meth:`primary_connection`) as a replay file.

        Writes become ``tx`` records (CCCD subscriptions left out), notifications and indications
        ``rx`` records; times start at 0 with the first record.
        """
        chosen = connection or self.primary_connection()
        best = self.best_match
        protocol = best.protocol if best is not None and best.connection == chosen and best.decoded else None
        events = [
            event
            for exchange in self.exchanges
            if exchange.connection == chosen
            for event in ((exchange.request,) if exchange.request else ()) + exchange.responses
        ]
        start = events[0].timestamp if events else 0.0
        records: list[ReplayRecord] = []
        for event in events:
            # Clamp: capture clocks may step back slightly; the replay format requires order.
            t = max(event.timestamp - start, records[-1].t if records else 0.0)
            records.append(ReplayRecord(t, "tx" if event.kind.is_write else "rx", event.value))
        return ReplayCapture(protocol=protocol, source=self.timeline.source, records=tuple(records))


def analyze_capture(
    data: CaptureBytes,
    source: str = "<capture>",
    definitions: Sequence[CompiledProtocol] | None = None,
    *,
    progress: Progress | None = None,
) -> CaptureReport:
    """Read a capture (btsnoop, pcap, pcapng) and analyse it against protocol definitions.

    Args:
        data: the capture file's bytes.
        source: name for messages (usually the file name).
        definitions: compiled protocols to try; the built-in ones by default.
        progress: told how reading and matching get on.

    Raises:
        CaptureError: the capture file is unreadable.
    """
    return analyze_timeline(read_capture(data, source=source, progress=progress), definitions, progress=progress)


def analyze_timeline(
    timeline: CaptureTimeline,
    definitions: Sequence[CompiledProtocol] | None = None,
    *,
    progress: Progress | None = None,
) -> CaptureReport:
    """Analyse an already decoded timeline (see :func:`analyze_capture`)."""
    protocols = default_catalog().protocols() if definitions is None else list(definitions)
    cccd_handles = _cccd_handles(timeline)
    exchanges = _exchanges(timeline.events, cccd_handles)
    connections = list(dict.fromkeys(exchange.connection for exchange in exchanges))
    matches = []
    for index, protocol in enumerate(protocols):
        if progress is not None:
            progress("matching protocols", index, len(protocols))
        for connection in connections:
            match = _match(protocol, connection, exchanges, timeline)
            if match.frames:
                matches.append(match)
    matches.sort(key=lambda match: match.score, reverse=True)
    return CaptureReport(
        timeline=timeline,
        handles=_handle_summaries(timeline, cccd_handles),
        exchanges=tuple(exchanges),
        matches=tuple(matches),
    )


# -- exchanges ------------------------------------------------------------------------------------


def _cccd_handles(timeline: CaptureTimeline) -> frozenset[tuple[str, int]]:
    """Handles that are Client Characteristic Configuration descriptors.

    Known from discovery, or guessed: a 2-byte 0000/0100/0200 write to the handle right after one that
    notifies (where CCCDs sit in practically every GATT server).
    """
    known = {(c.connection, c.handle) for c in timeline.characteristics if c.uuid == CCCD_UUID}
    notifying = {(event.connection, event.handle) for event in timeline.events if event.kind.is_notification}
    guessed = {
        (event.connection, event.handle)
        for event in timeline.events
        if event.kind.is_write
        and event.uuid is None
        and event.value in _CCCD_VALUES
        and (event.connection, event.handle - 1) in notifying
    }
    return frozenset(known | guessed)


def _exchanges(events: Sequence[AttEvent], cccd_handles: frozenset[tuple[str, int]]) -> list[Exchange]:
    open_exchanges: dict[str, tuple[AttEvent | None, list[AttEvent]]] = {}
    finished: list[Exchange] = []
    for event in events:
        if event.kind.is_write:
            if (event.connection, event.handle) in cccd_handles:
                continue
            previous = open_exchanges.pop(event.connection, None)
            if previous is not None and (previous[0] is not None or previous[1]):
                finished.append(Exchange(event.connection, previous[0], tuple(previous[1])))
            open_exchanges[event.connection] = (event, [])
        elif event.kind.is_notification:
            open_exchanges.setdefault(event.connection, (None, []))[1].append(event)
    finished.extend(
        Exchange(connection, request, tuple(responses))
        for connection, (request, responses) in open_exchanges.items()
        if request is not None or responses
    )
    finished.sort(key=lambda exchange: (exchange.request or exchange.responses[0]).timestamp)
    return finished


def _handle_summaries(timeline: CaptureTimeline, cccd_handles: frozenset[tuple[str, int]]) -> tuple[HandleSummary, ...]:
    discovered = {(c.connection, c.handle): c for c in timeline.characteristics}
    counts: dict[tuple[str, int], list[int]] = {}
    for event in timeline.events:
        tally = counts.setdefault((event.connection, event.handle), [0, 0])
        tally[0 if event.kind.is_write else 1] += event.kind is not AttKind.READ
    summaries = []
    for key in sorted(set(counts) | set(discovered)):
        characteristic = discovered.get(key)
        writes, notifications = counts.get(key, [0, 0])
        uuid = characteristic.uuid if characteristic else None
        summaries.append(
            HandleSummary(
                connection=key[0],
                handle=key[1],
                uuid=uuid,
                service=characteristic.service if characteristic else None,
                properties=characteristic.property_names
                if characteristic and characteristic.properties is not None
                else None,
                writes=writes,
                notifications=notifications,
                is_cccd=key in cccd_handles,
            )
        )
    return tuple(summaries)


# -- protocol matching ------------------------------------------------------------------------------


def _match(
    protocol: CompiledProtocol, connection: str, exchanges: Sequence[Exchange], timeline: CaptureTimeline
) -> ProtocolMatch:
    assembler = protocol.new_assembler()
    frames: list[tuple[float, Frame]] = []
    writes: set[bytes] = set()
    used_uuids: set[tuple[str, str]] = set()
    # Frames with no marker on the wire and no checksum (Super-B) are any chunk of the right size: believed
    # only on the protocol's own notify characteristic, or every capture of 20-byte notifications is one.
    framing = protocol.definition.framing
    own_notify = {uuid for profile in protocol.gatt_profiles for uuid in (profile.notify, *profile.also_notify)}
    unchecked = not framing.marker_on_wire and framing.checksum is None
    for exchange in exchanges:
        if exchange.connection != connection:
            continue
        if exchange.request is not None:
            writes.add(exchange.request.value)
            if exchange.request.uuid:
                used_uuids.add(("write", exchange.request.uuid))
        for event in exchange.responses:
            if event.uuid:
                used_uuids.add(("notify", event.uuid))
            if unchecked and event.uuid not in own_notify:
                continue
            frames.extend((event.timestamp, frame) for frame in assembler.feed(event.value))
    requests_seen = tuple(request.name for request in protocol.requests if protocol.wire(request.frame) in writes)
    gatt_match = any(
        {("notify", profile.notify), *((("write", profile.write),) if profile.write else ())} <= used_uuids
        for profile in protocol.gatt_profiles
    )
    return ProtocolMatch(
        protocol=protocol.name,
        connection=connection,
        frames=len(frames),
        rejected=assembler.stats.rejected,
        requests_seen=requests_seen,
        gatt_match=gatt_match,
        polls=tuple(_decode_polls(protocol, frames)),
    )


def _decode_polls(protocol: CompiledProtocol, frames: Sequence[tuple[float, Frame]]) -> list[DecodedPoll]:
    polls: list[DecodedPoll] = []
    group: dict[int, Frame] = {}
    group_time = 0.0

    def flush() -> None:
        if group:
            polls.append(_decode_group(protocol, list(group.values()), group_time))
            group.clear()

    for timestamp, frame in frames:
        if frame.key is None:
            flush()
            polls.append(_decode_group(protocol, [frame], timestamp))
            continue
        if frame.key in group:
            flush()
        group[frame.key] = frame
        group_time = timestamp
    flush()
    return polls


def _decode_group(protocol: CompiledProtocol, frames: list[Frame], timestamp: float) -> DecodedPoll:
    raw_frames = tuple(frame.raw for frame in frames)
    try:
        snapshot = protocol.decode(frames, battery_id="capture", timestamp=timestamp)
    except ProtocolError as exc:
        return DecodedPoll(timestamp, raw_frames, None, str(exc))
    return DecodedPoll(timestamp, raw_frames, snapshot)
