"""The MQTT adapter: the only module that imports aiomqtt/paho.

It offers one connected session (:func:`connect`) with ``publish``, ``subscribe`` and an incoming
message iterator, and translates every library or socket failure into :class:`SinkError`. Reconnect
policy lives in the sink, not here: a session that fails is simply over.

A consumer of thousands of messages a second (the fleet ingest) reads them in batches
(:meth:`MqttSession.message_batches`: no task per message; on a plain connection the PUBLISH packets
in the read buffer are parsed in one pass, see :meth:`_BufferedSocket.take_publishes`) and acknowledges a
whole batch in one socket write (:meth:`MqttSession.ack_many`).

Why one long module: it is the only place that may import aiomqtt and paho (principle: one adapter per
library), and the ways it works around them (writes at once, buffered reads, housekeeping on the tick grid,
no ``on_publish`` call for what nobody awaits) touch the same private corners of both, so they stay together.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import ssl
import struct
import tempfile
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as paho_mqtt

from bmsgate.errors import SinkError
from bmsgate.mqtt.rotation import rotation_for
from bmsgate.mqtt.settings import BrokerSettings, TlsSettings
from bmsgate.runtime.cadence import sleep_until, tick_after
from bmsgate.runtime.cancellation import uninterruptible

__all__ = ["IncomingMessage", "MqttSession", "connect"]

SINK_NAME: Final = "mqtt"
_TIMEOUT: Final = 10.0
"""Seconds to wait for CONNACK, SUBACK or PUBACK before the session counts as broken.

Acknowledgements are awaited under our own ``asyncio.timeout`` with aiomqtt's set to infinity: aiomqtt
uses ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation that races with the
acknowledgement, leaving a task that never stops (see :mod:`bmsgate.runtime.cancellation`). The connect
itself (which needs aiomqtt's timeout for the CONNACK) runs in a task of its own; see :func:`_enter`.
"""
_ABANDON_GRACE: Final = 0.5
"""Seconds a connect interrupted by cancellation may still take, so its connection can be closed cleanly."""
_CLOSE_TIMEOUT: Final = 0.5
"""Seconds to wait for a clean disconnect before the session is dropped anyway."""
_PUBACK: Final = struct.Struct("!BBH")
"""An MQTT 3.1.1 PUBACK: type 0x40, remaining length 2, the packet id."""
_PUBACK_TYPE: Final = 0x40
_PUBLISH_TYPE: Final = 0x30
_PAHO_INTERNALS_KNOWN: Final = all(
    hasattr(paho_mqtt.Client, name) for name in ("_packet_read", "_packet_queue", "_sock_recv")
) and hasattr(paho_mqtt, "time_func")
"""The fast read and acknowledgement paths use paho internals (2.x); a paho without them gets its own paths."""


@dataclasses.dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A message received on a subscribed topic."""

    topic: str
    payload: bytes
    retain: bool
    qos: int = 0
    mid: int = 0
    """The packet id, for :meth:`MqttSession.ack` (sessions connected with ``manual_ack``)."""


def _error(action: str, exc: BaseException) -> SinkError:
    return SinkError(f"{action}: {exc}", sink=SINK_NAME)


def _lost(disconnected: asyncio.Future[Any]) -> BaseException:
    """Why a session's connection ended (its ``disconnected`` future is done)."""
    if disconnected.cancelled():
        return ConnectionError("the session was closed")
    return disconnected.exception() or ConnectionError("the broker closed the connection")


def _ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """Build the TLS context (blocking: it reads certificate files)."""
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None, cadata=tls.ca_pem)
    if tls.cert_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    elif tls.cert_pem is not None and tls.key_pem is not None:
        # The ssl module loads a certificate chain only from files: a private directory, gone right after.
        with tempfile.TemporaryDirectory(prefix="bmsgate-tls-") as directory:
            cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
            cert.write_text(tls.cert_pem, encoding="utf-8")
            key.write_text(tls.key_pem.get_secret_value(), encoding="utf-8")
            context.load_cert_chain(str(cert), str(key))
    if tls.insecure:
        context.check_hostname = False
    return context


