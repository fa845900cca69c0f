"""The poll session: what one poll means, as a pure state machine (bytes and clock in, actions out).

A runtime (the asyncio `BatteryClient` here, a C loop on a microcontroller later) owns the link and the
clock. It calls one of the entry points and carries out the actions it gets back, in order::

    connection_reset()            the link was (re)opened or dropped: forget per-connection state
    start_poll(now, epoch=...)    begin one poll of the definition's requests
    start_command(request, now)   begin one exchange of a write command (MOSFET switching)
    feed(chunk, now)              bytes arrived (a paged framing first writes each page's acknowledgement)
    tick(now)                     the clock reached (or passed) the deadline of the last `WaitUntil`

Each call returns a list of actions; the last one is either a `WaitUntil` or a terminal action:

    DiscardPending()      drop chunks the link received that were not fed yet (a late reply to an old request)
    Write(data)           send these bytes
    WaitUntil(deadline)   feed what arrives until `deadline` (already-arrived chunks first), then tick
    SnapshotReady(...)    the poll is complete (snapshot and the frames it was decoded from)
    ReplyReady(frame)     the command exchange is complete (`frame` is None for a command without reply)
    GiveUp(error, drop_link)  the poll/exchange failed; `drop_link` asks the runtime to close the link

A `WaitUntil` whose deadline is not after `now` means: feed only what has already arrived, then tick.

States of one job (a poll or a command), for a port to another language:

    AWAIT    a request was written; the reply (matched by framing key) must come before the request deadline
    COLLECT  further numbered frames of a multi-frame reply (Daly A5 cells); each has its own deadline
    DRAIN    a streamed reply (JK): take the newest matching frame of those already received
    ROTATE   a streamed reply whose numbered frames rotate (123\\SmartBMS: one cell per frame; engine 6):
             the newest frame of every number is kept for the whole connection, and the reply is whole
             once every number its count asks for has arrived, a frame came since the last answer, and no
             number's frame is more than two rotations old (`bmsgate.protocols.rotation`)
    BACKOFF  between attempts of a request; chunks are ignored (the next attempt discards them)
    IDLE     no job; chunks are kept only while the BMS streams (the newest frame answers the next poll)

A request built from the device's advertised name (``from_name``, D-powercore's unlock) uses
``device_name``, which the runtime sets when it opens the link; without a fitting name nothing is written for it.
A request with ``only_if`` (engine 6) is skipped unless the variable it names, decoded from the replies of
this poll so far, lies in its range (Epoch Pro asks one request per pack the system reply counts).
A definition with a ``wire_key`` (Offgridtec) XORs every byte written and received with a key computed from that
name (`bmsgate.protocols.wirekey`): the session applies it at its edge, so frames stay in the clear; a device
whose name gives no key is not polled (`GiveUp` with a `ProtocolError` naming the name). Engine 7: a ``secret``
request carries the battery's configured secret (`bmsgate.protocols.secret`; refused: `AuthenticationError`), and
a ``keep_alive`` goes in front of any actions when due (`bmsgate.protocols.keepalive`). A refused request
(a status that is not ok) ends the poll when it is required; an optional one is skipped, and a refused
``until_refused`` request ends its run (Offgridtec's cell probe) while the poll goes on.

Per connection it keeps the frames of ``when: connect`` requests and whether streaming was started;
across connections only the device identity (so a snapshot names its device even when a reconnect
skipped the optional device-information request). Times are seconds on one monotonic clock; the
snapshot's Unix timestamp is ``epoch + now`` at completion, so the session never reads a clock itself.

Why one long module: it is one state machine whose transitions all read and write the same per-job and
per-connection fields; the pieces that stand alone (framing, keep-alive, secret, rotation, wire key) already
live in their own modules.
"""

from __future__ import annotations

import collections
import enum
import logging
from typing import TYPE_CHECKING, Final

