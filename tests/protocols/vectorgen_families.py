"""The conformance vectors of the families verified from ``family_frames.py``, for ``vectorgen``.

The same vector forms as ``tests/protocols/vectorgen.py`` (a captured poll as notifications, and a
two-poll session transcript), made from the public captures in ``family_frames.py``; ``vectorgen.generate``
includes them, so ``scripts/generate-vectors`` (``python -m tests.protocols.vectorgen [--check]``) writes or
checks every vector file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bmsgate.protocols import CompiledProtocol, get_protocol

from . import vectorgen
from .family_frames import CAPTURES, OGT_B, OGT_REFUSAL, X123SMART, FamilyCapture


def fixtures() -> dict[str, vectorgen._Fixture]:
    """Every captured family's first capture (its poll) as a vector fixture (real frames unless built)."""
    out: dict[str, vectorgen._Fixture] = {}
    for capture in CAPTURES:
        out.setdefault(capture.protocol, vectorgen._Fixture(capture.replies, _source(capture), capture.real))
    return out


def _source(capture: FamilyCapture) -> str:
    kind = "real frames" if capture.real else "frames built from the documented layout"
    return f"{kind} from {capture.source}; via tests/protocols/family_frames.py"


def _responder(protocol: CompiledProtocol, replies: dict[str, list[bytes]]) -> vectorgen.Responder:
    """The BMS answers a written frame with the replies of every request that writes the same bytes.

    And with those of the ``follows`` requests right after such a request (further frame types of one answer).
    """
    frames = {request.name: request.frame for request in protocol.requests}

    def respond(name: str, _count: int) -> list[bytes]:
        answered: list[str] = []
        asked = False
        for request in protocol.requests:
            asked = (asked and request.follows) or (bool(request.frame) and request.frame == frames.get(name))
            if asked:
                answered.append(request.name)
        return [frame for request in answered for frame in replies.get(request, [])]

    return respond


def _listening(frames: list[bytes]) -> Callable[[vectorgen._Recorder], None]:
    """Two polls of a BMS that is never asked: it sends the captured frames half a second into each poll."""

    def script(recorder: vectorgen._Recorder) -> None:
        recorder.connect()
        for at in (0.5, 10.5):
            recorder.schedule(at, frames)
        recorder.poll(0.0)
        recorder.poll(10.0)

    return script


def _dpwrcore_unlock() -> vectorgen.JsonObject:
    """A DXB-* pack: the unlock with the password from its name is written once per connection, first."""
    protocol = get_protocol("dpwrcore")
    capture = next(capture for capture in CAPTURES if capture.protocol == "dpwrcore")
    _, transcript = vectorgen._transcript(
        protocol,
        name="session-unlock",
        title="a DXB- pack: the unlock (command 0x64, the name's last four hex digits) once per connection, "
        "then two polls",
        source=_source(capture) + "; the name and password of aiobmsble's test (DXB-MockBLEDevice_C0FE, C0FE)",
        responder=_responder(protocol, capture.replies),
        script=vectorgen._two_polls,
        device_name="DXB-MockBLEDevice_C0FE",
    )
    return transcript


def _ogt_type_b_probe() -> vectorgen.JsonObject:
    """A type B pack (SmartBat-B12294, key 0x10): its registers, then cells from 63 down until one is refused."""
    protocol = get_protocol("ogt")
    capture = OGT_B
    answers = _responder(protocol, capture.replies)

    def respond(name: str, count: int) -> list[bytes]:
        # As aiobmsble's mock: a register it does not hold is refused ('+RD,Erro' NUL, scrambled).
        return answers(name, count) or [OGT_REFUSAL]

    _, transcript = vectorgen._transcript(
        protocol,
        name="session-type-b-probe",
        title="a type B pack: every byte XOR-ed with the key from its name; the cell probe ends at the refused "
        "register 59 (4 cells), two polls",
        source=_source(capture) + "; its refusal for a register it does not hold",
        responder=respond,
        script=vectorgen._two_polls,
        device_name=capture.device_name,
    )
    return transcript


X123_PIN: Final = b"1234"
"""The PIN of aiobmsble's test (its mock's SECRET): a public test value, no pack's."""


def _x123_login() -> vectorgen.JsonObject:
    """A gen3 module: '$' every 330 ms from the first action (alone for 1.5 s), the PIN and E! once per connection."""
    protocol = get_protocol("x123smart")
    capture = X123SMART
    stream = [frame for name in ("cells", "pack", "energy", "history") for frame in capture.replies[name]]

    def respond(name: str, _count: int) -> list[bytes]:
        # As aiobmsble's mock: OK to the right PIN and to E!; the lines follow E! (and are sent again later).
        if name == "login":
            return capture.replies["login"]
        if name == "start_stream":
            return [*capture.replies["start_stream"], *stream]
        return []

    def script(recorder: vectorgen._Recorder) -> None:
        recorder.connect()
        recorder.poll(0.0)
        recorder.schedule(10.5, stream)
        recorder.poll(10.0)

    _, transcript = vectorgen._transcript(
        protocol,
        name="session-two-polls",
        title="a gen3 module: the keep-alive from the first action on and alone for its 1.5 s warm-up, the PIN "
        "(the battery's secret) and E! once per connection, then two polls of the streamed lines",
        source=_source(capture) + "; the PIN of its mock (1234)",
        responder=respond,
        script=script,
        secret=X123_PIN,
    )
    return transcript


def generate() -> dict[Path, str]:
    """The families' vector files, as path → text."""
    vectors: dict[tuple[str, str], vectorgen.JsonObject] = {}
    for capture in CAPTURES:
        protocol = get_protocol(capture.protocol)
        frames = [
            frame
            for request in protocol.requests_for(capture.device_name)
            for frame in capture.replies.get(request.name, [])
        ]
        kind = "captured" if capture.real else "built"
        title = (
            f"one poll's replies ({kind} frames), as notifications"
            if capture.vector == "poll"
            else f"{kind} frames ({capture.vector.replace('-', ' ')}), as notifications"
        )
        vectors[capture.protocol, f"decode-{capture.vector}"] = vectorgen.decode_vector(
            protocol, frames, title=title, source=_source(capture), real=capture.real, device_name=capture.device_name
        )
    for name, fixture in fixtures().items():
        if name == "x123smart":
            continue  # its session logs in first: _x123_login
        protocol = get_protocol(name)
        listens = any(not request.frame and not request.follows for request in protocol.requests)
        frames = [frame for request in protocol.requests for frame in fixture.replies.get(request.name, [])]
        key, transcript = vectorgen._transcript(
            protocol,
            name="session-two-polls",
            title=(
                "connect, then two polls of a BMS that sends its replies on its own (they are not asked for)"
                if listens
                else "connect, then two polls on one connection (connect-time replies are asked once)"
            ),
            source=fixture.source,
            responder=_responder(protocol, fixture.replies),
            script=_listening(frames) if listens else vectorgen._two_polls,
            device_name=next(capture.device_name for capture in CAPTURES if capture.protocol == name),
        )
        vectors[name, key] = transcript
    vectors["dpwrcore", "session-unlock"] = _dpwrcore_unlock()
    vectors["ogt", "session-type-b-probe"] = _ogt_type_b_probe()
    vectors["x123smart", "session-two-polls"] = _x123_login()
    return {
        vectorgen.VECTORS / protocol / f"{stem}.json": json.dumps(vector, indent=1, ensure_ascii=False) + "\n"
        for (protocol, stem), vector in vectors.items()
    }
