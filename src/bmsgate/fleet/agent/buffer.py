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


class _MovedAside(Exception):
    """The file was damaged and is now at ``aside`` (with its WAL); a new one can be created."""

    def __init__(self, aside: Path, cause: sqlite3.DatabaseError) -> None:
        super().__init__(f"moved to {aside}")
        self.aside = aside
        self.cause = cause


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
        lock_timeout_s: how long an operation waits for a lock another process holds.

    Raises:
        SinkError: the file cannot be created or opened (e.g. read-only state directory, or another process
            holds it locked: then it is left as it is and opening it again later finds the backlog).
    """

    def __init__(self, path: Path, *, max_bytes: int, lock_timeout_s: float = 5.0) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._db = self._open(path, lock_timeout_s)
        self.next_seq = self._meta("next_seq")
        last = self._db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0]
        if last is not None and last >= self.next_seq:
            self.next_seq = last + 1
        self.dropped = self._meta("dropped")
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self.queued: int = row[0]
        self.stored_bytes: int = row[1]

    @staticmethod
    def _open(path: Path, lock_timeout_s: float) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return Outbox._connect(path, lock_timeout_s, move_damaged=True)
        except _MovedAside as moved:
            _LOGGER.warning(
                "fleet buffer %s is damaged (%s); moved to %s, starting a new one", path, moved.cause, moved.aside
            )
        except sqlite3.DatabaseError as exc:
            # Locked or busy (a second agent, a backup tool), unable to open, I/O: the file may be fine and in
            # use, so it is left as it is and the caller retries later.
            raise SinkError(f"cannot open the fleet buffer {path}: {_describe(exc)}", sink=_SINK) from exc
        except OSError as exc:
            raise SinkError(f"cannot create the fleet buffer {path}: {exc}", sink=_SINK) from exc
        try:
            return Outbox._connect(path, lock_timeout_s, move_damaged=False)
        except sqlite3.DatabaseError as again:
            raise SinkError(f"cannot create the fleet buffer {path}: {_describe(again)}", sink=_SINK) from again

    @staticmethod
    def _move_aside(path: Path, exc: sqlite3.DatabaseError) -> Path:
        """Keep a damaged file with its WAL and shared-memory files (one set, nothing deleted) for inspection.

        Raises:
            SinkError: the file cannot be moved (then nothing was moved, and nothing is overwritten).
        """
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            path.replace(aside)
        except OSError as move_failed:
            raise SinkError(
                f"the fleet buffer {path} is damaged ({exc}) and cannot be moved aside: {move_failed}", sink=_SINK
            ) from move_failed
        for suffix in ("-wal", "-shm"):
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                try:
                    companion.replace(aside.with_name(aside.name + suffix))
                except OSError as move_failed:
                    _LOGGER.warning("fleet buffer: cannot move %s aside: %s", companion, move_failed)
        return aside

    @staticmethod
    def _connect(path: Path, lock_timeout_s: float, *, move_damaged: bool) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, timeout=lock_timeout_s)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except sqlite3.DatabaseError as exc:
            try:
                # Moved while still open: closing the last connection lets SQLite delete a WAL it cannot read,
                # and the WAL may hold what the damaged file lacks.
                if move_damaged and _is_damaged(exc):
                    raise _MovedAside(Outbox._move_aside(path, exc), exc) from exc
                raise
            finally:
                db.close()
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


# The primary result codes (the low byte of an extended one) that mean the file itself is not usable as our
# database. Everything else (busy, locked, cannot open, I/O, read-only) is a condition of the moment.
_DAMAGED_CODES: Final = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})
_IN_USE_CODES: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _is_damaged(exc: sqlite3.DatabaseError) -> bool:
    return _primary_code(exc) in _DAMAGED_CODES


def _describe(exc: sqlite3.Error) -> str:
    if _primary_code(exc) in _IN_USE_CODES:
        return f"{exc}: another process holds it (a second agent or a backup tool?); retrying later"
    return str(exc)
