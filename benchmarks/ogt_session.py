"""Offgridtec polls per second through the session, with the wire key applied to every write and chunk.

Each iteration runs one whole `PollSession` poll of a type B pack (aiobmsble's test replies, key 0x10: seven
registers, four cells, the refused fifth cell register ends the probe) and one of a type A pack (seven
registers), answering each scrambled write with the source's scrambled reply, and decodes the snapshot. Worst
case: scrambled garbage fed during a poll (text that never makes a frame), as bytes per second. Also the cost
of the key computation per name. Runs on one core.

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/ogt_session.py
"""

from __future__ import annotations

from collections.abc import Callable

from tests.protocols.family_frames import OGT_A, OGT_B, OGT_REFUSAL, FamilyCapture

from benchmarks.rates import best_rate
from bmsgate.protocols import PollSession, get_protocol
from bmsgate.protocols.session import GiveUp, SnapshotReady, Write
from bmsgate.protocols.wirekey import wire_key, xor_bytes

OGT = get_protocol("ogt")
SPEC = OGT.definition.framing.wire_key


def _poll(capture: FamilyCapture) -> Callable[[], object]:
    name = capture.device_name
    assert SPEC is not None
    assert name is not None
    key = wire_key(name, SPEC)
    assert key is not None
    answers = {
        xor_bytes(request.frame, key): (capture.replies.get(request.name) or [OGT_REFUSAL])[0]
        for request in OGT.requests_for(name)
    }

    def work() -> object:
        session = PollSession(OGT, device_name=name)
        actions = session.start_poll(0.0)
        now = 0.0
        while True:
            for action in actions:
                if isinstance(action, SnapshotReady):
                    return action.snapshot
                if isinstance(action, GiveUp):
                    raise SystemExit(f"poll failed: {action.error}")
            written = [action.data for action in actions if isinstance(action, Write)]
            now += 0.01
            actions = session.feed(answers[written[-1]], now)

    return work


def _garbage() -> tuple[Callable[[], object], int]:
    chunks = [b";BT<" + b"\x21" * 16] + [b"\x20\x21\x22\x23" * 5] * 200  # '+RD,' then digits without an end

    def work() -> object:
        session = PollSession(OGT, device_name="SmartBat-B12294")
        session.start_poll(0.0)
        for chunk in chunks:
            session.feed(chunk, 0.001)
        return session

    return work, sum(len(chunk) for chunk in chunks)


def main() -> None:
    """Print polls per second, the garbage byte rate and key computations per second."""
    print(f"ogt type B poll (12 writes):   {best_rate(_poll(OGT_B)):>10,.0f} polls/s")
    print(f"ogt type A poll (7 writes):    {best_rate(_poll(OGT_A)):>10,.0f} polls/s")
    work, size = _garbage()
    print(f"ogt garbage during a poll:     {best_rate(work) * size / 1e6:>10.2f} MB/s")
    assert SPEC is not None
    print(f"ogt keys from names:           {best_rate(lambda: wire_key('SmartBat-B12294', SPEC)):>10,.0f} /s")


if __name__ == "__main__":
    main()
