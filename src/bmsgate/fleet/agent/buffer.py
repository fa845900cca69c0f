"""The agent's outbox: every telemetry and event message, on disk until the broker acknowledged it.

A message is written (committed) here *before* it is sent and deleted when its PUBACK arrives, so a
broker outage, a lost connection or a ``kill -9`` of the gateway loses nothing that was written: at
most the message being built at that instant. What was sent but not yet deleted is sent again after a
restart; the server stores a sample once (by gateway, battery and time), so a repeat is harmless.

The sequence counter lives in the same file and the same transactions, so it survives restarts and never
repeats. The file is bounded by the stored payload bytes (zlib-compressed: telemetry repeats its keys
for every battery, ~4x smaller); beyond the bound the oldest messages go first, counted in ``dropped``.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit is durable against a crash of the process (the
case that matters: kill, OOM, watchdog), and only a power cut can lose the last commits — no fsync per
message on an SD card. Each operation is one short transaction on the event loop's thread (well under a
millisecond at the agent's rate of one message per interval).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from bmsgate.errors import SinkError

__all__ = ["BufferedMessage", "Outbox"]

_LOGGER = logging.getLogger(__name__)
_SINK: Final = "fleet-buffer"
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS outbox ("
    " seq INTEGER PRIMARY KEY, channel TEXT NOT NULL, created REAL NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


@dataclasses.dataclass(frozen=True, slots=True)
class BufferedMessage:
    """One stored message (payload decompressed)."""

    seq: int
    channel: str
    created: float
    payload: bytes


class Outbox:
    """A bounded, durable FIFO of fleet messages keyed by their sequence number.

    Args:
        path: the SQLite file (created with its directory).
        max_bytes: bound of the stored (compressed) payload bytes.

    Raises:
        SinkError: the file cannot be created or opened (e.g. read-only state directory).
    """

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._db = self._open(path)
        self.next_seq = self._meta("next_seq")
        last = self._db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0]
        if last is not None and last >= self.next_seq:
            self.next_seq = last + 1
        self.dropped = self._meta("dropped")
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self.queued: int = row[0]
        self.stored_bytes: int = row[1]

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return Outbox._connect(path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
                raise SinkError(f"cannot open the fleet buffer {path}: {exc}", sink=_SINK) from exc
            # Not a database (or damaged): keep it for inspection, start a new one; nothing is overwritten.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            _LOGGER.warning("fleet buffer %s is damaged (%s); moved to %s, starting a new one", path, exc, aside)
            with contextlib.suppress(OSError):
                path.replace(aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(OSError):
                    path.with_name(path.name + suffix).unlink()
            try:
                return Outbox._connect(path)
            except sqlite3.DatabaseError as again:
                raise SinkError(f"cannot create the fleet buffer {path}: {again}", sink=_SINK) from again
        except OSError as exc:
            raise SinkError(f"cannot create the fleet buffer {path}: {exc}", sink=_SINK) from exc

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def append(self, channel: str, build: Callable[[int], bytes], *, created: float) -> tuple[int, int]:
        """Store one message under the next sequence number.

        Args:
            channel: its channel (``telemetry`` / ``event``).
            build: makes the payload for the sequence number it is given.
            created: wall-clock time of the message.

        Returns:
            The message's sequence number and how many old messages were dropped to make room.

        Raises:
            SinkError: the write failed (disk full, I/O error); the counter did not move.
        """
        seq = self.next_seq
        blob = zlib.compress(build(seq), 6)
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO outbox (seq, channel, created, payload) VALUES (?, ?, ?, ?)",
                    (seq, channel, created, blob),
                )
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?)", (seq + 1,))
                dropped = self._trim(len(blob), keep=seq)
        except sqlite3.Error as exc:
            raise SinkError(f"cannot write to the fleet buffer {self.path}: {exc}", sink=_SINK) from exc
        self.next_seq = seq + 1
        self.queued += 1 - dropped[0]
        self.stored_bytes += len(blob) - dropped[1]
        self.dropped += dropped[0]
        return seq, dropped[0]

    def _trim(self, adding: int, *, keep: int) -> tuple[int, int]:
        """Delete the oldest rows until the bound holds (inside the caller's transaction)."""
        excess = self.stored_bytes + adding - self.max_bytes
        if excess <= 0:
            return 0, 0
        count = freed = last = 0
        for seq, size in self._db.execute(
            "SELECT seq, LENGTH(payload) FROM outbox WHERE seq != ? ORDER BY seq", (keep,)
        ):
            if freed >= excess:
                break
            count += 1
            freed += size
            last = seq
        if count:
            self._db.execute("DELETE FROM outbox WHERE seq <= ? AND seq != ?", (last, keep))
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('dropped', ?)", (self.dropped + count,))
        return count, freed

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def oldest(self, *, after: int = -1, up_to: int | None = None, limit: int = 16) -> list[BufferedMessage]:
        """Stored messages with ``after < seq <= up_to``, oldest first.

        Raises:
            SinkError: the read failed.
        """
        bound = self.next_seq if up_to is None else up_to
        try:
            rows = self._db.execute(
                "SELECT seq, channel, created, payload FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, bound, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SinkError(f"cannot read the fleet buffer {self.path}: {exc}", sink=_SINK) from exc
        messages = []
        for seq, channel, created, blob in rows:
            try:
                payload = zlib.decompress(blob)
            except zlib.error:
                _LOGGER.warning("fleet buffer: message %d is damaged; dropping it", seq)
                self.remove(seq)
                continue
            messages.append(BufferedMessage(seq, channel, created, payload))
        return messages

    def remove(self, seq: int) -> None:
        """Forget a message the broker acknowledged (no-op when it is gone already).

        Raises:
            SinkError: the delete failed.
        """
        try:
            row = self._db.execute("DELETE FROM outbox WHERE seq = ? RETURNING LENGTH(payload)", (seq,)).fetchone()
        except sqlite3.Error as exc:
            raise SinkError(f"cannot update the fleet buffer {self.path}: {exc}", sink=_SINK) from exc
        if row is not None:
            self.queued -= 1
            self.stored_bytes -= row[0]

    def close(self) -> None:
        """Close the file (idempotent)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
