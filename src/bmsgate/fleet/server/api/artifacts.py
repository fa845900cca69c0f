"""The TUF repository over HTTPS: ``/tuf/metadata/<file>`` and ``/tuf/targets/<kind>/<file>`` as plain data.

A small ASGI application of its own (no framework: it serves files and nothing else), run by ``fleet serve``
on its own TLS listener (``artifacts_port``, default 8443) with a server certificate from the fleet CA, so
gateways verify it with the CA their credentials file already carries. No token: every file here is public
by design (TUF metadata is signed, artifacts are checked against it); authenticity never depends on this
server, only availability does.

* Only names of the repository's shape are served (``N.root.json``, ``timestamp.json``, ...,
  ``packs/<sha256>.<file>``): anything else is 404 before the file system is touched, and the resolved
  path must stay inside the repository directory (no ``..``, no symbolic link out).
* Files are read and sent as bytes (``application/octet-stream`` or ``application/json``), never executed
  or rendered.
* ``Range: bytes=first-last`` / ``first-`` / ``-suffix``: 206 with ``Content-Range``; a range beyond the
  end: 416 with ``Content-Range: bytes */size``; several ranges or an unreadable header: the whole file
  (200), as RFC 9110 allows. ``HEAD`` gives the headers alone.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Final

__all__ = ["ArtifactFiles", "parse_range"]

_CHUNK: Final = 64 * 1024
_METADATA_NAME = re.compile(r"(?:[1-9][0-9]{0,9}\.)?(?:root|targets|snapshot|timestamp)\.json")
_TARGET_KIND = re.compile(r"[a-z]{1,32}")
_TARGET_NAME = re.compile(r"[0-9a-f]{64}\.[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_RANGE = re.compile(r"bytes=(\d{0,15})-(\d{0,15})")

Scope = dict[str, Any]


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """The byte range ``(first, last)`` a ``Range`` header asks of a file of ``size`` bytes.

    Returns None for "the whole file" (no header, several ranges, or one that cannot be read) and False
    when the one range asked for lies beyond the end (416).
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        suffix = int(last_text)
        if suffix == 0:
            return False
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size:
        return False
    if last < first:
        return None
    return first, min(last, size - 1)


class ArtifactFiles:
    """ASGI application serving one TUF repository directory (``metadata/`` and ``targets/`` below it)."""

    def __init__(self, directory: Path, *, prefix: str = "/tuf") -> None:
        self._directory = directory
        self._prefix = prefix.rstrip("/")

    def _locate(self, path: str) -> tuple[Path, str] | None:
        if not path.startswith(self._prefix + "/"):
            return None
        parts = path[len(self._prefix) + 1 :].split("/")
        if len(parts) == 2 and parts[0] == "metadata" and _METADATA_NAME.fullmatch(parts[1]):
            return self._directory / "metadata" / parts[1], "application/json"
        if (
            len(parts) == 3
            and parts[0] == "targets"
            and _TARGET_KIND.fullmatch(parts[1])
            and _TARGET_NAME.fullmatch(parts[2])
        ):
            return self._directory / "targets" / parts[1] / parts[2], "application/octet-stream"
        return None

    def _open_confined(self, candidate: Path) -> Any:
        """The open file if it is a regular file inside the repository directory, else None."""
        try:
            resolved = candidate.resolve(strict=True)
            if not resolved.is_relative_to(self._directory.resolve(strict=True)) or not resolved.is_file():
                return None
            return resolved.open("rb")
        except OSError:
            return None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Answer one ASGI connection (HTTP; lifespan events are acknowledged)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _plain(send, 405, b"only GET and HEAD\n", [(b"allow", b"GET, HEAD")])
            return
        located = self._locate(scope["path"])
        file = None if located is None else await asyncio.to_thread(self._open_confined, located[0])
        if located is None or file is None:
            await _plain(send, 404, b"not found\n")
            return
        try:
            await self._send_file(scope, send, file, located[1], head=method == "HEAD")
        finally:
            file.close()

    @staticmethod
    async def _send_file(scope: Scope, send: Any, file: Any, content_type: str, *, head: bool) -> None:
        size = file.seek(0, 2)
        header = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"range"), "")
        wanted = parse_range(header, size) if header else None
        if wanted is False:
            await _plain(send, 416, b"range not satisfiable\n", [(b"content-range", f"bytes */{size}".encode())])
            return
        headers = [
            (b"content-type", content_type.encode()),
            (b"accept-ranges", b"bytes"),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-cache"),
        ]
        if isinstance(wanted, tuple):
            first, last = wanted
            status = 206
            headers.append((b"content-range", f"bytes {first}-{last}/{size}".encode()))
        else:
            first, last, status = 0, size - 1, 200
        remaining = last - first + 1
        headers.append((b"content-length", str(remaining).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if head or remaining == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        file.seek(first)
        while remaining > 0:
            chunk = await asyncio.to_thread(file.read, min(_CHUNK, remaining))
            if not chunk:  # the file shrank under us: end the body short, the client sees it incomplete
                break
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        if remaining > 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _plain(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