class MqttSession:
    """One connected MQTT session (create it with :func:`connect`)."""

    def __init__(self, client: aiomqtt.Client, qos: int, *, manual_ack: bool = False) -> None:
        self._client = client
        self.qos = qos
        self.manual_ack = manual_ack

    def ack(self, message: IncomingMessage) -> None:
        """Acknowledge a QoS 1/2 message received on a ``manual_ack`` session (no-op otherwise).

        Until acknowledged, the broker counts the message as in flight: it stops sending once its
        in-flight limit is reached and queues the rest for the (persistent) session, and it sends the
        message again after a reconnect. Acknowledge in the order received, and only on the session the
        message came on.
        """
        if self.manual_ack and message.qos > 0:
            # aiomqtt has no acknowledgement API; paho's own is public (manual_ack_set / ack).
            self._client._client.ack(message.mid, message.qos)

    def ack_many(self, messages: Sequence[IncomingMessage]) -> None:
        """Acknowledge many messages at once, in order (see :meth:`ack`); QoS 1 ones in one socket write.

        paho sends each acknowledgement as a packet of its own, a system call (and on loopback a wake-up of
        the broker) per message; a batch's PUBACKs are instead queued as one packet of concatenated
        PUBACKs, which the broker reads as the same byte stream.
        """
        if not self.manual_ack:
            return
        mids = [message.mid for message in messages if message.qos == 1]
        for message in messages:
            if message.qos > 1:
                self.ack(message)
        _queue_pubacks(self._client._client, mids)

    async def publish(self, topic: str, payload: str | bytes, *, retain: bool, qos: int | None = None) -> None:
        """Publish one message; with QoS > 0 this waits for the broker's acknowledgement.

        Raises:
            SinkError: the session is broken.
        """
        try:
            async with asyncio.timeout(_TIMEOUT):
                await self._client.publish(
                    topic, payload, qos=self.qos if qos is None else qos, retain=retain, timeout=math.inf
                )
        except TimeoutError as exc:
            raise _error(f"publish to {topic}", exc) from exc
        except aiomqtt.MqttError as exc:
            raise _error(f"publish to {topic}", exc) from exc

    async def subscribe(self, *topic_filters: str) -> None:
        """Subscribe to topic filters (QoS 1).

        Raises:
            SinkError: the session is broken.
        """
        try:
            async with asyncio.timeout(_TIMEOUT):
                await self._client.subscribe([(topic, 1) for topic in topic_filters], timeout=math.inf)
        except TimeoutError as exc:
            raise _error("subscribe", exc) from exc
        except aiomqtt.MqttError as exc:
            raise _error("subscribe", exc) from exc

    async def message_batches(self) -> AsyncIterator[list[IncomingMessage]]:
        """Incoming messages in batches: each is everything received since the previous one (never empty).

        paho's per-message callback appends to a list and wakes this iterator once for the lot, instead of
        aiomqtt's queue with a task and an ``asyncio.wait`` per message. The batch size is bounded by the
        broker's in-flight window on a ``manual_ack`` session (the broker sends no more until acknowledged).
        Use this or :meth:`messages` on a session, not both.

        Raises:
            SinkError: the connection was lost (messages received before it are yielded first).
        """
        paho = self._client._client
        pending: list[IncomingMessage] = []
        arrived = asyncio.Event()

        def on_incoming(message: IncomingMessage) -> None:
            pending.append(message)
            arrived.set()

        def on_message(_client: Any, _userdata: Any, message: Any) -> None:
            pending.append(
                IncomingMessage(
                    # Invalid UTF-8 becomes a topic no parser accepts: refused as a message, not a broken session.
                    message._topic.decode("utf-8", "replace"),
                    message.payload,
                    bool(message.retain),
                    qos=message.qos,
                    mid=message.mid,
                )
            )
            arrived.set()

        previous = paho.on_message
        paho.on_message = on_message
        sock = paho._sock
        if isinstance(sock, _BufferedSocket) and _PAHO_INTERNALS_KNOWN:
            _read_publishes_in_bulk(paho, sock, on_incoming, acknowledge=not self.manual_ack)
        # What arrived before (a persistent session's queue, sent right after the CONNACK) went to aiomqtt.
        queue = self._client._queue
        while not queue.empty():
            pending.append(_incoming(queue.get_nowait()))
        disconnected: asyncio.Future[Any] = self._client._disconnected
        try:
            while True:
                if not pending:
                    arrived.clear()
                    waiter = asyncio.ensure_future(arrived.wait())
                    try:
                        await asyncio.wait((waiter, disconnected), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                    if not pending:
                        raise _error("connection lost", _lost(disconnected))
                batch = pending[:]
                pending.clear()
                yield batch
        finally:
            paho.on_message = previous
            paho.__dict__.pop("_packet_read", None)  # paho's own again

    async def messages(self) -> AsyncIterator[IncomingMessage]:
        """Incoming messages until the session breaks.

        Raises:
            SinkError: the connection was lost.
        """
        iterator = self._client.messages.__aiter__()
        while True:
            try:
                message = await iterator.__anext__()
            except aiomqtt.MqttError as exc:
                raise _error("connection lost", exc) from exc
            yield _incoming(message)


def _incoming(message: aiomqtt.Message) -> IncomingMessage:
    return IncomingMessage(
        str(message.topic),
        bytes(message.payload),
        bool(message.retain),
        qos=int(message.qos),
        mid=int(message.mid),
    )


@contextlib.asynccontextmanager
async def connect(
    settings: BrokerSettings,
    *,
    will_topic: str,
    will_payload: str,
    client_id: str | None = None,
    clean_session: bool = True,
    manual_ack: bool = False,
    buffered_reads: bool = False,
) -> AsyncIterator[MqttSession]:
    """Connect to the broker with a retained last will; disconnect cleanly on exit.

    Args:
        settings: connection settings.
        will_topic: topic of the last will (published by the broker if we vanish).
        will_payload: its payload.
        client_id: overrides ``settings.effective_client_id``.
        clean_session: False keeps the broker-side session (subscriptions and queued QoS 1 messages) across
            disconnects; needs a fixed client id.
        manual_ack: acknowledge received QoS 1 messages only through :meth:`MqttSession.ack` (a consumer
            that acknowledges after storing loses nothing when it dies, and applies backpressure).
        buffered_reads: read the socket in large chunks (see :class:`_BufferedSocket`); for consumers of many
            messages on a plain (loopback) connection. Ignored with TLS.

    Raises:
        SinkError: connecting failed (refused, authentication, TLS, network) or the session broke.
    """
    tls_context = None
    if settings.tls is not None:
        try:
            tls_context = await asyncio.to_thread(_ssl_context, settings.tls)
        except (OSError, ssl.SSLError) as exc:
            raise _error("TLS set-up", exc) from exc
    rotation = rotation_for(settings.addresses())
    addresses = rotation.in_order()  # after a node that failed or dropped us: the next one first
    for attempt, (host, port) in enumerate(addresses, start=1):
        client = aiomqtt.Client(
            host,
            port,
            username=settings.username,
            password=settings.resolved_password(),
            identifier=client_id or settings.effective_client_id,
            will=aiomqtt.Will(will_topic, will_payload, qos=1, retain=True),
            keepalive=settings.keepalive,
            clean_session=clean_session,
            timeout=_TIMEOUT,
            tls_context=tls_context,
        )
        if manual_ack:
            client._client.manual_ack_set(True)  # see MqttSession.ack
        if buffered_reads and tls_context is None:
            _buffer_reads(client)
        _write_at_once(client)
        _housekeeping_on_grid(client)
        try:
            await _enter(client, settings, host, port)
        except SinkError:
            rotation.failed((host, port))
            if attempt == len(addresses):
                raise
            continue  # the next node of the broker tier (settings.hosts)
        rotation.connected((host, port))
        break
    # From here on every wait is under our own timeouts (see _TIMEOUT); this one also covers the
    # DISCONNECT in __aexit__, which is then awaited without asyncio.wait_for.
    client.timeout = math.inf
    try:
        yield MqttSession(client, settings.qos, manual_ack=manual_ack)
    except SinkError:
        rotation.failed((host, port))  # the session broke: that node may be going away
        raise
    finally:
        await _close(client)


class _BufferedSocket:
    """A plain socket whose ``recv`` reads up to 64 KiB at a time and serves paho's small reads from that.

    paho reads each packet with several exact-size ``recv`` calls (the type byte, each length byte, the
    payload): four system calls per 1 KB message, about a third of an ingest's CPU. This wrapper makes it
    one call per 64 KiB. ``pending()`` reports what is buffered: aiomqtt's reader callback keeps calling
    paho's ``loop_read`` while the socket says data is pending (its provision for TLS sockets, which
    buffer the same way), so no buffered packet waits for the next network event.
    """

    __slots__ = ("_buffer", "_socket")

    _CHUNK: Final = 64 * 1024

    def __init__(self, sock: Any) -> None:
        self._socket = sock
        self._buffer = bytearray()

    def recv(self, size: int) -> bytes:
        if len(self._buffer) < size:
            try:
                data = self._socket.recv(max(size, self._CHUNK))
            except BlockingIOError:
                if not self._buffer:
                    raise
                data = b""
            else:
                if not data and not self._buffer:
                    return b""  # closed by the peer
            self._buffer += data
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    def pending(self) -> int:
        return len(self._buffer)

    def fill(self) -> bool:
        """Read what the socket has (up to 64 KiB) into the buffer; False if the peer closed it.

        Raises:
            BlockingIOError: nothing to read now.
            OSError: the connection failed.
        """
        data = self._socket.recv(self._CHUNK)
        self._buffer += data
        return bool(data)

    def take_publishes(self, deliver: Any) -> int:
        """Parse the complete QoS 0/1 PUBLISH packets at the head of the buffer; returns how many.

        Each becomes an :class:`IncomingMessage` handed to ``deliver``. It stops at anything else (another
        packet type, QoS 2, an incomplete or malformed packet), which is left to paho.
        """
        buffer = self._buffer
        size = len(buffer)
        position = 0
        taken = 0
        while position + 2 <= size:
            first = buffer[position]
            qos = (first >> 1) & 3
            if first & 0xF0 != _PUBLISH_TYPE or qos > 1:
                break
            length, multiplier, index = 0, 1, position + 1
            while True:
                if index >= size or index - position > 4:
                    length = -1
                    break
                byte = buffer[index]
                index += 1
                length += (byte & 0x7F) * multiplier
                multiplier <<= 7
                if not byte & 0x80:
                    break
            end = index + length
            if length < 2 or end > size:
                break  # incomplete, or too short for a topic length (malformed: paho refuses it)
            topic_end = index + 2 + (buffer[index] << 8 | buffer[index + 1])
            payload_start = topic_end + (2 if qos else 0)
            if payload_start > end:
                break  # malformed: paho refuses it
            mid = buffer[topic_end] << 8 | buffer[topic_end + 1] if qos else 0
            deliver(
                IncomingMessage(
                    # Invalid UTF-8 becomes a topic no parser accepts: refused as a message, not a broken session.
                    buffer[index + 2 : topic_end].decode("utf-8", "replace"),
                    bytes(buffer[payload_start:end]),
                    bool(first & 1),
                    qos=qos,
                    mid=mid,
                )
            )
            taken += 1
            position = end
        if position:
            del buffer[:position]
        return taken

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


def _queue_pubacks(paho: Any, mids: list[int]) -> None:
    """Queue the PUBACKs of `mids` as one packet of concatenated PUBACKs (written in one go)."""
    if not mids:
        return
    if not _PAHO_INTERNALS_KNOWN:
        for mid in mids:
            paho.ack(mid, 1)  # paho's public way, a packet each
        return
    packet = b"".join([_PUBACK.pack(_PUBACK_TYPE, 2, mid) for mid in mids])
    # paho's queue of outgoing packets is private; it writes a queued packet's bytes as they are.
    paho._packet_queue(_PUBACK_TYPE, packet, 0, 0)


def _read_publishes_in_bulk(paho: Any, sock: _BufferedSocket, deliver: Any, *, acknowledge: bool) -> None:
    """Make paho's packet reader take every complete PUBLISH in the buffer in one pass (see ``take_publishes``).

    paho reads one packet per call, with its state machine, an MQTTMessage and a topic-matcher walk per
    message: about half of an ingest's CPU. Whenever paho is between packets and the buffer starts with
    PUBLISH packets, they are parsed here; anything else goes to paho's own reader, unchanged. With
    `acknowledge` (a session without manual acknowledgement), each QoS 1 message is acknowledged on receipt,
    as paho would.
    """
    read_one = paho._packet_read
    taken: list[IncomingMessage] = []

    def keep(message: IncomingMessage) -> None:
        taken.append(message)
        deliver(message)

    def packet_read() -> int:
        if paho._in_packet["command"] == 0:
            if not sock.pending():
                try:
                    if not sock.fill():
                        return int(read_one())  # closed: paho sees it and reports the lost connection
                except BlockingIOError:
                    return int(paho_mqtt.MQTT_ERR_AGAIN)
                except OSError:
                    return int(read_one())
            if sock.take_publishes(keep):
                paho._last_bytes_received = paho_mqtt.time_func()  # what paho's keepalive watches
                if acknowledge:
                    _queue_pubacks(paho, [message.mid for message in taken if message.qos == 1])
                taken.clear()
                return int(paho_mqtt.MQTT_ERR_SUCCESS)
        return int(read_one())

    paho._packet_read = packet_read


def _buffer_reads(client: aiomqtt.Client) -> None:
    """Give paho a :class:`_BufferedSocket` as soon as it opens its socket (before aiomqtt registers it)."""
    paho = client._client
    register = paho.on_socket_open

    def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
        wrapped = _BufferedSocket(sock)
        paho_client._sock = wrapped
        if register is not None:
            register(paho_client, userdata, wrapped)

    paho.on_socket_open = on_socket_open


def _write_at_once(client: aiomqtt.Client) -> None:
    """A publish on the event loop's thread writes its packet at once, while the socket takes it.

    aiomqtt asks the loop to watch the socket for writability for every packet paho queues (a wake-up of
    the loop through its self-pipe, registering and unregistering the socket with epoll, a wake-up when it
    is writable) and, for QoS 0, then waits on an event for the write. A gateway publishing a state per
    battery snapshot paid that on every message. Now paho writes right away (its public ``loop_write``);
    only what the socket does not take, a publish from another thread (paho's connect runs in one) or a
    failing write goes through aiomqtt's watcher, which also reports a broken connection as before.

    For each QoS 0 packet it writes, paho calls ``on_publish`` with a PUBACK reason code and properties it
    builds for the call: a fifth of a state message's publish. aiomqtt needs that call only for a publish it
    waits for (one the socket did not take at once, listed in its pending publishes); with none pending, the
    immediate write runs without the callback. paho marks the packets published either way, which is what
    aiomqtt checks right after the write.
    """
    paho = client._client
    register_later = paho.on_socket_register_write
    in_callback = getattr(paho, "_in_callback_mutex", None)
    if register_later is None or in_callback is None:  # pragma: no cover - a paho other than 2.x
        return
    awaited = getattr(client, "_pending_publishes", None)
    loop_thread = threading.get_ident()

    def write_now(paho_client: Any) -> None:
        callback = paho_client._on_publish
        quiet = awaited is not None and not awaited and callback is not None
        if quiet:
            paho_client._on_publish = None
        try:
            paho_client.loop_write()
        finally:
            if quiet:
                paho_client._on_publish = callback

    def on_socket_register_write(paho_client: Any, userdata: Any, sock: Any) -> None:
        # Inside one of paho's callbacks (it holds this lock) a write would take it again: paho's own rule.
        if threading.get_ident() == loop_thread and in_callback.acquire(blocking=False):
            in_callback.release()
            try:
                write_now(paho_client)
            except Exception:  # noqa: BLE001 - aiomqtt's watcher writes again and reports the failure
                register_later(paho_client, userdata, sock)
                return
            if not paho_client.want_write():
                return
        register_later(paho_client, userdata, sock)

    paho.on_socket_register_write = on_socket_register_write


def _housekeeping_on_grid(client: aiomqtt.Client) -> None:
    """Paho's once-a-second housekeeping (keep-alive pings, retries) on the shared tick grid.

    aiomqtt runs ``loop_misc`` and then sleeps a second, so its wake-ups drift against every other timer
    of the gateway and cost one wake-up of their own each second. Sleeping until the grid's next whole
    second (runtime/cadence.py) keeps the same rate and shares the wake-up with the polls and the inverter
    ticks. aiomqtt looks the method up on the instance when the socket opens, so this one runs instead.
    """
    if not callable(getattr(client, "_misc_loop", None)):  # pragma: no cover - an aiomqtt other than 2.x
        return
    paho = client._client

    async def misc_loop() -> None:
        loop = asyncio.get_running_loop()
        while paho.loop_misc() == paho_mqtt.MQTT_ERR_SUCCESS:
            await sleep_until(tick_after(loop.time(), 1.0))

    client._misc_loop = misc_loop  # type: ignore[method-assign]


async def _enter(client: aiomqtt.Client, settings: BrokerSettings, host: str, port: int) -> None:
    """Connect `client`; a cancellation always propagates and never leaves a connection behind.

    aiomqtt's connect cannot be interrupted safely: it runs the blocking socket connect in a thread
    (which goes on after a cancellation and opens the socket anyway), waits for the CONNACK with
    ``asyncio.wait_for`` (which on Python 3.11 can swallow the cancellation), and leaves its state broken
    when interrupted. So it runs to its end on its own (see :func:`uninterruptible`), and a connection
    that completes after the caller gave up is closed.
    """

    async def close_abandoned(_: aiomqtt.Client) -> None:
        client.timeout = math.inf
        await _close(client)

    try:
        await uninterruptible(
            client.__aenter__(), name="mqtt-connect", grace=_ABANDON_GRACE, on_abandoned=close_abandoned
        )
    except aiomqtt.MqttError as exc:
        _close_socket(client)  # a refused or broken TLS handshake leaves paho's socket open
        where = settings.display_url() if (host, port) == (settings.host, settings.port) else f"{host}:{port}"
        raise _error(f"connect to {where}", exc) from exc


async def _close(client: aiomqtt.Client) -> None:
    """Disconnect cleanly (bounded); a session that cannot say goodbye gets its socket closed.

    A session the network broke (a cut link) leaves paho's TLS socket open: a gateway on a flaky link
    would collect one file descriptor per reconnect until the garbage collector found them.
    """
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await client.__aexit__(None, None, None)
    except (aiomqtt.MqttError, TimeoutError):
        _close_socket(client)
    else:
        _mark_disconnect_seen(client)


def _close_socket(client: aiomqtt.Client) -> None:
    sock = client._client._sock
    if sock is not None:
        # Later in the loop, not now: paho may have just asked (from its thread) for the socket to be
        # watched, and that request must not find a closed file descriptor.
        asyncio.get_running_loop().call_soon(_close_quietly, sock)
    _mark_disconnect_seen(client)


def _mark_disconnect_seen(client: aiomqtt.Client) -> None:
    # aiomqtt keeps a lost connection's error in a future nobody awaits once the session is over; our caller
    # already has it as a SinkError, so mark it seen instead of letting asyncio log it at garbage collection.
    disconnected = getattr(client, "_disconnected", None)
    if isinstance(disconnected, asyncio.Future) and disconnected.done() and not disconnected.cancelled():
        disconnected.exception()


def _close_quietly(sock: Any) -> None:
    # The loop may still watch this descriptor (aiomqtt's reader, paho's pending write): unwatched first,
    # or the next socket to get the same number (the next node's, on a failover) cannot be watched at all
    # (the loop's selector still lists the closed one; its add_reader/add_writer fails).
    with contextlib.suppress(OSError, ValueError):
        descriptor = sock.fileno()
        if descriptor >= 0:
            loop = asyncio.get_running_loop()
            loop.remove_reader(descriptor)
            loop.remove_writer(descriptor)
    with contextlib.suppress(OSError):
        sock.close()
