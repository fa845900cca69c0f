"""Start-up checks for the TCP ports bmsgate's servers listen on (demo broker, Modbus TCP)."""

from __future__ import annotations

import contextlib
import os
import socket

from bmsgate.errors import ConfigError

__all__ = ["check_tcp_port_free", "tcp_port_free"]


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
        raise ConfigError(f"cannot listen on {address}: {reason}", key_path=key_path) from exc


def tcp_port_free(host: str, port: int) -> bool:
    """Whether a server could listen on `host`:`port` right now."""
    try:
        check_tcp_port_free(host, port, key_path="")
    except ConfigError:
        return False
    return True
