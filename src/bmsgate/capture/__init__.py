"""Reverse-engineering support: capture file readers and protocol guessing.

Read a btsnoop/pcap/pcapng capture into an ATT timeline (:func:`read_capture`), analyse it against the
protocol definitions (:func:`analyze_capture`), export a replay file, or draft a definition
(:func:`skeleton_definition`). See docs/capture-analysis.md.
"""

from bmsgate.capture.analysis import CaptureReport, analyze_capture, analyze_timeline
from bmsgate.capture.att import AttEvent, AttKind
from bmsgate.capture.replayfile import ReplayCapture, ReplayRecord, read_replay, write_replay
from bmsgate.capture.skeleton import skeleton_definition
from bmsgate.capture.timeline import CaptureTimeline, read_capture

__all__ = [
    "AttEvent",
    "AttKind",
    "CaptureReport",
    "CaptureTimeline",
    "ReplayCapture",
    "ReplayRecord",
    "analyze_capture",
    "analyze_timeline",
    "read_capture",
    "read_replay",
    "skeleton_definition",
    "write_replay",
]