from bmsgate.errors import AuthenticationError, DeviceError, DeviceTimeout, FrameError, ProtocolError
from bmsgate.protocols.devicename import request_frame
from bmsgate.protocols.framing import AssemblerStats, Frame
from bmsgate.protocols.keepalive import KeepAlive
from bmsgate.protocols.pagedframing import PagedFrameAssembler
from bmsgate.protocols.rotation import Rotation
from bmsgate.protocols.secret import SecretScreen, refusal_error, with_secret
from bmsgate.protocols.sessionactions import (
    _DISCARD,
    Action,
    DiscardPending,
    GiveUp,
    ReplyReady,
    SessionTiming,
    SnapshotReady,
    WaitUntil,
    Write,
)
from bmsgate.protocols.wirekey import wire_key, xor_bytes

if TYPE_CHECKING:
    from bmsgate.model import DeviceInfo
    from bmsgate.protocols import CompiledProtocol
    from bmsgate.protocols.definition import RequestSpec

__all__ = [
    "Action",
    "DiscardPending",
    "GiveUp",
    "PollSession",
    "ReplyReady",
    "SessionTiming",
    "SnapshotReady",
    "WaitUntil",
    "Write",
]

_LOGGER = logging.getLogger(__name__)

_SKIPPED: Final = Frame(b"", None)
"""Cached for an optional connect-time request that got no answer: do not ask again on this connection."""

_IDLE_BACKLOG: Final = 8
"""Frames kept while idle and streaming; only the newest matters, a few more cost nothing."""


class _State(enum.Enum):
    IDLE = "idle"
    AWAIT = "await"
    COLLECT = "collect"
    DRAIN = "drain"
    BACKOFF = "backoff"
    ROTATE = "rotate"


class _Failed(Exception):
    """Internal: one attempt (or the collection of numbered frames) failed with `error`."""

    def __init__(self, error: DeviceError) -> None:
        super().__init__(str(error))
        self.error = error


