"""The outbox: durable, bounded, oldest dropped first and counted, a counter that survives restarts."""

from __future__ import annotations

import contextlib
import random
import sqlite3
from pathlib import Path

import pytest

from bmsgate.errors import SinkError
from bmsgate.fleet.agent.buffer import Outbox


def _payload(size: int) -> bytes:
    # Incompressible, so the stored size is close to `size` and the bound is easy to reason about.
    return random.Random(size).randbytes(size)


def test_messages_survive_reopening_and_the_counter_never_repeats(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    outbox = Outbox(path, max_bytes=1 << 20)
    for _ in range(3):
        outbox.append("telemetry", lambda seq: b'{"seq":%d}' % seq, created=1.0)
    outbox.remove(0)
    outbox.close()  # a kill -9 closes nothing either: the commits are what counts
    again = Outbox(path, max_bytes=1 << 20)
    assert [(message.seq, message.payload) for message in again.oldest()] == [(1, b'{"seq":1}'), (2, b'{"seq":2}')]
    assert again.queued == 2
    again.remove(1)
    again.remove(2)
    seq, _ = again.append("event", lambda seq: b"x", created=2.0)
    assert seq == 3, "an emptied buffer still continues the sequence"
    again.close()


def test_beyond_the_bound_the_oldest_go_first_and_are_counted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "buffer.sqlite", max_bytes=100_000)
    dropped_total = 0
    for _ in range(60):
        _, dropped = outbox.append("telemetry", lambda seq: _payload(4000), created=0.0)
        dropped_total += dropped
    assert outbox.stored_bytes <= 100_000
    assert dropped_total == outbox.dropped > 0
    remaining = [message.seq for message in outbox.oldest(limit=100)]
    assert remaining == list(range(60 - len(remaining), 60)), "only the oldest were dropped"
    outbox.close()
    reopened = Outbox(tmp_path / "buffer.sqlite", max_bytes=100_000)
    assert reopened.dropped == dropped_total
    assert reopened.queued == len(remaining)
    reopened.close()


def test_windows_of_the_backlog(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "buffer.sqlite", max_bytes=1 << 20)
    for _ in range(10):
        outbox.append("telemetry", lambda seq: b"%d" % seq, created=0.0)
    assert [message.seq for message in outbox.oldest(after=2, up_to=5)] == [3, 4, 5]
    assert [message.seq for message in outbox.oldest(after=7)] == [8, 9]
    outbox.close()


def test_a_damaged_file_is_kept_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    outbox = Outbox(path, max_bytes=1 << 20)
    assert outbox.queued == 0
    outbox.append("event", lambda seq: b"{}", created=0.0)
    outbox.close()
    kept = list(tmp_path.glob("buffer.sqlite.corrupt-*"))
    assert len(kept) == 1
    assert kept[0].read_bytes().startswith(b"this is not a database")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (1,)


def test_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SinkError, match="fleet buffer"):
        Outbox(blocker / "buffer.sqlite", max_bytes=1 << 20)


def _stored(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def test_a_file_another_process_holds_locked_is_an_error_and_keeps_its_backlog(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    outbox = Outbox(path, max_bytes=1 << 20)
    for _ in range(3):
        outbox.append("telemetry", lambda seq: b"%d" % seq, created=0.0)
    outbox.close()
    # Another connection (a second agent, a backup tool) holds the file exclusively.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO meta (key, value) VALUES ('held', 1)")
    try:
        with pytest.raises(SinkError, match=r"locked.*another process"):
            Outbox(path, max_bytes=1 << 20, lock_timeout_s=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(tmp_path.glob("*.corrupt-*")), "a locked file is not damaged"
    again = Outbox(path, max_bytes=1 << 20)
    assert [message.seq for message in again.oldest()] == [0, 1, 2]
    again.close()


def test_a_damaged_file_moves_aside_with_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    wal = b"the write-ahead log that belongs to it" * 10
    path.with_name(path.name + "-wal").write_bytes(wal)
    fresh = Outbox(path, max_bytes=1 << 20)
    assert fresh.queued == 0
    fresh.append("event", lambda seq: b"{}", created=0.0)
    fresh.close()
    kept = sorted(tmp_path.glob("buffer.sqlite.corrupt-*"))
    assert kept[0].read_bytes().startswith(b"this is not a database")
    assert kept[0].with_name(kept[0].name + "-wal").read_bytes() == wal, "the WAL is kept with its file"
    assert _stored(path) == 1
