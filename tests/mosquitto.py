"""A real Mosquitto for the tests: a generated configuration on a free port, restartable on the same port.

Shared by the Home Assistant, fleet agent and fleet server tests; each adds its own configuration lines
(`extra`: anonymous access, password file and ACL, TLS listeners, queue limits).
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from pathlib import Path

from bmsgate.mqtt.broker import find_mosquitto, free_port

MOSQUITTO = find_mosquitto()
START_TIMEOUT = 10.0


class Mosquitto:
    """One mosquitto process with a generated config; restartable on the same port."""

    def __init__(
        self,
        directory: Path,
        *,
        extra: str = "",
        port: int | None = None,
        listener: str = "",
        persistence: bool = False,
    ) -> None:
        assert MOSQUITTO is not None
        self.binary = MOSQUITTO
        self.directory = directory
        self.port = port or free_port()
        self.config = directory / f"mosquitto-{self.port}.conf"
        listener_line = listener or f"listener {self.port} 127.0.0.1"
        stored = f"persistence true\npersistence_location {directory}/\n" if persistence else "persistence false\n"
        self.config.write_text(
            # `user`: mosquitto started as root would otherwise drop to "mosquitto" and lose access
            # to the certificates and password file under the (private) pytest tmp_path.
            f"{listener_line}\nuser {getpass.getuser()}\n{stored}log_dest stderr\nlog_type error\n{extra}",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.directory / f"mosquitto-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen([str(self.binary), "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto not listening: {self.log()}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.directory / f"mosquitto-{self.port}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""
