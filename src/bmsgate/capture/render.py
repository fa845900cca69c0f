"""Terminal rendering of a :class:`CaptureReport` with rich tables (CLI only)."""

from __future__ import annotations

from typing import Final

from rich.console import Console
from rich.table import Table

from bmsgate.capture.analysis import CaptureReport

__all__ = ["render_report"]

_MAX_TIMELINE_ROWS: Final = 200
_SNAPSHOT_KEYS: Final = (
    "voltage",
    "current",
    "soc",
    "remaining_capacity",
    "full_capacity",
    "cycles",
    "cell_count",
    "cell_min",
    "cell_max",
    "temperatures",
    "alarms",
)


def _short_uuid(uuid: str | None) -> str:
    if uuid is None:
        return "-"
    if uuid.endswith("-0000-1000-8000-00805f9b34fb") and uuid.startswith("0000"):
        return uuid[4:8]
    return uuid


def render_report(report: CaptureReport, console: Console) -> None:
    """Print connections, handles, the timeline (first rows), exchanges and protocol matches."""
    timeline = report.timeline
    start = timeline.start
    console.print(
        f"[bold]{timeline.source}[/]: {timeline.format}, {timeline.packet_count} packets "
        f"({', '.join(timeline.link_types) or 'no packets'}), {len(timeline.events)} ATT events"
    )

    connections = Table(title="Connections")
    for column in ("id", "peer address", "name", "encrypted"):
        connections.add_column(column)
    for connection in timeline.connections:
        connections.add_row(
            connection.id, connection.peer_address or "-", connection.peer_name or "-", str(connection.encrypted)
        )
    console.print(connections)

    handles = Table(title="Handles")
    for column in ("connection", "handle", "uuid", "properties", "writes", "notifications"):
        handles.add_column(column)
    for handle in report.handles:
        uuid = "CCCD" if handle.is_cccd else _short_uuid(handle.uuid)
        handles.add_row(
            handle.connection,
            f"0x{handle.handle:04x}",
            uuid,
            ", ".join(handle.properties or ()) or "-",
            str(handle.writes),
            str(handle.notifications),
        )
    console.print(handles)

    events = Table(title=f"Timeline (first {_MAX_TIMELINE_ROWS} events)")
    for column in ("t (s)", "connection", "dir", "kind", "handle", "uuid", "data"):
        events.add_column(column, overflow="fold")
    for event in timeline.events[:_MAX_TIMELINE_ROWS]:
        events.add_row(
            f"{event.timestamp - start:.3f}",
            event.connection,
            event.direction.value,
            event.kind.value,
            f"0x{event.handle:04x}",
            _short_uuid(event.uuid),
            event.value.hex(" "),
        )
    console.print(events)

    exchanges = Table(title="Requests and responses")
    for column in ("t (s)", "connection", "request", "response"):
        exchanges.add_column(column, overflow="fold")
    for exchange in report.exchanges[:_MAX_TIMELINE_ROWS]:
        first = exchange.request or exchange.responses[0]
        exchanges.add_row(
            f"{first.timestamp - start:.3f}",
            exchange.connection,
            exchange.request.value.hex(" ") if exchange.request else "(unsolicited)",
            exchange.response_bytes.hex(" ") or "-",
        )
    console.print(exchanges)

    if not report.matches:
        console.print("No protocol definition recognises these frames; try --skeleton to start one.")
    for match in report.matches:
        console.print(
            f"[bold]{match.protocol}[/] on {match.connection}: {match.frames} valid frames, "
            f"{match.decoded} decoded polls, requests seen: {', '.join(match.requests_seen) or 'none'}, "
            f"GATT profile match: {match.gatt_match}"
        )
        decoded = [poll for poll in match.polls if poll.snapshot is not None]
        if decoded:
            snapshot = decoded[-1].snapshot or {}
            values = Table(title=f"{match.protocol}: last decoded values")
            values.add_column("field")
            values.add_column("value")
            for key in _SNAPSHOT_KEYS:
                values.add_row(key, str(snapshot.get(key)))
            console.print(values)
        for poll in match.polls:
            if poll.error:
                console.print(f"  decode error at t={poll.timestamp - start:.3f} s: {poll.error}")
                break

    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)
