"""Engine-6 wire constructs per second: WS Nova's XOR-scrambled hex text and D-powercore's acknowledged pages.

Each iteration feeds one poll's notifications (aiobmsble's captures: WS Nova's 238-character frame in
20-byte notifications, D-powercore's seven 20-byte pages) through a fresh assembler and decodes the frames
into one `BatterySnapshot` (for D-powercore also taking the acknowledgements to write). Worst cases: WS Nova
text whose end marker never comes (hex digits up to twice ``max_length``, then a drop, over and over), and
D-powercore pages whose headers are impossible or out of order (every page dropped, each still acknowledged).
Runs on one core.

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/scrambled_paged.py
"""

from __future__ import annotations

from collections.abc import Callable

from tests.protocols.family_frames import DPWRCORE, WS_NOVA, FamilyCapture

from benchmarks.rates import best_rate
from bmsgate.protocols import CompiledProtocol, get_protocol
from bmsgate.protocols.pagedframing import PagedFrameAssembler


def _notifications(capture: FamilyCapture, size: int = 20) -> list[bytes]:
    stream = b"".join(frame for frames in capture.replies.values() for frame in frames)
    return [stream[at : at + size] for at in range(0, len(stream), size)]


def _poll(protocol: CompiledProtocol, chunks: list[bytes]) -> Callable[[], object]:
    def work() -> object:
        assembler = protocol.new_assembler()
        frames = [frame for chunk in chunks for frame in assembler.feed(chunk)]
        if isinstance(assembler, PagedFrameAssembler):
            assembler.take_acks()
        return protocol.decode(frames, timestamp=0.0)

    return work


def _feed_only(protocol: CompiledProtocol, chunks: list[bytes]) -> Callable[[], int]:
    def work() -> int:
        assembler = protocol.new_assembler()
        frames = 0
        for chunk in chunks:
            frames += len(assembler.feed(chunk))
            if isinstance(assembler, PagedFrameAssembler):
                assembler.take_acks()
        return frames

    return work


def main() -> None:
    """Print polls per second and the worst-case byte rates."""
    ws_nova, dpwrcore = get_protocol("ws-nova"), get_protocol("dpwrcore")
    chunks = _notifications(WS_NOVA)
    print(f"ws-nova   poll ({len(chunks)} notifications):  {best_rate(_poll(ws_nova, chunks)):>10,.0f} polls/s")
    pages = _notifications(DPWRCORE)
    print(f"dpwrcore  poll ({len(pages)} pages):          {best_rate(_poll(dpwrcore, pages)):>10,.0f} polls/s")
    endless = [b":" + b"0123456789ABCDEF" + b"20"] + [b"0123456789ABCDEF0123"] * 200
    if _feed_only(ws_nova, endless)():
        raise SystemExit("an endless text made a frame")
    rate = best_rate(_feed_only(ws_nova, endless)) * sum(len(chunk) for chunk in endless)
    print(f"ws-nova   no end marker (drops):   {rate / 1e6:>10.2f} MB/s")
    bad = [bytes([0x12, 0x23]) + bytes(18), bytes([0x13, 0x11]) + bytes(18), bytes([0x12, 0x00]) + bytes(18)] * 100
    if _feed_only(dpwrcore, bad)():
        raise SystemExit("bad pages made a frame")
    rate = best_rate(_feed_only(dpwrcore, bad)) * 20 * len(bad)
    print(f"dpwrcore  bad pages (drops, acks): {rate / 1e6:>10.2f} MB/s")


if __name__ == "__main__":
    main()
