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

from bmsgate.model import BatterySnapshot, DeviceInfo
from bmsgate.protocols.compiled import CompiledProtocol, compile_definition, decode_hex_frames
from bmsgate.protocols.definition import ProtocolDefinition, definition_from_text, load_definition
from bmsgate.protocols.framing import AssemblerStats, Frame, FrameAssembler, FrameChecker
from bmsgate.protocols.registry import (
    builtin_names,
    builtin_protocols,
    get_protocol,
    load_protocol_file,
    resolve_protocol,
)

__all__ = [
    "AssemblerStats",
    "CompiledProtocol",
    "Frame",
    "FrameAssembler",
    "FrameChecker",
    "ProtocolDefinition",
    "builtin_names",
    "builtin_protocols",
    "compile_definition",
    "decode",
    "decode_hex_frames",
    "definition_from_text",
    "get_protocol",
    "load_definition",
    "load_protocol_file",
    "resolve_protocol",
]


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
