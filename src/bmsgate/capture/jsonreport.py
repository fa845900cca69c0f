"""The JSON form of a :class:`CaptureReport`, written item by item.

`CaptureReport.to_dict` builds the whole document in memory; for a capture with tens of thousands of
polls that document, its serialised text and (worse) a terminal library's rendering of that text cost
many times the capture's size. Here each list item is serialised on its own and written at once, so the
only thing that grows with the capture is the report itself. The result parses to the same structure as
`to_dict`, plus exact totals (``*_count``) that stay right when `limit` shortens the lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import IO, Any

from bmsgate.capture.analysis import CaptureReport, ProtocolMatch

__all__ = ["write_json_report"]

_INDENT = "  "


def write_json_report(
    report: CaptureReport,
    out: IO[str],
    *,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write `report` as JSON to `out`.

    Args:
        report: the analysis result.
        out: a text stream.
        limit: list at most this many timeline events, exchanges and polls per match (totals stay exact).
        progress: called with the number of list items written so far, now and then.
    """
    start = report.timeline.start
    best = report.best_match
    timeline = report.timeline
    written = 0

    def items(values: Iterable[Any], render: Callable[[Any], Any], depth: int) -> None:
        nonlocal written
        pad = _INDENT * depth
        out.write("[")
        first = True
        for count, value in enumerate(values):
            if limit is not None and count >= limit:
                break
            out.write(("\n" if first else ",\n") + pad + _INDENT + json.dumps(render(value)))
            first = False
            written += 1
            if progress is not None and written % 2000 == 0:
                progress(written)
        out.write("]" if first else "\n" + pad + "]")

    def field(name: str, value: Any, depth: int = 1, *, last: bool = False) -> None:
        out.write(f"{_INDENT * depth}{json.dumps(name)}: {json.dumps(value)}{'' if last else ','}\n")

    def list_field(name: str, values: Iterable[Any], render: Callable[[Any], Any], depth: int = 1) -> None:
        out.write(f"{_INDENT * depth}{json.dumps(name)}: ")
        items(values, render, depth)
        out.write(",\n")

    def match(value: ProtocolMatch) -> None:
        pad = _INDENT * 2
        out.write(pad + "{\n")
        field("protocol", value.protocol, 3)
        field("connection", value.connection, 3)
        field("frames", value.frames, 3)
        field("rejected", value.rejected, 3)
        field("decoded", value.decoded, 3)
        field("requests_seen", list(value.requests_seen), 3)
        field("gatt_match", value.gatt_match, 3)
        field("poll_count", len(value.polls), 3)
        out.write(f'{_INDENT * 3}"polls": ')
        items(value.polls, lambda poll: poll.to_dict(start), 3)
        out.write("\n" + pad + "}")

    out.write("{\n")
    field("source", timeline.source)
    field("format", timeline.format)
    field("link_types", list(timeline.link_types))
    field("packet_count", timeline.packet_count)
    field("start", start)
    field("connections", [connection.to_dict() for connection in timeline.connections])
    field("handles", [handle.to_dict() for handle in report.handles])
    field("event_count", len(timeline.events))
    list_field("timeline", timeline.events, lambda event: event.to_dict(start))
    field("exchange_count", len(report.exchanges))
    list_field("exchanges", report.exchanges, lambda exchange: exchange.to_dict(start))
    field("protocol", best.protocol if best and best.decoded else None)
    out.write(f'{_INDENT}"protocol_matches": [')
    for index, value in enumerate(report.matches):
        out.write("\n" if index == 0 else ",\n")
        match(value)
    out.write("\n  ],\n" if report.matches else "],\n")
    field("warnings", list(report.warnings), last=True)
    out.write("}\n")
