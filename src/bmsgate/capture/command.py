"""``bmsgate capture analyze FILE``: the CLI's entry point into capture analysis.

The only place in this package that touches files: it reads the capture, writes the optional replay
export and skeleton definition, and turns every `BmsgateError` into a message and exit code 1.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import rich.progress
from rich.console import Console

from bmsgate.capture.analysis import analyze_capture
from bmsgate.capture.jsonreport import write_json_report
from bmsgate.capture.packets import CaptureBytes, Progress
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
    limit: int | None = None,
) -> int:
    """Analyse a capture file and report; returns the process exit code (0 ok, 1 error).

    Args:
        path: btsnoop, pcap or pcapng file.
        as_json: print the JSON report instead of tables.
        export: write the primary connection's conversation as a replay file here.
        skeleton: write a starting protocol definition (YAML) here.
        console: where to print.
        error_console: where errors go (the CLI passes stderr); default: `console`. Progress of long
            work is shown there when it is a terminal.
        limit: list at most this many events, exchanges and polls per match in the JSON report.
    """
    errors = error_console or console
    try:
        with _progress(errors) as progress:
            with _mapped(path) as data:
                report = analyze_capture(data, path, progress=progress)
            if as_json:
                # Straight to the stream: rich would hold a rendered copy many times the text's size.
                write_json_report(
                    report,
                    console.file,
                    limit=limit,
                    progress=None if progress is None else lambda done: progress("writing JSON", done, 0),
                )
                console.file.flush()
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
        errors.print(f"bmsgate: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 1
    return 0


@contextlib.contextmanager
def _mapped(path: str) -> Iterator[CaptureBytes]:
    """The file's bytes, mapped rather than read: a huge damaged file is refused after its first pages."""
    with contextlib.ExitStack() as stack:
        try:
            file = stack.enter_context(open(path, "rb"))
            # Pipes and empty files cannot be mapped; those are small or streamed, so read them.
            mappable = os.fstat(file.fileno()).st_size > 0 and Path(path).is_file()
            data: CaptureBytes = (
                stack.enter_context(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)) if mappable else file.read()
            )
        except OSError as exc:
            raise CaptureError(f"cannot read the file: {exc.strerror or exc}", source=path) from exc
        yield data


@contextlib.contextmanager
def _progress(console: Console) -> Iterator[Progress | None]:
    """A progress callback drawing on `console` if it is a terminal, else None (pipes and logs stay clean)."""
    if not console.is_terminal:
        yield None
        return
    columns = (
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.TaskProgressColumn(),
        rich.progress.TimeElapsedColumn(),
    )
    with rich.progress.Progress(*columns, console=console, transient=True, auto_refresh=False) as bar:
        tasks: dict[str, rich.progress.TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None, refresh=True)

        yield update
