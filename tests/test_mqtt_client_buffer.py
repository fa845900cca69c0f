"""The MQTT adapter's buffered socket: paho's exact-size reads served from one large read, nothing lost."""

from __future__ import annotations

import socket

import pytest

from bmsgate.mqtt.client import _BufferedSocket


def test_small_reads_come_from_one_large_read_and_pending_tells_what_is_left() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.setblocking(False)
        left.sendall(b"\x30\x05hello\x30\x02hi")
        wrapped = _BufferedSocket(right)
        assert wrapped.recv(1) == b"\x30"
        assert wrapped.pending() == 10  # the rest arrived with the first read
        assert wrapped.recv(1) == b"\x05"
        assert wrapped.recv(5) == b"hello"
        assert wrapped.recv(4) == b"\x30\x02hi"
        assert wrapped.pending() == 0
        with pytest.raises(BlockingIOError):
            wrapped.recv(1)  # nothing buffered, nothing on the wire: as a plain non-blocking socket
        left.sendall(b"abc")
        assert wrapped.recv(10) == b"abc"  # a short read, as paho expects of recv
        assert wrapped.fileno() == right.fileno()


def test_a_closed_peer_is_seen_after_the_buffered_bytes() -> None:
    left, right = socket.socketpair()
    with right:
        right.setblocking(False)
        left.sendall(b"xyz")
        left.close()
        wrapped = _BufferedSocket(right)
        assert wrapped.recv(1) == b"x"
        assert wrapped.recv(5) == b"yz"
        assert wrapped.recv(1) == b""
