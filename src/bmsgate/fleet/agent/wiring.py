"""Building the fleet agent from the configuration file's ``outputs.fleet`` section."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from bmsgate.fleet.agent.agent import AgentOptions, FleetAgent, InverterStatusProvider
from bmsgate.fleet.agent.location import location_source
from bmsgate.fleet.agent.settings import BUFFER_FILE_NAME, FleetSettings
from bmsgate.fleet.credentials import GatewayCredentials
from bmsgate.fleet.protocol import BatteryDescriptor
from bmsgate.mqtt.settings import BrokerSettings, TlsSettings
from bmsgate.protocols import CompiledProtocol

if TYPE_CHECKING:
    from bmsgate.app.config import GatewayConfig
    from bmsgate.inverter.controller import StatusChannel

__all__ = ["agent_from_settings", "broker_settings", "rediscover_hook"]

_LOGGER = logging.getLogger(__name__)


def broker_settings(
    credentials: GatewayCredentials, *, url: str | None = None, keepalive: int = 60, reconnect_max: float = 60.0
) -> BrokerSettings:
    """How to reach the fleet broker as this gateway (its own user, the fleet's CA)."""
    tls = None
    if credentials.uses_tls:
        tls = TlsSettings(ca_pem=credentials.ca_pem, cert_pem=credentials.cert_pem, key_pem=credentials.key_pem)
    return BrokerSettings.model_validate(
        {
            "url": url or credentials.broker_url,
            "username": credentials.username,
            "password": credentials.password,
            "client_id": credentials.gateway,
            "keepalive": keepalive,
            "tls": tls,
            "reconnect_initial": min(1.0, reconnect_max),
            "reconnect_max": reconnect_max,
        }
    )


def rediscover_hook(outputs: Callable[[], Iterable[object]]) -> Callable[[], Sequence[str]]:
    """A ``rediscover_outputs`` hook over the gateway's outputs: each with ``request_rediscovery()`` is asked."""

    def rediscover() -> list[str]:
        asked = []
        for output in outputs():
            request = getattr(output, "request_rediscovery", None)
            if callable(request):
                request()
                asked.append(str(getattr(output, "name", type(output).__name__)))
        return asked

    return rediscover


def agent_from_settings(
    settings: FleetSettings,
    config: GatewayConfig,
    protocols: Mapping[str, CompiledProtocol],
    *,
    status_channel: StatusChannel | None = None,
    outputs: Callable[[], Iterable[object]] | None = None,
) -> FleetAgent:
    """The agent the ``outputs.fleet`` section describes.

    Raises:
        ConfigError: the credentials file is unreadable or invalid.
    """
    credentials = settings.load_credentials()
    inverter_status: InverterStatusProvider | None = None
    if status_channel is not None:
        channel = status_channel

        def inverter_status() -> Mapping[str, object] | None:
            status = channel.latest
            return status.to_dict() if status.sequence else None

    batteries = tuple(
        BatteryDescriptor(
            id=battery.id,
            name=battery.display_name[:128],
            protocol=protocols[battery.id].name if battery.id in protocols else None,
        )
        for battery in config.batteries
    )
    options = AgentOptions(
        gateway_id=credentials.gateway,
        broker=broker_settings(
            credentials, url=settings.broker, keepalive=settings.keepalive, reconnect_max=settings.reconnect_max
        ),
        buffer_path=settings.buffer.path or config.state_dir / BUFFER_FILE_NAME,
        buffer_max_bytes=settings.buffer.max_bytes,
        backfill_rate=settings.buffer.backfill_rate,
        interval=settings.interval,
        state_interval=settings.state_interval,
        name=settings.name or config.name,
        site=settings.site,
        tags=settings.tags,
        batteries=batteries,
    )
    return FleetAgent(
        options,
        location=location_source(settings.location) if settings.location is not None else None,
        inverter_status=inverter_status,
        rediscover=rediscover_hook(outputs) if outputs is not None else None,
    )
