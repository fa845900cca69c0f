"""``bmsgate capture analyze FILE``: the CLI's entry point into capture analysis.

The only place in this package that touches files: it reads the capture, writes the optional replay
export and skeleton definition, and turns every `BmsgateError` into a message and exit code 1.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from bmsgate.capture.analysis import analyze_capture
from bmsgate.capture.render import render_report
from bmsgate.capture.replayfile import write_replay
from bmsgate.capture.skeleton import skeleton_definition
from bmsgate.errors import BmsgateError, CaptureError

__all__ = ["run_capture_analyze"]


def run_capture_analyze(
    path: str,
    *,
    as_json: bool,
    export: str | None,
    skeleton: str | None,
    console: Console,
    error_console: Console | None = None,
) -> int:
    """Analyse a capture file and report; returns the process exit code (0 ok, 1 error).

    Args:
        path: btsnoop, pcap or pcapng file.
        as_json: print the JSON report instead of tables.
        export: write the primary connection's conversation as a replay file here.
        skeleton: write a starting protocol definition (YAML) here.
        console: where to print.
        error_console: where errors go (the CLI passes stderr); default: `console`.
    """
    try:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CaptureError(f"cannot read the file: {exc.strerror or exc}", source=path) from exc
        report = analyze_capture(data, path)
        if as_json:
            console.out(json.dumps(report.to_dict(), indent=2), highlight=False)
        else:
            render_report(report, console)
        if export is not None:
            replay = report.to_replay()
            write_replay(export, replay)
            if not as_json:
                console.print(f"Wrote {len(replay.records)} records to {export}", highlight=False)
        if skeleton is not None:
            text = skeleton_definition(report)
            try:
                Path(skeleton).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise CaptureError(f"cannot write the file: {exc.strerror or exc}", source=skeleton) from exc
            if not as_json:
                console.print(f"Wrote a definition skeleton to {skeleton}", highlight=False)
    except BmsgateError as exc:
        (error_console or console).print(f"bmsgate: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 1
    return 0
