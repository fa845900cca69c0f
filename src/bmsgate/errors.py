"""Every exception bmsgate raises on purpose.

```
BmsgateError
├── ConfigError            fatal at start-up; CLI exits non-zero with the key path and reason
├── DefinitionError        a protocol definition, register map, inverter profile or DBC file is invalid
├── CaptureError           a capture file (btsnoop/pcap/pcapng/replay) is malformed; names the offset
├── DeviceError            about one battery; carries battery_id
│   ├── TransportError     I/O failure, retryable
│   │   ├── ConnectError   could not (re)connect, or the link dropped
│   │   └── DeviceTimeout  no (complete) reply in time; also a builtin TimeoutError
│   ├── AuthenticationError  wrong PIN/password; not retried until the config changes
│   └── ProtocolError      the BMS answered, but not sensibly
│       ├── FrameError     bad marker, length or checksum
│       ├── DecodeError    a valid frame with impossible content
│       └── CommandRefused the BMS rejected or did not confirm a write
└── SinkError              about one output; retryable per sink
```

Programmer errors stay builtin (`ValueError`, `TypeError`). Only the supervisor catches broadly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = [
    "AuthenticationError",
    "BmsgateError",
    "CaptureError",
    "CommandRefused",
    "ConfigError",
    "ConfigProblem",
    "ConnectError",
    "DecodeError",
    "DefinitionError",
    "DeviceError",
    "DeviceTimeout",
    "FrameError",
    "ProtocolError",
    "SinkError",
    "TransportError",
]


class BmsgateError(Exception):
    """Root of every error bmsgate raises deliberately."""


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration: where (file, key path) and why."""

    reason: str
    key_path: str = ""
    source: str = ""

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.key_path) if part)
        return f"{where}: {self.reason}" if where else self.reason


class ConfigError(BmsgateError):
    """The configuration is invalid; `key_path` says where (e.g. ``batteries[0].transport.address``).

    One error may carry several problems (`problems`, each with its own file and key path) so that a
    user fixes a file in one go; `key_path`, `source` and `reason` are those of the first. The message
    has one line per problem.
    """

    def __init__(
        self,
        message: str = "",
        *,
        key_path: str = "",
        source: str = "",
        problems: Sequence[ConfigProblem] = (),
    ) -> None:
        if not problems:
            problems = (ConfigProblem(message, key_path=key_path, source=source),)
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        first = self.problems[0]
        self.key_path = first.key_path
        self.source = first.source
        self.reason = first.reason
        super().__init__("\n".join(map(str, self.problems)))

    def with_source(self, source: str) -> ConfigError:
        """The same problems, with `source` filled in where a problem names no file."""
        return ConfigError(
            problems=[
                problem if problem.source else dataclasses.replace(problem, source=source) for problem in self.problems
            ]
        )


class DefinitionError(BmsgateError):
    """A data file that drives bmsgate (protocol definition, register map, profile) is invalid.

    The message names the file, the field (as a dotted path) and the reason.
    """

    def __init__(self, reason: str, *, source: str = "<definition>", field: str = "") -> None:
        self.source = source
        self.field = field
        self.reason = reason
        location = f"{source}: {field}" if field else source
        super().__init__(f"{location}: {reason}")


class CaptureError(BmsgateError):
    """A capture file cannot be read; `offset` is the byte position where reading failed."""

    def __init__(self, reason: str, *, source: str = "<capture>", offset: int | None = None) -> None:
        self.source = source
        self.offset = offset
        self.reason = reason
        where = f"{source} at byte offset {offset}" if offset is not None else source
        super().__init__(f"{where}: {reason}")


class DeviceError(BmsgateError):
    """Something went wrong talking to one battery."""

    def __init__(self, message: str, *, battery_id: str | None = None) -> None:
        self.battery_id = battery_id
        super().__init__(f"{battery_id}: {message}" if battery_id else message)


class TransportError(DeviceError):
    """The bytes could not be moved (radio, serial port, socket); usually worth retrying."""


class ConnectError(TransportError):
    """Connecting failed or an open link dropped."""


class DeviceTimeout(TransportError, TimeoutError):
    """The device did not answer (completely) within the deadline."""


class AuthenticationError(DeviceError):
    """The device rejected our PIN, passkey or password; retrying will not help."""


class ProtocolError(DeviceError):
    """The device answered with something the protocol does not allow."""


class FrameError(ProtocolError):
    """A frame has a bad start/end marker, length or checksum."""


class DecodeError(ProtocolError):
    """A frame is well formed but its content is impossible (e.g. too short for its fields)."""


class CommandRefused(ProtocolError):
    """A write/control command was rejected by the BMS or its effect could not be confirmed."""


class SinkError(BmsgateError):
    """An output (MQTT, Modbus, CAN, console) failed; the supervisor retries that output alone."""

    def __init__(self, message: str, *, sink: str | None = None) -> None:
        self.sink = sink
        super().__init__(f"{sink}: {message}" if sink else message)
