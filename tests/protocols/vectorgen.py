"""Writes the conformance vectors under spec/vectors/ (run ``scripts/generate-vectors``).

The checked-in JSON is the contract (tests/protocols/test_vectors.py replays it); this module only makes
regenerating it repeatable. Frames come from the protocol tests, which cite where each one was captured
or how it was built; the ``source`` of every vector says which.

Session transcripts are recorded by driving a `PollSession` against a scripted link in virtual time: each
written request is answered by its reply frames, split into the protocol's notification size, arriving
`_LATENCY` after the write and `_GAP` apart. Chunks that arrived while nobody listened wait until the
session asks for them, exactly as a transport queues them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from bmsgate.catalog import Kind, default_catalog
from bmsgate.protocols import (
    Action,
    CompiledProtocol,
    DiscardPending,
    PollSession,
    ReplyReady,
    SessionTiming,
    SnapshotReady,
    WaitUntil,
    Write,
    get_protocol,
)
from bmsgate.protocols.definition import RequestSpec
from bmsgate.protocols.wirekey import wire_key, xor_bytes

from . import (
    public_frames,
    test_ant,
    test_ant_leg,
    test_cbtpwr,
    test_daly,
    test_eg4,
    test_jbd,
    test_jk,
    test_litime,
    test_renogy,
    test_renogy_pro,
    test_roypow,
    test_seplos,
    test_tdt,
    test_tianpower,
)

FORMAT: Final = 1
ROOT: Final = Path(__file__).resolve().parents[2]
VECTORS: Final = ROOT / "spec" / "vectors"
BATTERY_ID: Final = "vector"
_LATENCY: Final = 0.05
_GAP: Final = 0.01
_AT: Final = b"AT\r\n"

JsonObject = dict[str, Any]


def _hex(data: bytes) -> str:
    return data.hex().upper()


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def notification_size(protocol: CompiledProtocol) -> int:
    """How a BLE module of this protocol splits replies (the simulator's default without GATT)."""
    gatt = protocol.definition.gatt
    return gatt.notification_size if gatt else 64


# -- JSON forms (shared with the replaying test) -----------------------------------------------------


def action_to_json(action: Action) -> JsonObject:
    """The language-neutral form of one session action."""
    if isinstance(action, Write):
        return {"type": "write", "hex": _hex(action.data)}
    if isinstance(action, DiscardPending):
        return {"type": "discard_pending"}
    if isinstance(action, WaitUntil):
        return {"type": "wait_until", "deadline": action.deadline}
    if isinstance(action, SnapshotReady):
        return {
            "type": "snapshot",
            "frames": [_hex(frame.raw) for frame in action.frames],
            "snapshot": action.snapshot.to_dict(),
        }
    if isinstance(action, ReplyReady):
        return {"type": "reply", "hex": None if action.frame is None else _hex(action.frame.raw)}
    return {
        "type": "give_up",
        "error": type(action.error).__name__,
        "message": str(action.error),
        "drop_link": action.drop_link,
    }


def timing_to_json(timing: SessionTiming) -> JsonObject:
    """Session timing as stored in a transcript."""
    return dataclasses.asdict(timing)


def apply_event(session: PollSession, event: JsonObject) -> list[Action]:
    """Run one transcript event on `session` (the replaying test uses this too)."""
    kind = event["type"]
    if kind == "connect":
        session.connection_reset()
        return []
    if kind == "poll":
        return session.start_poll(event["at"], epoch=event.get("epoch", 0.0))
    if kind == "command":
        request = RequestSpec(
            name=event["name"],
            frame=bytes.fromhex(event["hex"]),
            reply=event.get("reply"),
            timeout=event.get("timeout"),
        )
        return session.start_command(request, event["at"])
    if kind == "feed":
        return session.feed(bytes.fromhex(event["hex"]), event["at"])
    if kind == "tick":
        return session.tick(event["at"])
    raise ValueError(f"unknown event type {kind!r}")


# -- decode vectors ------------------------------------------------------------------------------------


def scrambled(protocol: CompiledProtocol, device_name: str | None, data: bytes) -> bytes:
    """`data` XOR-ed with the wire key `device_name` gives (as it is, for a definition without ``wire_key``).

    The operation is its own inverse: it also turns received wire bytes into the clear.
    """
    spec = protocol.definition.framing.wire_key
    if spec is None:
        return data
    key = wire_key(device_name, spec)
    if key is None:
        raise ValueError(f"{protocol.name}: the device name {device_name!r} gives no wire key")
    return xor_bytes(data, key)


def decode_vector(
    protocol: CompiledProtocol,
    frames: Sequence[bytes],
    *,
    title: str,
    source: str,
    real: bool,
    noise: bool = False,
    device_name: str | None = None,
) -> JsonObject:
    """Chunks (the frames split as notifications, optionally with ``AT`` junk) → frames → snapshot.

    With `device_name` the frames are as on the wire: descrambled with its ``wire_key`` before the assembler,
    decoded in the layout the name chooses (the vector records the name).
    """
    size = notification_size(protocol)
    chunks: list[bytes] = []
    for frame in frames:
        if noise:
            chunks.append(_AT)
        chunks.extend(_chunks(frame, size))
    assembler = protocol.new_assembler()
    assembled = [frame for chunk in chunks for frame in assembler.feed(scrambled(protocol, device_name, chunk))]
    snapshot = protocol.decode(
        assembled, battery_id=BATTERY_ID, timestamp=0.0, variant=protocol.variant_for_name(device_name)
    )
    named = {} if device_name is None else {"device_name": device_name}
    return {
        "format": FORMAT,
        "kind": "decode",
        "protocol": protocol.name,
        "title": title,
        "source": source,
        "real_frames": real,
        "battery_id": BATTERY_ID,
        **named,
        "timestamp": 0.0,
        "chunks": [_hex(chunk) for chunk in chunks],
        "frames": [_hex(frame.raw) for frame in assembled],
        "snapshot": snapshot.to_dict(),
    }


# -- session transcripts -------------------------------------------------------------------------------

Responder = Callable[[str, int], list[bytes]]
"""(request name, how many times it was written before) -> the reply frames the BMS sends."""


class _Recorder:
    """Drives a session against a scripted BMS in virtual time and records every step."""

    def __init__(
        self,
        protocol: CompiledProtocol,
        responder: Responder,
        timing: SessionTiming,
        device_name: str | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.protocol = protocol
        self.session = PollSession(
            protocol, battery_id=BATTERY_ID, timing=timing, device_name=device_name, secret=secret
        )
        self.responder = responder
        self.size = notification_size(protocol)
        # Writes are matched in their wire form (hex-text requests travel as text, a wire key scrambles them,
        # a `secret` request carries the secret).
        self.names = {
            scrambled(protocol, device_name, protocol.wire(_with_secret(request, secret))): request.name
            for request in protocol.requests
        }
        self.written: dict[str, int] = {}
        self.inflight: list[tuple[float, bytes]] = []
        self.steps: list[JsonObject] = []
        self.now = 0.0

    def schedule(self, at: float, frames: Iterable[bytes]) -> float:
        """Frames arriving from `at` on, one notification every `_GAP`; returns the time after the last."""
        for frame in frames:
            for chunk in _chunks(frame, self.size):
                self.inflight.append((round(at, 6), chunk))
                at += _GAP
        self.inflight.sort(key=lambda item: item[0])
        return at

    def event(self, event: JsonObject) -> list[Action]:
        actions = apply_event(self.session, event)
        self.steps.append({"event": event, "actions": [action_to_json(action) for action in actions]})
        return actions

    def connect(self) -> None:
        self.inflight.clear()
        self.event({"type": "connect"})

    def poll(self, at: float) -> Action:
        self.now = at
        return self.run(self.event({"type": "poll", "at": at, "epoch": 0.0}))

    def command(self, at: float, name: str, frame: bytes, reply: int | None, timeout: float) -> Action:
        self.now = at
        event = {"type": "command", "at": at, "name": name, "hex": _hex(frame), "reply": reply, "timeout": timeout}
        return self.run(self.event(event))

    def run(self, actions: list[Action]) -> Action:
        while True:
            deadline: float | None = None
            for action in actions:
                if isinstance(action, Write):
                    name = self.names.get(action.data, "command")
                    count = self.written.get(name, 0)
                    self.written[name] = count + 1
                    self.schedule(self.now + _LATENCY, self.responder(name, count))
                elif isinstance(action, DiscardPending):
                    self.inflight = [item for item in self.inflight if item[0] > self.now]
                elif isinstance(action, WaitUntil):
                    deadline = action.deadline
                else:
                    return action
            if deadline is None:
                raise RuntimeError("session returned neither a wait nor an outcome")
            if self.inflight and self.inflight[0][0] <= max(deadline, self.now):
                at, chunk = self.inflight.pop(0)
                self.now = max(self.now, at)
                actions = self.event({"type": "feed", "at": self.now, "hex": _hex(chunk)})
            else:
                self.now = max(self.now, deadline)
                actions = self.event({"type": "tick", "at": self.now})


def _with_secret(request: RequestSpec, secret: bytes | None) -> bytes:
    """The request's frame as written: with the secret where a ``secret`` request carries it."""
    if request.secret is None or secret is None:
        return request.frame
    return request.frame[: request.secret.at] + secret + request.frame[request.secret.at :]


def _transcript(
    protocol: CompiledProtocol,
    *,
    name: str,
    title: str,
    source: str,
    responder: Responder,
    script: Callable[[_Recorder], None],
    timing: SessionTiming | None = None,
    device_name: str | None = None,
    secret: bytes | None = None,
) -> tuple[str, JsonObject]:
    timing = timing or SessionTiming()
    recorder = _Recorder(protocol, responder, timing, device_name, secret)
    script(recorder)
    named = {} if device_name is None else {"device_name": device_name}
    if secret is not None:
        named["secret"] = _hex(secret)
    return name, {
        "format": FORMAT,
        "kind": "session",
        "protocol": protocol.name,
        "title": title,
        "source": source,
        "battery_id": BATTERY_ID,
        **named,
        "timing": timing_to_json(timing),
        "steps": recorder.steps,
    }


def _answers(replies: dict[str, list[bytes]]) -> Responder:
    def respond(name: str, _count: int) -> list[bytes]:
        return replies.get(name, [])

    return respond


def _two_polls(recorder: _Recorder) -> None:
    recorder.connect()
    recorder.poll(0.0)
    recorder.poll(10.0)


def _one_poll(recorder: _Recorder) -> None:
    recorder.connect()
    recorder.poll(0.0)


# -- the protocols' frames -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Fixture:
    replies: dict[str, list[bytes]]
    """Reply frames per request name (a missing name: the BMS does not answer that request)."""
    source: str
    real: bool


def _jbd() -> _Fixture:
    return _Fixture(
        {
            "basic_info": [bytes.fromhex(test_jbd.CAPTURE_4S_BASIC)],
            "cell_voltages": [bytes.fromhex(test_jbd.CAPTURE_4S_CELLS)],
            "hardware_version": [test_jbd._frame(0x05, b"JBD-SP04S034-L4S-200A-B-U")],
        },
        "basic_info and cell_voltages: capture of a JBD-SP04S034 4S pack (shared/protocols/jbd.md, "
        "tests/protocols/test_jbd.py CAPTURE_4S_*); hardware_version: built from the documented layout with "
        "that pack's model string",
        True,
    )


ATORCH_DC_METER_REPORT = "FF55010200011A00003C0004D40000002000006400000000002600590D363C00000000F0"


def _fixtures() -> dict[str, _Fixture]:
    aiobmsble = "captured over BLE and published with patman15/aiobmsble ({}); via tests/protocols/{}"
    suite = "real frames from the patman15/aiobmsble test suite ({}); via tests/protocols/public_frames.py"
    fixtures = {
        "jbd": _jbd(),
        "ant": _Fixture(
            {"device_info": [test_ant.DEVICE_INFO], "status": [test_ant.STATUS]},
            aiobmsble.format("tests/bms/test_ant_bms.py", "test_ant.py"),
            True,
        ),
        "ant-leg": _Fixture(
            {"status": [test_ant_leg.STATUS_14S]},
            aiobmsble.format("tests/bms/test_ant_leg_bms.py, 'with design capacity' frame", "test_ant_leg.py"),
            True,
        ),
        "litime": _Fixture(
            {"status": [test_litime.CAPTURE]}, aiobmsble.format("tests/bms/test_redodo_bms.py", "test_litime.py"), True
        ),
        "renogy": _Fixture(
            {
                "identity": [test_renogy.IDENTITY],
                "cells": [test_renogy.CELLS],
                "pack": [test_renogy.PACK],
                "status": [test_renogy.STATUS],
            },
            aiobmsble.format("tests/bms/test_renogy_bms.py", "test_renogy.py"),
            True,
        ),
        "renogy-pro": _Fixture(
            {"cells": [test_renogy_pro.CELLS], "pack": [test_renogy_pro.PACK]},
            aiobmsble.format("tests/bms/test_renogy_pro_bms.py", "test_renogy_pro.py"),
            True,
        ),
        "roypow": _Fixture(
            {"cells": [test_roypow.CELLS], "status": [test_roypow.STATUS], "pack": [test_roypow.PACK]},
            aiobmsble.format("tests/bms/test_roypow_bms.py", "test_roypow.py"),
            True,
        ),
        "seplos": _Fixture(
            {"pia": [test_seplos.PIA], "pib": [test_seplos.PIB], "pic": [test_seplos._pic()]},
            "pia and pib: "
            + aiobmsble.format("tests/bms/test_seplos_bms.py PIA1/PIB1", "test_seplos.py")
            + "; pic: built from the documented coil layout with the capture's EIC state bytes",
            True,
        ),
        "tdt": _Fixture(
            {
                "identity": [test_tdt.IDENTITY_16S],
                "values": [test_tdt.VALUES_16S],
                "states": [test_tdt.STATES_16S],
            },
            aiobmsble.format("tests/bms/test_tdt_bms.py, 16S6Tv0.0", "test_tdt.py"),
            True,
        ),
        "tianpower": _Fixture(
            {
                request.name: [frame for frame in test_tianpower.CAPTURE if frame[2] == request.reply]
                for request in get_protocol("tianpower").requests
            },
            aiobmsble.format("tests/bms/test_tianpwr_bms.py", "test_tianpower.py"),
            True,
        ),
        "cbtpwr": _Fixture(
            {
                "voltage_current": [test_cbtpwr.VOLTAGE_CURRENT],
                "soc": [test_cbtpwr.SOC],
                "temperatures": [test_cbtpwr.TEMPERATURES],
                "capacity_cycles": [test_cbtpwr.CAPACITY_CYCLES],
                "warnings": [test_cbtpwr.WARNINGS],
                "cells_1_5": [test_cbtpwr.CELLS_1_5],
                "cells_6_10": [test_cbtpwr.CELLS_6_10],
            },
            aiobmsble.format("tests/bms/test_cbtpwr_bms.py", "test_cbtpwr.py"),
            True,
        ),
        "daly": _Fixture(
            {
                "device_info": [public_frames.DALY_DEVICE_INFO],
                "mosfet_temperature": [public_frames.DALY_MOSFET_TEMPERATURE],
                "status": [public_frames.DALY_STATUS],
            },
            suite.format("tests/bms/test_daly_bms.py"),
            True,
        ),
        "daly-a5": _Fixture(
            _by_command(get_protocol("daly-a5"), test_daly.a5_poll([3300 + index for index in range(16)], [20, 21])),
            "built from the documented A5 layout (shared/protocols/daly.md) by tests/protocols/test_daly.py a5_poll",
            False,
        ),
        "eg4": _Fixture(
            {"status": [test_eg4.STATUS]},
            aiobmsble.format("tests/bms/test_eg4_bms.py", "test_eg4.py"),
            True,
        ),
        "jk": _Fixture(
            {"device_info": [public_frames.JK_V15_DEVICE_INFO], "cell_info": [public_frames.JK_V15_CELL_INFO]},
            suite.format("tests/bms/test_jikong_bms.py, JK02_32S_v15"),
            True,
        ),
    }
    # No CW20 frame is public: an ATORCH DC-meter report of another meter (same header, type and checksum).
    fixtures["cw20"] = _Fixture(
        {"report": [bytes.fromhex(ATORCH_DC_METER_REPORT)]},
        "an ATORCH DC-meter report published by CursedHardware/atorch-console "
        "(src/service/atorch-packet/packet-meter-dc.spec.ts), not a CW20's",
        False,
    )
    # aiobmsble's ids for two of these protocols (aliases): the same captures are theirs too.
    fixtures["jikong"] = fixtures["jk"]
    fixtures["tianpwr"] = fixtures["tianpower"]
    return fixtures


def _by_command(protocol: CompiledProtocol, frames: list[bytes]) -> dict[str, list[bytes]]:
    return {
        request.name: [frame for frame in frames if frame[2] == request.reply]
        for request in protocol.requests
        if request.reply is not None
    }


def _decode_vectors(fixtures: dict[str, _Fixture]) -> dict[str, dict[str, JsonObject]]:
    out: dict[str, dict[str, JsonObject]] = {}
    for name, fixture in fixtures.items():
        protocol = get_protocol(name)
        frames = [frame for request in protocol.requests for frame in fixture.replies.get(request.name, [])]
        kind = "captured" if fixture.real else "built"
        out.setdefault(name, {})["decode-poll"] = decode_vector(
            protocol,
            frames,
            title=f"one poll's replies ({kind} frames), as notifications",
            source=fixture.source,
            real=fixture.real,
        )
    jbd = get_protocol("jbd")
    vendor = "the vendor's JBD 'General Protocol V4' document (shared/protocols/jbd.md, tests/protocols/test_jbd.py)"
    out["jbd"]["decode-vendor-17s"] = decode_vector(
        jbd,
        [bytes.fromhex(test_jbd.VENDOR_17S_BASIC), bytes.fromhex(test_jbd.VENDOR_17S_CELLS)],
        title="17S example of the vendor document",
        source=vendor,
        real=False,
    )
    out["jbd"]["decode-vendor-15s-noise"] = decode_vector(
        jbd,
        [bytes.fromhex(test_jbd.VENDOR_15S_BASIC), bytes.fromhex(test_jbd.VENDOR_15S_CELLS)],
        title="15S example of the vendor document, each frame after the BLE module's AT junk",
        source=vendor,
        real=False,
        noise=True,
    )
    jk = get_protocol("jk")
    out["jk"]["decode-built-24s"] = decode_vector(
        jk,
        [test_jk.device_info(software="10.XW"), test_jk.cell_info("24s")],
        title="the 24S layout (software 10.x), selected by the device-info reply",
        source="built from the documented JK02 layout (shared/protocols/jk.md) by tests/protocols/test_jk.py",
        real=False,
    )
    tdt = get_protocol("tdt")
    tdt_source = (
        "captured over BLE and published with patman15/aiobmsble (tests/bms/test_tdt_bms.py, {}); "
        "via tests/protocols/test_tdt.py"
    )
    out["tdt"]["decode-4s"] = decode_vector(
        tdt,
        [test_tdt.VALUES_4S, test_tdt.STATES_4S],
        title="4 cells, 4 sensors (no identity reply)",
        source=tdt_source.format("4S4Tv0.0"),
        real=True,
    )
    out["tdt"]["decode-firmware-0-4"] = decode_vector(
        tdt,
        [test_tdt.VALUES_16S_V04, test_tdt.STATES_16S_V04],
        title="16 cells, 6 sensors, frame version 0.4, discharging",
        source=tdt_source.format("16S6Tv0.4"),
        real=True,
    )
    ant = get_protocol("ant")
    out["ant"]["decode-low-value"] = decode_vector(
        ant,
        [test_ant.DEVICE_INFO, test_ant.LOW_VALUE],
        title="aiobmsble's 'low_value' status variant",
        source=fixtures["ant"].source + " (the status capture with the MOSFET bytes of its 'low_value' case)",
        real=False,
    )
    return out


# -- transcripts per protocol ----------------------------------------------------------------------------


def _session_vectors(fixtures: dict[str, _Fixture]) -> dict[str, dict[str, JsonObject]]:
    out: dict[str, dict[str, JsonObject]] = {}
    for name, fixture in fixtures.items():
        protocol = get_protocol(name)
        title = "connect, then two polls on one connection (connect-time replies are asked once)"
        if any(request.streaming for request in protocol.requests):
            title += "; this BMS does not stream, so the second poll waits for a fresh frame, then asks again"
        key, vector = _transcript(
            protocol,
            name="session-two-polls",
            title=title,
            source=fixture.source,
            responder=_answers(fixture.replies),
            script=_two_polls,
        )
        out.setdefault(name, {})[key] = vector
    for key, vector in (*_jbd_faults(fixtures["jbd"]), _jk_stream(), _daly_optional(fixtures["daly"]), _a5_glued()):
        out[vector["protocol"]][key] = vector
    return out


def _jbd_faults(fixture: _Fixture) -> list[tuple[str, JsonObject]]:
    jbd = get_protocol("jbd")
    basic = fixture.replies["basic_info"][0]
    corrupt = basic[:-3] + bytes([basic[-3] ^ 0xFF]) + basic[-2:]
    status = bytearray(basic)
    status[2] = 0x80
    status[-3:-1] = ((0x10000 - sum(status[2:-3])) & 0xFFFF).to_bytes(2, "big")

    def first_lost(name: str, count: int) -> list[bytes]:
        if name == "basic_info" and count == 0:
            return []
        if name == "cell_voltages":
            return [_AT, *fixture.replies[name]]  # the BLE module's junk before the reply
        return fixture.replies.get(name, []) if name != "hardware_version" else []

    def always(frames: list[bytes]) -> Responder:
        return lambda name, _count: frames if name == "basic_info" else []

    fast = SessionTiming(request_timeout=1.0, retries=1, retry_backoff=0.25, poll_deadline=15.0)
    source = fixture.source + "; faults injected by the vector generator"
    command = jbd.build_command("set_mosfets", charge=False, discharge=True)
    ack = test_jbd._frame(0xE1, b"")

    def mosfets(recorder: _Recorder) -> None:
        recorder.connect()
        recorder.command(0.0, "set_mosfets", command, 0xE1, 5.0)

    return [
        _transcript(
            jbd,
            name="session-retry-and-optional",
            title="the first basic_info reply is lost (retried after the backoff), AT junk before cell_voltages, "
            "the optional hardware_version is never answered (skipped, not asked again on the second poll)",
            source=source,
            responder=first_lost,
            script=_two_polls,
            timing=fast,
        ),
        _transcript(
            jbd,
            name="session-corrupt-only",
            title="every reply has a bad checksum: FrameError, the link is kept",
            source=source,
            responder=always([corrupt]),
            script=_one_poll,
            timing=fast,
        ),
        _transcript(
            jbd,
            name="session-silent",
            title="the BMS never answers: DeviceTimeout after the retries, the link is dropped",
            source=source,
            responder=always([]),
            script=_one_poll,
            timing=fast,
        ),
        _transcript(
            jbd,
            name="session-error-status",
            title="the BMS flags an error in the status byte: ProtocolError at once",
            source=source,
            responder=always([bytes(status)]),
            script=_one_poll,
            timing=fast,
        ),
        _transcript(
            jbd,
            name="session-deadline",
            title="a silent BMS with many retries: the poll deadline ends the poll",
            source=source,
            responder=always([]),
            script=_one_poll,
            timing=SessionTiming(request_timeout=1.0, retries=10, retry_backoff=0.25, poll_deadline=3.0),
        ),
        _transcript(
            jbd,
            name="session-command",
            title="switch the charge MOSFET off; the BMS acknowledges",
            source="the MOSFET command of jbd.yaml and an acknowledgement built from the documented layout",
            responder=lambda name, _count: [ack] if name == "command" else [],
            script=mosfets,
        ),
    ]


def _jk_stream() -> tuple[str, JsonObject]:
    jk = get_protocol("jk")
    old = test_jk.cell_info()
    new = test_jk.cell_info(cells=[3300 + index for index in range(15)] + [3450])

    def respond(name: str, _count: int) -> list[bytes]:
        return [test_jk.device_info()] if name == "device_info" else [old]

    def script(recorder: _Recorder) -> None:
        recorder.connect()
        recorder.poll(0.0)
        # The BMS keeps streaming about once a second; the last frame before the next poll is newer.
        after = recorder.schedule(1.2, [old])
        after = recorder.schedule(after + 1.0, [old])
        recorder.schedule(after + 1.0, [new])
        recorder.poll(5.0)

    return _transcript(
        jk,
        name="session-stream-newest",
        title="after the first poll the BMS streams cell info on its own; the next poll writes nothing and "
        "takes the newest frame that arrived, never an older one queued before it",
        source="built from the documented JK02 layout by tests/protocols/test_jk.py; streaming timed by the "
        "vector generator",
        responder=respond,
        script=script,
    )


def _daly_optional(fixture: _Fixture) -> tuple[str, JsonObject]:
    replies = {name: frames for name, frames in fixture.replies.items() if name != "mosfet_temperature"}
    return _transcript(
        get_protocol("daly"),
        name="session-optional-unanswered",
        title="the optional mosfet_temperature read is never answered: skipped after its retries",
        source=fixture.source,
        responder=_answers(replies),
        script=_one_poll,
        timing=SessionTiming(request_timeout=0.5, retries=1, retry_backoff=0.1, poll_deadline=15.0),
    )


def _a5_glued() -> tuple[str, JsonObject]:
    a5 = get_protocol("daly-a5")
    replies = _by_command(a5, test_daly.a5_poll([3300 + index for index in range(17)], [20] * 8))
    glued = {name: [b"".join(frames)] for name, frames in replies.items()}
    return _transcript(
        a5,
        name="session-numbered-glued",
        title="17 cells and 8 sensors: numbered frames, several glued into one notification by a UART bridge",
        source="built from the documented A5 layout by tests/protocols/test_daly.py a5_poll",
        responder=_answers(glued),
        script=_one_poll,
    )


# -- writing -------------------------------------------------------------------------------------------


def generate() -> dict[Path, str]:
    """Every vector file, as path → text."""
    # The families verified from tests/protocols/family_frames.py make their own vectors (same forms).
    from . import vectorgen_families

    fixtures = _fixtures()
    missing = set(default_catalog().names(Kind.PROTOCOL)) - set(fixtures) - set(vectorgen_families.fixtures())
    if missing:
        raise SystemExit(f"no vector fixtures for built-in protocols {sorted(missing)}")
    files: dict[Path, str] = dict(vectorgen_families.generate())
    for group in (_decode_vectors(fixtures), _session_vectors(fixtures)):
        for protocol, vectors in group.items():
            for name, vector in vectors.items():
                text = json.dumps(vector, indent=1, ensure_ascii=False) + "\n"
                files[VECTORS / protocol / f"{name}.json"] = text
    return files


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the vector files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that would change")
    args = parser.parse_args(argv)
    changed = 0
    for path, text in sorted(generate().items()):
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        changed += 1
        if args.check:
            print(f"would change: {path.relative_to(ROOT)}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
