"""Terminal rendering of a :class:`CaptureReport` with rich tables (CLI only)."""

from __future__ import annotations

from typing import Any, Final

from rich.console import Console
from rich.table import Table

from bmsgate.capture.analysis import CaptureReport

__all__ = ["render_report"]

_MAX_TIMELINE_ROWS: Final = 200
#: The snapshot fields shown, with their units (the snapshot is in SI units; "" for counts and names).
_SNAPSHOT_FIELDS: Final = (
    ("voltage", "V"),
    ("current", "A"),
    ("power", "W"),
    ("soc", "%"),
    ("remaining_capacity", "Ah"),
    ("full_capacity", "Ah"),
    ("cycles", ""),
    ("cell_count", ""),
    ("cell_min", "V"),
    ("cell_max", "V"),
    ("cell_delta", "V"),
    ("temperatures", "°C"),
    ("mosfet_temperature", "°C"),
    ("alarms", ""),
)


def _number(value: Any) -> str:
    # The wire form is unrounded (binary floats such as 23.699999999999999); no BMS measures finer
    # than 0.1 mV, so four decimals show every reported digit.
    return str(round(value, 4)) if isinstance(value, float) else str(value)


def _with_unit(value: Any, unit: str) -> str:
    """``66.23 V``; lists as ``23.7, 25.4 °C``; a field the protocol does not report as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, list):
        if not value:
            return "none"
        text = ", ".join(_number(item) for item in value)
    else:
        text = _number(value)
    if not unit:
        return text
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}"


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
        last = next((poll for poll in reversed(match.polls) if poll.decoded is not None), None)
        if last is not None:
            snapshot = last.snapshot or {}
            values = Table(title=f"{match.protocol}: last decoded values")
            values.add_column("field")
            values.add_column("value")
            for key, unit in _SNAPSHOT_FIELDS:
                values.add_row(key, _with_unit(snapshot.get(key), unit))
            console.print(values)
        for poll in match.polls:
            if poll.error:
                console.print(f"  decode error at t={poll.timestamp - start:.3f} s: {poll.error}")
                break

    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)
