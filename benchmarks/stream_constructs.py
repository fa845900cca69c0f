"""Engine-6 constructs per second: 123\\SmartBMS's unmarked stream and rotation, Epoch Pro's per-pack requests.

- smartbms: one rotation (aiobmsble's 16 frames, 58 bytes each, in 20-byte notifications) through a fresh
  assembler and decoded into one snapshot; the worst case, bytes that never form a frame (every byte starts a
  window check: the search), as MB/s; and a poll answered from the rotation the session keeps (a poll after
  the first: no frame needs to arrive).
- epoch-pro: the two-pack poll (system, pack 1, pack 2: 459 bytes in 32-byte notifications) through the poll
  session, the `only_if` check included. Runs on one core.

Run: .venv/bin/python benchmarks/stream_constructs.py
"""

from __future__ import annotations

import itertools
import os

from tests.protocols.family_frames import EPOCH_PRO, SMARTBMS

from benchmarks.rates import best_rate
from bmsgate.protocols import get_protocol
from bmsgate.protocols.session import PollSession, SnapshotReady, Write


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


def main() -> None:
    """Print rotations, polls and worst-case bytes per second."""
    smartbms = get_protocol("smartbms")
    rotation = _chunks(b"".join(SMARTBMS.replies["status"]), 20)

    def assemble_and_decode() -> object:
        assembler = smartbms.new_assembler()
        return smartbms.decode([frame for chunk in rotation for frame in assembler.feed(chunk)], timestamp=0.0)

    rate = best_rate(assemble_and_decode)
    print(f"smartbms rotation (16 frames, 20-byte chunks) assembled + decoded: {rate:,.0f}/s ({1e6 / rate:.0f} µs)")

    noise = _chunks(bytes(byte % 251 for byte in os.urandom(64 * 1024)), 244)

    def search() -> None:
        assembler = smartbms.new_assembler()
        for chunk in noise:
            assembler.feed(chunk)

    rate = best_rate(search, seconds=0.5)
    print(f"smartbms worst case, 64 KiB that never form a frame: {rate * 64 / 1024:.2f} MB/s")

    session = PollSession(smartbms)
    session.start_poll(0.0)
    for chunk in rotation:
        session.feed(chunk, 0.1)

    following = itertools.cycle([_chunks(frame, 20) for frame in SMARTBMS.replies["status"]])

    def kept_poll() -> object:
        # A poll is answered from the kept rotation once a frame arrived since the last answer (the stream
        # still runs): what waited in the link is fed (the rotation's next frame), then the deadline tick answers.
        session.start_poll(1.0)
        for chunk in next(following):
            session.feed(chunk, 1.0)
        (ready,) = session.tick(1.0)
        assert isinstance(ready, SnapshotReady)
        return ready

    rate = best_rate(kept_poll)
    print(f"smartbms poll answered from the kept rotation (one new frame): {rate:,.0f}/s ({1e6 / rate:.0f} µs)")

    epoch = get_protocol("epoch-pro")
    answers = [_chunks(frame, 32) for frame in (EPOCH_PRO.replies[name][0] for name in ("system", "pack_1", "pack_2"))]

    def two_packs() -> object:
        poll = PollSession(epoch)
        actions = poll.start_poll(0.0)
        pending = list(answers)
        while not isinstance(actions[-1], SnapshotReady):
            assert any(isinstance(action, Write) for action in actions)
            for chunk in pending.pop(0):
                actions = poll.feed(chunk, 0.1)
        return actions

    rate = best_rate(two_packs)
    print(f"epoch-pro two-pack poll through the session (3 requests): {rate:,.0f}/s ({1e6 / rate:.0f} µs)")


if __name__ == "__main__":
    main()
