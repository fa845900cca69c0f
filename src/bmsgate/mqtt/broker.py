"""An embedded MQTT broker for ``bmsgate demo`` (and quick trials) when no broker is configured.

Preference order: Debian's/Homebrew's ``mosquitto`` binary (spawned with a generated minimal config,
no persistence, anonymous access on the given interface), else amqtt in-process (``[mqtt]`` extra).
The broker lives exactly as long as the ``async with`` block.

Example::

    async with EmbeddedBroker() as broker:
        settings = MqttSettings(url=broker.url)
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

from bmsgate.errors import SinkError

__all__ = ["EmbeddedBroker", "find_mosquitto", "free_port"]

_LOGGER = logging.getLogger(__name__)
# amqtt drives its broker with the `transitions` state machine, which logs every callback it runs at
# INFO/DEBUG ("Finished processing state started enter callbacks."): noise in the demo's log.
logging.getLogger("transitions").setLevel(logging.WARNING)

_SINK: Final = "broker"
_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 5.0
_MOSQUITTO_PATHS: Final = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")

BrokerKind = Literal["auto", "mosquitto", "amqtt"]


def find_mosquitto() -> Path | None:
    """The mosquitto binary on PATH or in the usual sbin directories, if installed."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in _MOSQUITTO_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_listening(host: str, port: int, deadline: float, alive: Any) -> None:
    """Poll until the broker accepts TCP connections (or `alive()` says it died)."""
    loop = asyncio.get_running_loop()
    while True:
        if not alive():
            raise SinkError("broker exited during start-up", sink=_SINK)
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise SinkError(f"broker did not listen on {host}:{port} in time", sink=_SINK) from None
            await asyncio.sleep(0.02)
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


async def terminate_process(process: asyncio.subprocess.Process) -> None:
    """Terminate `process` and wait for it (killing it after a timeout or when cancelled)."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        async with asyncio.timeout(_STOP_TIMEOUT):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    except asyncio.CancelledError:
        # No time left to wait: make sure it does not outlive us (the child watcher reaps it).
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise


class EmbeddedBroker:
    """A local MQTT broker for the demo.

    Args:
        host: interface to listen on; ``127.0.0.1`` keeps it private, ``0.0.0.0`` lets Home Assistant
            on another machine connect (anonymous access: trusted networks only).
        port: TCP port; 0 picks a free one (1883 is the MQTT default).
        prefer: ``auto`` (mosquitto if installed, else amqtt), ``mosquitto`` or ``amqtt``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, prefer: BrokerKind = "auto") -> None:
        self.host = host
        self.port = port
        self.prefer = prefer
        self.kind: Literal["mosquitto", "amqtt"] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._amqtt: Any = None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the running broker (``127.0.0.1`` when listening on all interfaces)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"mqtt://{host}:{self.port}"

    async def start(self) -> None:
        """Start the broker and wait until it accepts connections.

        Whatever interrupts the start (an error or a cancellation such as SIGTERM) stops what was
        started already: ``__aexit__`` does not run when ``__aenter__`` did not finish.

        Raises:
            SinkError: no broker implementation is available or it failed to start.
        """
        if self.port == 0:
            self.port = free_port(self.host or "127.0.0.1")
        mosquitto = find_mosquitto() if self.prefer in ("auto", "mosquitto") else None
        if mosquitto is None and self.prefer == "mosquitto":
            raise SinkError("mosquitto is not installed (apt install mosquitto)", sink=_SINK)
        try:
            if mosquitto is not None:
                await self._start_mosquitto(mosquitto)
            else:
                await self._start_amqtt()
        except BaseException:
            await self.stop()
            raise
        _LOGGER.info("embedded MQTT broker (%s) listening on %s:%d", self.kind, self.host, self.port)

    async def _start_mosquitto(self, binary: Path) -> None:
        self._tmpdir = tempfile.TemporaryDirectory(prefix="bmsgate-broker-")
        directory = Path(self._tmpdir.name)
        config = directory / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} {self.host}\n"
            # Started as root, mosquitto would switch to the "mosquitto" user; stay who we are.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n",
            encoding="utf-8",
        )
        log = (directory / "mosquitto.log").open("wb")
        try:
            self._process = await asyncio.create_subprocess_exec(
                str(binary), "-c", str(config), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        except OSError as exc:
            raise SinkError(f"cannot run {binary}: {exc}", sink=_SINK) from exc
        finally:
            log.close()
        self.kind = "mosquitto"
        process = self._process
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT
        try:
            await _wait_listening(self.host or "127.0.0.1", self.port, deadline, lambda: process.returncode is None)
        except SinkError as exc:
            detail = (directory / "mosquitto.log").read_text(errors="replace").strip()
            raise SinkError(f"{exc}: {detail}", sink=_SINK) from exc

    async def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker  # noqa: PLC0415 - optional, only when mosquitto is missing
        except ImportError as exc:
            raise SinkError("no MQTT broker available: install mosquitto or bmsgate[mqtt]", sink=_SINK) from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as exc:  # amqtt raises its own and builtin errors alike
            raise SinkError(f"amqtt failed to start: {exc}", sink=_SINK) from exc
        except BaseException:
            # Cancelled half-way: close what is open already (best effort, the start did not finish).
            with contextlib.suppress(Exception):
                await broker.shutdown()
            raise
        self._amqtt = broker
        self.kind = "amqtt"

    async def stop(self) -> None:
        """Stop the broker (idempotent); cancelled while waiting for it, it kills the process instead."""
        process, self._process = self._process, None
        broker, self._amqtt = self._amqtt, None
        try:
            if process is not None:
                await terminate_process(process)
            if broker is not None:
                await broker.shutdown()
        finally:
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
                self._tmpdir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
