"""Wire constructs assembled and decoded per second: Super-B's unmarked chunks, MyVolta's stuffed stream.

Also Super-B v2's two frame types (engine 6: one of them arrives on a second notify characteristic, which
the transport merges into the same stream, so its cost is that of any two whole-notification frames).

Each iteration feeds one poll's notifications (aiobmsble's captures, MyVolta's split into 20-byte
notifications) through a fresh assembler and decodes the frames into one `BatterySnapshot`. Worst cases:
a MyVolta stream in which every body byte is escaped (the wire twice the frame), and a stream whose end
marker never comes (``max_length`` bytes then a drop, over and over). Runs on one core.

Run: .venv/bin/python benchmarks/wire_constructs.py
"""

from __future__ import annotations

from collections.abc import Callable

from tests.protocols.family_frames import MYVOLTA, SUPERB, SUPERB_V2, FamilyCapture

from benchmarks.rates import best_rate
from bmsgate.protocols import CompiledProtocol, Frame, get_protocol
from bmsgate.protocols.stuffedframing import to_wire


def _notifications(capture: FamilyCapture, size: int = 20) -> list[bytes]:
    stream = b"".join(frame for frames in capture.replies.values() for frame in frames)
    return [stream[at : at + size] for at in range(0, len(stream), size)]


def _poll(protocol: CompiledProtocol, chunks: list[bytes]) -> Callable[[], object]:
    def work() -> object:
        assembler = protocol.new_assembler()
        frames = [frame for chunk in chunks for frame in assembler.feed(chunk)]
        return protocol.decode(frames, timestamp=0.0)

    return work


def _feed_only(protocol: CompiledProtocol, chunks: list[bytes]) -> Callable[[], list[Frame]]:
    def work() -> list[Frame]:
        assembler = protocol.new_assembler()
        return [frame for chunk in chunks for frame in assembler.feed(chunk)]

    return work


def main() -> None:
    """Print polls per second and the worst-case byte rates."""
    superb, myvolta = get_protocol("superb"), get_protocol("myvolta")
    framing = myvolta.definition.framing
    print(f"superb   poll (1 notification):   {best_rate(_poll(superb, _notifications(SUPERB))):>10,.0f} polls/s")
    v2 = _notifications(SUPERB_V2, size=24)
    print(
        f"superb-v2 poll ({len(v2)} notifications): {best_rate(_poll(get_protocol('superb-v2'), v2)):>10,.0f} polls/s"
    )
    chunks = _notifications(MYVOLTA)
    print(f"myvolta  poll ({len(chunks)} notifications):  {best_rate(_poll(myvolta, chunks)):>10,.0f} polls/s")
    # Every body byte a control byte: each is escaped on the wire.
    body = bytes([0x01, 0x00, 0x02, 0, 0, 0, 0xFE]) + b"\x05\x55\x04" * 84 + b"\x05\x55"
    escaped = to_wire(b"\x55\x55" + body + bytes([0xFF ^ (sum(body[1:]) & 0xFF)]) + b"\x04\x04", framing)
    stream = [escaped[at : at + 20] for at in range(0, len(escaped), 20)] * 10
    if len(_feed_only(myvolta, stream)()) != 10:
        raise SystemExit("the all-escaped frame did not assemble")
    rate = best_rate(_feed_only(myvolta, stream)) * len(escaped) * 10
    print(f"myvolta  all-escaped stream:      {rate / 1e6:>10.2f} MB/s ({len(escaped)}-byte frames)")
    endless = [b"\x55\x55" + bytes(range(6, 24))] + [bytes(range(6, 26))] * 200
    rate = best_rate(_feed_only(myvolta, endless)) * sum(len(chunk) for chunk in endless)
    print(f"myvolta  no end marker (drops):   {rate / 1e6:>10.2f} MB/s")


if __name__ == "__main__":
    main()
