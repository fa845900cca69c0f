"""Start-up checks for the TCP ports bmsgate's servers listen on (demo broker, Modbus TCP)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import Final

from bmsgate.errors import ConfigError

__all__ = ["check_tcp_port_free", "free_tcp_port", "port_holder", "tcp_port_free"]


def check_tcp_port_free(host: str, port: int, *, key_path: str) -> None:
    """Fail early when a server could not listen on `host`:`port` (e.g. it is in use).

    Binds (and closes at once) a socket on every address `host` resolves to, with the same
    ``SO_REUSEADDR`` the server uses, so a port in TIME_WAIT counts as free. Synchronous; meant for
    start-up checks (servers themselves keep retrying a busy port instead).

    Raises:
        ConfigError: at `key_path`; the message names the address and the OS reason.
    """
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _name, sockaddr in infos:
            with socket.socket(family, kind, proto) as sock:
                if os.name == "posix":  # as asyncio servers do with reuse_address=True
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        holder = port_holder(port) if exc.errno == errno.EADDRINUSE else None
        if holder:
            reason += f" (by {holder})"
        raise ConfigError(f"cannot listen on {address}: {reason}", key_path=key_path) from exc


def tcp_port_free(host: str, port: int) -> bool:
    """Whether a server could listen on `host`:`port` right now."""
    try:
        check_tcp_port_free(host, port, key_path="")
    except ConfigError:
        return False
    return True


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


_LISTEN: Final = "0A"
_PROC: Final = Path("/proc")


def port_holder(port: int, *, proc: Path = _PROC) -> str | None:
    """``pid 1234 (mosquitto)`` for the process listening on TCP `port`, when Linux's /proc tells.

    Best effort and cheap: the socket's inode from ``/proc/net/tcp{,6}``, then the process holding it.
    Processes of other users are not visible without root; then only ``another process`` is known.
    """
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for process in proc.iterdir():
        if not process.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (process / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    command = (process / "comm").read_text().strip()
                    return f"pid {process.name} ({command})"
    return "another process"
