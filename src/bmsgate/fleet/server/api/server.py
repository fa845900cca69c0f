"""Serving the API on uvicorn (the only module importing uvicorn).

:class:`HttpServer` runs an ASGI application inside the caller's event loop (so it shares the store and the
live feed with ingest), answers on the port it was given or, with port 0, on one the system picks, and
stops cleanly (open websockets are closed, the application's shutdown runs). With a certificate and key it
serves HTTPS (the TUF repository's listener, :mod:`bmsgate.fleet.server.api.artifacts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import Any, Final

import uvicorn

from bmsgate.errors import BmsgateError

__all__ = ["HttpServer", "HttpServerError"]

_log = logging.getLogger(__name__)
_START_TIMEOUT_S: Final = 15.0


class HttpServerError(BmsgateError):
    """The HTTP server could not start (port in use, bad address) or stopped unexpectedly."""


class HttpServer:
    """One uvicorn server for one application."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        reuse_port: bool = False,
    ) -> None:
        tls: dict[str, Any] = {}
        if tls_cert_file is not None and tls_key_file is not None:
            tls = {"ssl_certfile": str(tls_cert_file), "ssl_keyfile": str(tls_key_file)}
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            log_level="warning",
            access_log=False,
            ws="websockets-sansio",
            ws_max_size=64 * 1024,
            timeout_graceful_shutdown=5,
            **tls,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self.host = host
        self.port = port
        self._scheme = "https" if tls else "http"
        self.reuse_port = reuse_port
        """Bind with ``SO_REUSEPORT`` (Linux): several processes serve one address, the kernel spreads the
        connections over them (cluster mode's ``--processes N``)."""

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` with a certificate) as bound."""
        return f"{self._scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; returns once requests are answered.

        Raises:
            HttpServerError: it did not come up.
        """
        # uvicorn would install its own signal handlers; the owner of the process decides about signals.
        shared = [self._shared_socket()] if self.reuse_port else None
        self._task = asyncio.create_task(self._server._serve(shared), name="bmsgate-http")
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        try:
            while not self._server.started and not self._task.done():
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.02)
        except BaseException:
            # The start was cancelled (a demo stopped while starting): the serving task would otherwise
            # keep its listening socket open with nobody left to close it.
            await self.stop()
            raise
        if not self._server.started:
            await self.stop()
            raise HttpServerError(f"HTTP server did not start on {self.host}:{self.port}")
        sockets = [sock for server in self._server.servers for sock in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        _log.info("HTTP server on %s", self.url)

    def _shared_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise HttpServerError(f"cannot bind {self.host}:{self.port} with SO_REUSEPORT: {exc}") from exc
        return sock

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._task is None:
            return
        # uvicorn returns without its shutdown (listening sockets left open) when asked to exit while still
        # starting, so a stop during the start first lets the start finish (bounded).
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while not self._server.started and not self._task.done():
            if asyncio.get_running_loop().time() > deadline:
                self._task.cancel()
                break
            await asyncio.sleep(0.01)
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await self._task
        self._task = None

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
