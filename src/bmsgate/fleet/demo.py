"""The fleet on its embedded default: a local fleet server and simulated sites spread over South Africa.

``bmsgate fleet demo --gateways N`` runs only this; ``bmsgate demo`` (the README's main command) runs it beside
the gateway demo and connects that gateway to it as one more site. Every simulated site is a real gateway
(supervisor, simulated packs spoken to through their protocol, inverter controller) with the real fleet
agent, enrolled like a user would enrol one: its own credentials, TLS to the server's own Mosquitto, its own
ACL. One pack drifts a cell and one develops a fault, so the dashboard has something to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from bmsgate.app.ports import tcp_port_free
from bmsgate.fleet.agent.simulated import SimulatedSite, demo_sites, run_sites
from bmsgate.fleet.credentials import GatewayCredentials, write_credentials
from bmsgate.fleet.server.broker import apply_device_changes
from bmsgate.fleet.server.devices import enroll_gateway
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings, RunningServer
from bmsgate.mqtt.broker import free_port

__all__ = ["FleetDemo", "FleetDemoOptions"]

_LOGGER = logging.getLogger(__name__)
_PREFERRED_HTTP: Final = 8080
_PREFERRED_GATEWAY_PORT: Final = 8883
_IN_SIMULATED_SITE: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar("in_simulated_site", default=False)


class _QuietSimulatedSites(logging.Filter):
    """Keeps the simulated sites' routine log lines out of the user's terminal.

    Connects and bank states come dozens a second at start; the sites' warnings and errors still show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not _IN_SIMULATED_SITE.get()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FleetDemoOptions:
    """What the fleet demo starts."""

    gateways: int = 30
    """Simulated sites besides any real gateway connected to the demo."""
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    """None: 8080, or a free port if that is taken."""
    data_dir: Path | None = None
    """None: a temporary directory removed at the end (a fresh fleet each run)."""
    interval: float = 10.0
    """Telemetry interval of the simulated sites (s)."""
    time_scale: float = 30.0
    """How much faster than real time the simulated packs charge and discharge."""


class FleetDemo:
    """``async with FleetDemo(options) as demo: await demo.run_sites()``."""

    def __init__(self, options: FleetDemoOptions | None = None) -> None:
        self.options = options or FleetDemoOptions()
        self._stack = contextlib.AsyncExitStack()
        self._running: RunningServer | None = None
        self._gateway_port = 0
        self.sites: list[SimulatedSite] = demo_sites(self.options.gateways, prefix="za")

    @property
    def running(self) -> RunningServer:
        """The started server."""
        if self._running is None:
            raise RuntimeError("the fleet demo is not started")
        return self._running

    @property
    def url(self) -> str:
        """The dashboard's address."""
        return self.running.url

    @property
    def admin_token(self) -> str | None:
        """The admin token of this demo's fresh data directory."""
        return self.running.admin_token

    async def __aenter__(self) -> Self:
        options = self.options
        data_dir = options.data_dir
        if data_dir is None:
            # A stop in the middle of the start may still be writing certificates while this is removed.
            scratch = tempfile.TemporaryDirectory(prefix="bmsgate-fleet-demo-", ignore_cleanup_errors=True)
            data_dir = Path(self._stack.enter_context(scratch))
        http_port = options.http_port
        if http_port is None:
            http_port = _PREFERRED_HTTP if tcp_port_free(options.http_host, _PREFERRED_HTTP) else 0
        self._gateway_port = (
            _PREFERRED_GATEWAY_PORT if tcp_port_free("127.0.0.1", _PREFERRED_GATEWAY_PORT) else free_port()
        )
        settings = FleetServerSettings(
            data_dir=data_dir,
            http_host=options.http_host,
            http_port=http_port,
            gateway_host="127.0.0.1",
            gateway_port=self._gateway_port,
            cert_port=None,
            public_host="localhost",
        )
        try:
            self._running = await self._stack.enter_async_context(FleetServer(settings))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def enroll(self, gateway_id: str) -> GatewayCredentials:
        """Enrol one gateway with this demo's server (call :meth:`apply` after a batch of enrolments)."""
        return enroll_gateway(self.running.data, gateway_id, broker_url=f"mqtts://localhost:{self._gateway_port}")

    def enroll_to_file(self, gateway_id: str) -> Path:
        """Enrol one gateway and write its credentials file into the data directory; returns the path."""
        path = self.running.data.root / "gateways" / f"{gateway_id}.json"
        write_credentials(self.enroll(gateway_id), path)
        return path

    async def apply(self) -> None:
        """Make the broker accept the gateways enrolled so far."""
        await apply_device_changes(self.running.data)

    async def run_sites(self) -> None:
        """Enrol and run every simulated site until cancelled (or until the server fails)."""
        credentials = {site.gateway_id: self.enroll(site.gateway_id) for site in self.sites}
        await self.apply()
        state_dir = self.running.data.root / "sites"
        quiet = contextvars.copy_context()
        quiet.run(_IN_SIMULATED_SITE.set, True)
        log_filter = _QuietSimulatedSites()
        handlers = logging.getLogger().handlers
        for handler in handlers:
            handler.addFilter(log_filter)
        sites = asyncio.create_task(
            run_sites(
                self.sites,
                lambda site: credentials[site.gateway_id],
                state_dir,
                interval=self.options.interval,
                time_scale=self.options.time_scale,
            ),
            name="fleet-demo-sites",
            context=quiet,
        )
        failure = self.running.failure
        waiters: set[asyncio.Future[Any]] = {sites, failure}
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if failure in done:
                raise failure.result()
            sites.result()
        finally:
            sites.cancel()
            await asyncio.gather(sites, return_exceptions=True)
            for handler in handlers:
                handler.removeFilter(log_filter)

    def banner(self) -> str:
        """What the user needs: where the dashboard is and the token to sign in with."""
        token = self.admin_token or "(already shown at the first start of this data directory)"
        return f"fleet dashboard: {self.url}/  admin token: {token}  ({len(self.sites)} simulated sites)"