class PollSession:
    """One battery's poll state machine over one protocol; see the module docstring for the contract."""

    def __init__(
        self,
        protocol: CompiledProtocol,
        *,
        battery_id: str = "battery",
        timing: SessionTiming | None = None,
        device_name: str | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.protocol = protocol
        self._secret = secret
        """The battery's configured credential (a PIN, a key) for the definition's authentication step."""
        self.secret_screen = SecretScreen()  # drops echoes of a frame that carried the secret
        self.battery_id = battery_id
        self.timing = timing or SessionTiming()
        self.device_name = device_name
        """The device's advertised name, for requests built from it (``from_name``); the runtime sets it."""
        self._assembler = protocol.new_assembler()
        self._wire_key_spec = protocol.definition.framing.wire_key
        key = protocol.definition.framing.key
        # Replies without a key of their own (`key.in_replies: false`) take the key of the request they answer.
        self._keys_from_requests = key is not None and not key.in_replies
        self._device: DeviceInfo | None = None
        # per connection
        self._connection_frames: dict[str, Frame] = {}  # by request name: two may share a reply kind (OK)
        self._keep_alive = KeepAlive(protocol.definition.keep_alive)
        self._connection_writes: set[str] = set()
        """Connect-time requests without a reply already written on this connection (unlock writes)."""
        self._streaming_started = False
        self._rotation = Rotation(protocol)
        self._rotating_key = self._rotation.key
        self._rotation_drained = False
        """Rotating streams, this poll: what had already arrived when it began was fed (see `tick`)."""
        # per job
        self._state = _State.IDLE
        self._command = False
        self._requests: list[RequestSpec] = []
        self._index = 0
        self._frames: list[Frame] = []
        self._backlog: collections.deque[Frame] = collections.deque()
        self._epoch = 0.0
        self._poll_deadline: float | None = None
        self._attempt = 0
        self._deadline = 0.0
        self._rejected_before = 0
        self._expected: int | None = None
        self._collected = 0
        self._newest: Frame | None = None
        self._wait: WaitUntil | None = None
        self._follow_keys: frozenset[int] = frozenset()
        self._kept: list[Frame] = []
        """Frames for the `follows` requests of the current exchange that arrived before their turn."""

    # -- what the runtime reads ---------------------------------------------------------------------

    @property
    def assembler_stats(self) -> AssemblerStats:
        """Frames assembled and rejected on this session (for link statistics)."""
        return self._assembler.stats

    @property
    def busy(self) -> bool:
        """True while a poll or command is in progress."""
        return self._state is not _State.IDLE

    @property
    def device(self) -> DeviceInfo | None:
        """The device identity learnt so far."""
        return self._device

    # -- entry points -------------------------------------------------------------------------------

    def connection_reset(self) -> None:
        """The link was opened anew or dropped: forget partial frames and per-connection state.

        A job in progress is abandoned (the runtime reports the link failure itself).
        """
        self._assembler.reset()
        self.secret_screen.reset()
        self._connection_frames.clear()
        self._connection_writes.clear()
        self._streaming_started = False
        self._backlog.clear()
        self._rotation.clear()
        self._keep_alive.reset()
        self._end_job()

    def start_poll(self, now: float, *, epoch: float = 0.0) -> list[Action]:
        """Begin one poll at clock time `now`; `epoch` is the Unix time of clock zero (for the timestamp)."""
        self._begin(self.protocol.requests_for(self.device_name), command=False)
        self._epoch = epoch
        self._poll_deadline = now + self.timing.poll_deadline
        return self._keep_alive.around(now, self._keyless_refusal() or self._advance(now, []))

    def start_command(self, request: RequestSpec, now: float) -> list[Action]:
        """Begin one exchange of a command frame (no overall deadline; retried like a poll request)."""
        self._begin([request], command=True)
        self._poll_deadline = None
        return self._keep_alive.around(now, self._keyless_refusal() or self._advance(now, []))

    def _wire_key(self) -> int:
        """The XOR key of this device's wire (0: the definition has none; -1: its name gives none)."""
        spec = self._wire_key_spec
        if spec is None:
            return 0
        key = wire_key(self.device_name, spec)
        return -1 if key is None else key

    def _keyless_refusal(self) -> list[Action] | None:
        """A `GiveUp` when the definition needs a wire key that the device name does not give."""
        if self._wire_key() >= 0:
            return None
        names = self._wire_key_spec.names if self._wire_key_spec is not None else ""
        return self._give_up(
            ProtocolError(
                f"device name {self.device_name!r} gives no wire key (this protocol needs a name like {names!r})",
                battery_id=self.battery_id,
            ),
            drop_link=False,
        )

    def _to_wire(self, data: bytes) -> bytes:
        key = self._wire_key()
        return xor_bytes(data, key) if key > 0 else data

    def feed(self, chunk: bytes | bytearray | memoryview, now: float) -> list[Action]:
        """Bytes arrived at clock time `now`."""
        return self._keep_alive.around(now, self._feed(chunk, now))

    def _feed(self, chunk: bytes | bytearray | memoryview, now: float) -> list[Action]:
        state = self._state
        if state is not _State.IDLE and self._poll_deadline is not None and now >= self._poll_deadline:
            return self._tick(now)
        if state is _State.BACKOFF:
            return self._still_waiting()
        key = self._wire_key()
        frames = self.secret_screen.assemble(self._assembler, chunk, xor_bytes(chunk, key) if key > 0 else chunk)
        acks = self._acks()
        if self._rotating_key is not None and frames:
            frames, rotated = self._rotation.keep(frames)
            if rotated and state is _State.ROTATE and self._rotation_drained:
                # Every frame of the rotation restarts the wait for the next one.
                request = self._requests[self._index]
                self._deadline = now + (request.timeout or self.timing.request_timeout)
        if state is _State.IDLE:
            if self._streaming_started and frames:
                self._backlog.extend(frames)
                while len(self._backlog) > _IDLE_BACKLOG:
                    self._backlog.popleft()
            return acks
        if state is _State.DRAIN:
            reply = self._requests[self._index].reply
            for frame in frames:
                if frame.key is None or frame.key == reply:
                    self._newest = frame
            return [*acks, *self._still_waiting()]
        self._backlog.extend(frames)
        return self._advance(now, acks)

    def _acks(self) -> list[Action]:
        """The acknowledgements a paged framing (D-powercore) writes for the pages just received."""
        if not isinstance(self._assembler, PagedFrameAssembler):
            return []
        return [Write(self._to_wire(ack)) for ack in self._assembler.take_acks()]

    def tick(self, now: float) -> list[Action]:
        """The clock reads `now` (a `WaitUntil` deadline passed; extra calls are harmless; idle: the keep-alive)."""
        if self._state is _State.IDLE:
            return self._keep_alive.idle(now)
        return self._keep_alive.around(now, self._tick(now))

    def _tick(self, now: float) -> list[Action]:
        state = self._state
        if self._poll_deadline is not None and now >= self._poll_deadline:
            return self._give_up(
                DeviceTimeout(
                    f"poll did not finish within {self.timing.poll_deadline:.0f} s", battery_id=self.battery_id
                ),
                drop_link=False,
            )
        if now < self._deadline:
            return self._still_waiting()
        actions: list[Action] = []
        request = self._requests[self._index]
        if state is _State.ROTATE and not self._rotation_drained:
            self._rotation_drained = True
            self._deadline = now + (request.timeout or self.timing.request_timeout)
            return self._advance(now, actions)
        if state is _State.BACKOFF:
            return self._advance(now, actions)
        if state is _State.DRAIN:
            newest, self._newest = self._newest, None
            if newest is not None:
                if not newest.status_ok:
                    return self._give_up(self._status_error(request), drop_link=False)
                outcome = self._got_reply(request, newest, now, actions)
                return outcome if outcome is not None else self._advance(now, actions)
            # Nothing fresh was streamed: wait for the next frame without asking again.
            self._await(request, now, _State.AWAIT)
            return self._advance(now, actions)
        error = self._silence_error(request)
        if state is _State.COLLECT:
            if isinstance(error, DeviceTimeout) and (self._expected is None or not request.required):
                # Unknown count: the quiet line ends the reply.
                self._next_request()
                return self._advance(now, actions)
            return self._give_up(error, drop_link=isinstance(error, DeviceTimeout))
        _LOGGER.debug("%s: %s attempt %d failed: %s", self.battery_id, request.name, self._attempt + 1, error)
        self._attempt += 1
        # A `follows` request has nothing to re-send: waiting again would not bring its reply.
        if self._attempt <= max(0, self.timing.retries) and not request.follows:
            self._state = _State.BACKOFF
            self._deadline = now + self.timing.retry_backoff * 2 ** (self._attempt - 1)
            return self._wait_action(actions)
        if request.required or self._command:
            return self._give_up(error, drop_link=isinstance(error, DeviceTimeout))
        _LOGGER.debug("%s: optional request %s skipped: %s", self.battery_id, request.name, error)
        if request.when == "connect" and request.reply is not None:
            self._connection_frames[request.name] = _SKIPPED
        self._next_request()
        return self._advance(now, actions)

    # -- the machine --------------------------------------------------------------------------------

    def _begin(self, requests: list[RequestSpec], *, command: bool) -> None:
        self._requests = requests
        self._command = command
        self._kept = []
        self._follow_keys = frozenset()
        self._frames = []
        self._newest = None
        self._wait = None
        self._expected = None
        self._collected = 0
        self._index = -1
        self._next_request()

    def _end_job(self) -> None:
        self._state = _State.IDLE
        self._requests = []
        self._frames = []
        self._newest = None
        self._wait = None

    def _next_request(self) -> None:
        """Move to the next request that must be sent (cached connect-time replies are taken as they are)."""
        self._index += 1
        self._attempt = 0
        self._state = _State.BACKOFF  # "before the first attempt": _advance sends it
        self._deadline = float("-inf")
        while self._index < len(self._requests):
            request = self._requests[self._index]
            if not self._command and request.when == "connect" and request.name in self._connection_frames:
                self._frames.append(self._connection_frames[request.name])
                self._index += 1
                continue
            if not self._command and request.when == "connect" and request.name in self._connection_writes:
                self._index += 1
                continue
            if not self._command and request.only_if is not None and not self._condition_holds(request):
                self._index += 1
                continue
            return

    def _skip_refused(self) -> None:
        """Skip the refused request and, for an ``until_refused`` one, the rest of its run (a probe's end)."""
        requests = self._requests
        if requests[self._index].until_refused:
            while self._index + 1 < len(requests) and requests[self._index + 1].until_refused:
                self._index += 1
        self._next_request()

    def _advance(self, now: float, actions: list[Action]) -> list[Action]:
        """Run the machine as far as it goes without new input."""
        while True:
            if self._index >= len(self._requests):
                return self._finish(now, actions)
            request = self._requests[self._index]
            state = self._state
            if state is _State.BACKOFF:
                # Only reached once the backoff is over (tick and feed check it first).
                outcome = self._attempt_request(request, now, actions)
                if outcome is not None:
                    return outcome
                continue
            if state is _State.ROTATE:
                numbers = self._rotation.whole(request.reply) if self._rotation_drained else None
                if numbers is None:
                    return self._wait_action(actions)
                # Frames numbered outside the count (a 0, a cell since removed) are not part of the reply.
                self._frames.extend(frame for number, frame in self._rotation.frames.items() if number in numbers)
                self._rotation.answered()
                self._next_request()
                continue
            try:
                frame = self._match(request)
            except _Failed as failed:
                if self._command or (request.required and not request.until_refused):
                    return self._give_up(failed.error, drop_link=False)
                _LOGGER.debug("%s: %s refused, skipped: %s", self.battery_id, request.name, failed.error)
                self._skip_refused()
                continue
            if frame is None:
                return self._wait_action(actions)
            if state is _State.COLLECT:
                self._frames.append(frame)
                self._collected += 1
                if self._expected is not None and self._collected + 1 >= self._expected:
                    self._next_request()
                else:
                    self._await(request, now, _State.COLLECT)
                continue
            outcome = self._got_reply(request, frame, now, actions)
            if outcome is not None:
                return outcome

    def _attempt_request(self, request: RequestSpec, now: float, actions: list[Action]) -> list[Action] | None:
        """Start attempt `self._attempt` of `request`; a list when the job ends or must wait."""
        if (warm := self._keep_alive.warming_until(now)) is not None:  # the module wants the keep-alive first
            self._deadline = warm
            return self._wait_action(actions)
        if request.streaming and request.reply == self._rotating_key and not self._command:
            # The rotation kept arriving since the last poll: nothing is discarded, nothing reset.
            if request.frame and (self._attempt or not self._streaming_started):
                actions.append(Write(self._to_wire(self.protocol.wire(request.frame))))
            self._streaming_started = True
            # First feed what arrived since the last poll (a deadline of `now`): the kept rotation alone would
            # answer at once with the frames of the poll before, and the newer ones would wait in the link.
            self._await(request, now, _State.ROTATE)
            self._rotation_drained = False
            self._deadline = now
            return self._wait_action(actions)
        if request.streaming and self._streaming_started and self._attempt == 0:
            # The BMS kept streaming since the last poll: the newest frame that already arrived is this
            # poll's answer. Older ones queued behind it must never be presented as current.
            self._newest = None
            others: list[Frame] = []
            for frame in self._backlog:
                if frame.key is None or frame.key == request.reply:
                    self._newest = frame
                else:
                    others.append(frame)  # another streamed reply of this poll (ECO-WORTHY's A2 after A1)
            self._backlog.clear()
            self._backlog.extend(others)
            self._state = _State.DRAIN
            self._deadline = now
            return self._wait_action(actions)
        if request.follows:
            # A further reply of the request before: nothing is written, and what arrived since stays (with the
            # frames put aside for this request while the earlier one was waited for, first).
            self._backlog.extendleft(reversed(self._kept))
            self._kept.clear()
            self._await(request, now, _State.AWAIT)
            return None
        written = with_secret(request_frame(request, self.protocol.definition.framing, self.device_name), request, self)
        if isinstance(written, AuthenticationError):
            return self._give_up(written, drop_link=False)
        if written is None:  # built from the device name (D-powercore's unlock), which does not fit: no write
            if request.when == "connect":
                self._connection_writes.add(request.name)
            self._next_request()
            return None
        actions.append(_DISCARD)
        self._assembler.reset()
        self._backlog.clear()
        self._kept.clear()
        self._follow_keys = self._keys_of_followers()
        if written:  # an empty frame listens: the BMS sends on its own (Topband)
            wired = self._to_wire(self.protocol.wire(written))
            self.secret_screen.watch(request, written, wired)
            actions.append(Write(wired))
        if request.streaming:
            self._streaming_started = True
        if request.reply is None:
            if request.when == "connect":
                self._connection_writes.add(request.name)
            if self._command:
                self._index = len(self._requests)
                self._end_job()
                actions.append(ReplyReady(None))
                return actions
            self._next_request()
            return None
        self._await(request, now, _State.AWAIT)
        return None

    def _await(self, request: RequestSpec, now: float, state: _State) -> None:
        self._state = state
        self._deadline = now + (request.timeout or self.timing.request_timeout)
        self._rejected_before = self._assembler.stats.rejected

    def _match(self, request: RequestSpec) -> Frame | None:
        """The first backlog frame answering `request` (others are dropped)."""
        backlog = self._backlog
        reply = request.reply
        while backlog:
            frame = backlog.popleft()
            if reply is not None and frame.key is not None and frame.key != reply:
                if frame.key in self._follow_keys:
                    self._kept.append(frame)  # a reply a following `follows` request waits for: it came early
                    continue
                _LOGGER.debug("%s: ignoring reply %#04x while waiting for %s", self.battery_id, frame.key, request.name)
                continue
            if not frame.status_ok:
                raise _Failed(self._status_error(request))
            return frame
        return None

    def _condition_holds(self, request: RequestSpec) -> bool:
        """Whether the variable of `request.only_if`, decoded from this poll's replies so far, is in range."""
        condition = request.only_if
        if condition is None:
            return True
        value = self.protocol.variables_of(self._frames).get(condition.var[4:])
        if value is None:
            return False
        return (condition.min is None or value >= condition.min) and (condition.max is None or value <= condition.max)

    def _keys_of_followers(self) -> frozenset[int]:
        """The replies of the `follows` requests right after the current one (kept if they come early)."""
        keys: set[int] = set()
        for request in self._requests[self._index + 1 :]:
            if not request.follows:
                break
            if request.reply is not None:
                keys.add(request.reply)
        return frozenset(keys)

    def _got_reply(self, request: RequestSpec, frame: Frame, now: float, actions: list[Action]) -> list[Action] | None:
        if self._keys_from_requests and frame.key is None:
            frame = frame._replace(key=request.reply)
        if self._command:
            self._end_job()
            actions.append(ReplyReady(frame))
            return actions
        if request.when == "connect" and request.reply is not None:
            self._connection_frames[request.name] = frame
        self._frames.append(frame)
        protocol = self.protocol
        if protocol.frames_expected(request.reply, {}) == 1:
            self._next_request()
            return None
        self._expected = protocol.frames_expected(request.reply, protocol.variables_of(self._frames))
        self._collected = 0
        if self._expected is not None and self._expected <= 1:
            self._next_request()
            return None
        self._await(request, now, _State.COLLECT)
        return None

    def _finish(self, now: float, actions: list[Action]) -> list[Action]:
        frames = [frame for frame in self._frames if frame.raw]
        self._end_job()
        try:
            snapshot = self.protocol.decode(
                frames,
                battery_id=self.battery_id,
                timestamp=self._epoch + now,
                device=self._device,
                variant=self.protocol.variant_for_name(self.device_name),
            )
        except ProtocolError as exc:
            exc.battery_id = exc.battery_id or self.battery_id
            actions.append(GiveUp(exc, drop_link=False))
            return actions
        self._device = snapshot.device
        actions.append(SnapshotReady(snapshot, tuple(frames)))
        return actions

    def _give_up(self, error: DeviceError, *, drop_link: bool) -> list[Action]:
        self._end_job()
        return [GiveUp(error, drop_link)]

    def _wait_action(self, actions: list[Action]) -> list[Action]:
        deadline = self._deadline
        if self._poll_deadline is not None and self._poll_deadline < deadline:
            deadline = self._poll_deadline
        wait = self._wait
        if wait is None or wait.deadline != deadline:
            wait = self._wait = WaitUntil(deadline)
        actions.append(wait)
        return actions

    def _still_waiting(self) -> list[Action]:
        # Input that completes nothing leaves the deadline as it was.
        return self._wait_action([])

    def _silence_error(self, request: RequestSpec) -> DeviceError:
        stats = self._assembler.stats
        if stats.rejected > self._rejected_before:
            return FrameError(f"{request.name}: only corrupt replies ({stats.last_error})", battery_id=self.battery_id)
        timeout = request.timeout or self.timing.request_timeout
        return DeviceTimeout(f"{request.name}: no reply within {timeout:.1f} s", battery_id=self.battery_id)

    def _status_error(self, request: RequestSpec) -> DeviceError:
        return refusal_error(request, battery_id=self.battery_id)
