"""Writes the conformance vectors of the issue-14 families (``python -m tests.protocols.vectorgen_families``).

The same vector forms as ``tests/protocols/vectorgen.py`` (a captured poll as notifications, and a
two-poll session transcript), made from the public captures in ``family_frames.py``. `fixtures()` has
the shape ``vectorgen`` uses for its own protocols, so that generator can take these families over with
one line; until then this module writes (or with ``--check`` compares) their files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bmsgate.protocols import get_protocol

from . import vectorgen
from .family_frames import CAPTURES


def fixtures() -> dict[str, vectorgen._Fixture]:
    """Every captured family as a vector fixture (all real frames)."""
    return {
        capture.protocol: vectorgen._Fixture(
            capture.replies, f"real frames from {capture.source}; via tests/protocols/family_frames.py", True
        )
        for capture in CAPTURES
    }


def generate() -> dict[Path, str]:
    """The families' vector files, as path → text."""
    files: dict[Path, str] = {}
    for name, fixture in fixtures().items():
        protocol = get_protocol(name)
        frames = [frame for request in protocol.requests for frame in fixture.replies.get(request.name, [])]
        vectors = {
            "decode-poll": vectorgen.decode_vector(
                protocol,
                frames,
                title="one poll's replies (captured frames), as notifications",
                source=fixture.source,
            )
        }
        title = "connect, then two polls on one connection (connect-time replies are asked once)"
        key, transcript = vectorgen._transcript(
            protocol,
            name="session-two-polls",
            title=title,
            source=fixture.source,
            responder=vectorgen._answers(fixture.replies),
            script=vectorgen._two_polls,
        )
        vectors[key] = transcript
        for stem, vector in vectors.items():
            files[vectorgen.VECTORS / name / f"{stem}.json"] = json.dumps(vector, indent=1, ensure_ascii=False) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the families' vector files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that would change")
    args = parser.parse_args(argv)
    changed = 0
    for path, text in sorted(generate().items()):
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        changed += 1
        if args.check:
            print(f"would change: {path.relative_to(vectorgen.ROOT)}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(vectorgen.ROOT)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
