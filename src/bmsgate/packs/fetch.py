"""The gateway's HTTPS downloader for TUF metadata and artifacts (stdlib only: http.client + ssl).

python-tuf decides *what* is authentic; this module only moves bytes, with the limits a hostile or broken
server must not get past:

* every response is bounded: a body longer than the caller's ``max_length`` (the length TUF expects, or its
  cap for a metadata file) is cut off and refused, whatever ``Content-Length`` claims;
* every request is bounded in time: a socket timeout per read and an overall deadline that allows a slow
  link (``min_rate`` bytes/s) but not a server that trickles one byte a minute;
* the server is verified against the fleet CA (``ca_pem`` from the credentials file), no redirects;
* :meth:`HttpsDownloader.fetch_to` resumes an interrupted artifact download: the bytes received so far stay
  in a partial file and the next attempt asks for the rest with ``Range: bytes=N-`` (206 and
  ``Content-Range`` expected; a 200 starts over, a 416 for a complete partial file finishes it).

Errors are :class:`~bmsgate.packs.errors.PackError` with reason ``download`` (:class:`HttpStatusError`
carries the status, which TUF needs: a 404 for the next root version means "no newer root") or
``mismatch`` (:class:`TooLargeError`).
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from bmsgate import __version__
from bmsgate.fleet.updates import FailureReason
from bmsgate.packs.errors import PackError

__all__ = ["HttpStatusError", "HttpsDownloader", "TooLargeError", "parse_content_range"]

_CHUNK: Final = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (?:(\d{1,15})-(\d{1,15})|\*)/(\d{1,15})")

Progress = Callable[[int, int], None]
"""``progress(done, total)`` in bytes, called as an artifact download advances."""


class HttpStatusError(PackError):
    """The server answered with an HTTP error status (``status``)."""

    def __init__(self, status: int, url: str) -> None:
        super().__init__(FailureReason.DOWNLOAD, f"HTTP {status}", source=url)
        self.status = status


class TooLargeError(PackError):
    """The server sent (or announced) more bytes than the file may have."""

    def __init__(self, received: int, limit: int, url: str) -> None:
        super().__init__(FailureReason.MISMATCH, f"{received} bytes, more than the {limit} expected", source=url)


def parse_content_range(value: str, *, url: str = "") -> tuple[int | None, int | None, int]:
    """``Content-Range: bytes first-last/total`` (or ``bytes */total``) as ``(first, last, total)``.

    Raises:
        PackError: (download) not of that form, or inconsistent (last before first, beyond the total).
    """
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise PackError(FailureReason.DOWNLOAD, f"unreadable Content-Range {value[:80]!r}", source=url)
    first_text, last_text, total_text = match.groups()
    total = int(total_text)
    if first_text is None or last_text is None:
        return None, None, total
    first, last = int(first_text), int(last_text)
    if last < first or last >= total:
        raise PackError(FailureReason.DOWNLOAD, f"inconsistent Content-Range {value[:80]!r}", source=url)
    return first, last, total


class HttpsDownloader:
    """Blocking GETs over HTTPS (or plain HTTP for a lab setup) with size and time limits.

    Args:
        ca_pem: the CA certificate(s) the server's certificate must chain to; None: the system's store.
        timeout_s: the socket timeout of one connect or read.
        min_rate: the slowest average transfer (bytes/s) accepted before a request's deadline.
    """

    def __init__(self, *, ca_pem: str | None, timeout_s: float = 30.0, min_rate: float = 4096.0) -> None:
        self._timeout_s = timeout_s
        self._min_rate = min_rate
        try:
            self._context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
        except (ssl.SSLError, ValueError) as exc:
            raise PackError(FailureReason.DOWNLOAD, f"the CA certificate is not usable: {exc}") from exc

    def fetch(self, url: str, max_length: int) -> bytes:
        """The whole body of ``url`` (a metadata file), at most ``max_length`` bytes.

        Raises:
            HttpStatusError: an HTTP error status.
            TooLargeError: the body is longer than ``max_length``.
            PackError: (download) the connection failed, timed out or broke off.
        """
        chunks: list[bytes] = []
        deadline = self._deadline(max_length)
        connection, response = self._get(url, {})
        try:
            if response.status != http.client.OK:
                raise HttpStatusError(response.status, url)
            self._check_announced(response, max_length, url)
            received = 0
            while chunk := self._read(response, url, deadline):
                received += len(chunk)
                if received > max_length:
                    raise TooLargeError(received, max_length, url)
                chunks.append(chunk)
            self._check_complete(response, url)
        finally:
            connection.close()
        return b"".join(chunks)

    def fetch_to(self, url: str, partial: Path, max_length: int, progress: Progress | None = None) -> Path:
        """Download ``url`` into ``partial``, continuing from the bytes a previous attempt left there.

        The partial file stays after a connection failure (the next call resumes); it is removed when the
        body turns out too long. The caller removes it once it has used (or refused) the complete file.

        Raises:
            HttpStatusError: an HTTP error status (other than 416 for a complete file).
            TooLargeError: the body is longer than ``max_length``.
            PackError: (download) the connection failed, timed out or broke off (resumable).
        """
        partial.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.exists() else 0
        if have > max_length:
            partial.unlink()
            have = 0
        deadline = self._deadline(max_length - have)
        connection, response = self._get(url, {"Range": f"bytes={have}-"} if have else {})
        try:
            if response.status == http.client.REQUESTED_RANGE_NOT_SATISFIABLE and have:
                _first, _last, total = parse_content_range(response.getheader("Content-Range", ""), url=url)
                if total == have:
                    return partial
                partial.unlink()
                raise PackError(FailureReason.DOWNLOAD, "the partial download is longer than the file", source=url)
            if response.status == http.client.OK:
                have = 0
            elif response.status == http.client.PARTIAL_CONTENT and have:
                first, _last, _total = parse_content_range(response.getheader("Content-Range", ""), url=url)
                if first != have:
                    raise PackError(FailureReason.DOWNLOAD, f"asked to resume at {have}, got {first}", source=url)
            else:
                raise HttpStatusError(response.status, url)
            self._check_announced(response, max_length - have, url)
            with partial.open("r+b" if have else "wb") as file:
                file.seek(have)
                file.truncate()
                while chunk := self._read(response, url, deadline):
                    if have + len(chunk) > max_length:
                        file.close()
                        partial.unlink()
                        raise TooLargeError(have + len(chunk), max_length, url)
                    file.write(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(have, max_length)
            self._check_complete(response, url)
        finally:
            connection.close()
        return partial

    def _deadline(self, length: int) -> float:
        return time.monotonic() + self._timeout_s + max(0, length) / self._min_rate

    def _get(self, url: str, headers: dict[str, str]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise PackError(FailureReason.DOWNLOAD, "bad port in URL", source=url) from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise PackError(FailureReason.DOWNLOAD, "not an https:// URL", source=url)
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.hostname, port, timeout=self._timeout_s, context=self._context
            )
        else:
            connection = http.client.HTTPConnection(parts.hostname, port, timeout=self._timeout_s)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", target, headers={"User-Agent": f"bmsgate/{__version__}", **headers})
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise PackError(FailureReason.DOWNLOAD, f"request failed: {exc}", source=url) from exc
        return connection, response

    @staticmethod
    def _check_announced(response: http.client.HTTPResponse, limit: int, url: str) -> None:
        announced = response.getheader("Content-Length")
        if announced is not None and announced.strip().isdigit() and int(announced) > limit:
            raise TooLargeError(int(announced), limit, url)

    @staticmethod
    def _check_complete(response: http.client.HTTPResponse, url: str) -> None:
        # http.client's read1 ends quietly when the peer closes early; the bytes still owed say so.
        if response.length:
            raise PackError(FailureReason.DOWNLOAD, f"transfer broke off, {response.length} bytes short", source=url)

    @staticmethod
    def _read(response: http.client.HTTPResponse, url: str, deadline: float) -> bytes:
        if time.monotonic() > deadline:
            raise PackError(FailureReason.DOWNLOAD, "too slow: the transfer's deadline passed", source=url)
        try:
            return response.read1(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise PackError(FailureReason.DOWNLOAD, f"transfer broke off: {exc}", source=url) from exc
