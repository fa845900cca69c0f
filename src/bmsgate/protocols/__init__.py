"""Sans-IO protocol engine: declarative definitions, frame assembly, compiled decoders.

Typical use::

    from bmsgate.protocols import get_protocol, decode

    jbd = get_protocol("jbd")
    assembler = jbd.new_assembler()
    frames = assembler.feed(notification_bytes)
    snapshot = decode(jbd, frames, battery_id="house")
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from bmsgate.errors import DefinitionError
from bmsgate.model import BatterySnapshot, DeviceInfo
from bmsgate.protocols.compiled import CompiledProtocol, compile_definition, decode_hex_frames
from bmsgate.protocols.definition import ProtocolDefinition, definition_from_text, load_definition
from bmsgate.protocols.framing import AssemblerStats, Frame, FrameAssembler, FrameChecker
from bmsgate.protocols.session import (
    Action,
    DiscardPending,
    GiveUp,
    PollSession,
    ReplyReady,
    SessionTiming,
    SnapshotReady,
    WaitUntil,
    Write,
)

if TYPE_CHECKING:
    from bmsgate.catalog import Catalog

__all__ = [
    "Action",
    "AssemblerStats",
    "CompiledProtocol",
    "DiscardPending",
    "Frame",
    "FrameAssembler",
    "FrameChecker",
    "GiveUp",
    "PollSession",
    "ProtocolDefinition",
    "ReplyReady",
    "SessionTiming",
    "SnapshotReady",
    "WaitUntil",
    "Write",
    "compile_definition",
    "decode",
    "decode_hex_frames",
    "definition_from_text",
    "get_protocol",
    "load_definition",
    "load_protocol_file",
]


def get_protocol(name: str) -> CompiledProtocol:
    """A protocol by name from the catalog (built-in, or a system/pack file that shadows it), compiled once.

    Raises:
        DefinitionError: no protocol has that name (the message lists the available ones).
    """
    from bmsgate.catalog import is_path  # noqa: PLC0415 - the catalog imports this package

    if is_path(name):
        raise DefinitionError(f"{name!r} is a path, not a name; use load_protocol_file", source="protocol catalog")
    return _catalog().protocol(name)


def load_protocol_file(path: str | Path) -> CompiledProtocol:
    """Load and compile a definition file (pure data: it can never execute code).

    Raises:
        DefinitionError: unreadable, not YAML, or invalid (naming the file, field and reason).
    """
    # A Path is always a file to the catalog, also one named like a protocol ("mine.def").
    return _catalog().protocol(Path(path))


def _catalog() -> Catalog:
    from bmsgate.catalog import default_catalog  # noqa: PLC0415

    return default_catalog()


def decode(
    protocol: CompiledProtocol,
    frames: Iterable[Frame | bytes | bytearray],
    *,
    battery_id: str = "battery",
    timestamp: float | None = None,
    device: DeviceInfo | None = None,
    variant: str | None = None,
) -> BatterySnapshot:
    """Decode the reply frames of one poll into a snapshot (pure).

    Raw `bytes` are checked (markers, length, checksum) first; `Frame` objects from an assembler were
    checked already.

    Raises:
        FrameError: a raw frame is malformed.
        DecodeError: a frame's content is impossible for its fields.
        ProtocolError: the BMS flagged an error status.
        ValueError: `variant` is not one of the protocol's `variant_names`.
    """
    return protocol.decode(
        frames,
        battery_id=battery_id,
        timestamp=time.time() if timestamp is None else timestamp,
        device=device,
        variant=variant,
    )
