"""Building the fleet agent from the configuration file's ``outputs.fleet`` section."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from bmsgate.catalog import Kind, is_path
from bmsgate.errors import ConfigError
from bmsgate.fleet.agent.agent import AgentOptions, FleetAgent, InverterStatusProvider
from bmsgate.fleet.agent.identity import hardware_model
from bmsgate.fleet.agent.location import location_source
from bmsgate.fleet.agent.settings import BUFFER_FILE_NAME, UPDATES_DIR_NAME, FleetSettings
from bmsgate.fleet.agent.updates.engine import EngineSettings, UpdateEngine, start_committed_slot
from bmsgate.fleet.agent.updates.health import HealthSettings
from bmsgate.fleet.agent.updates.plan import RunningSite
from bmsgate.fleet.agent.updates.software import SoftwareLayout
from bmsgate.fleet.agent.updates.source import UpdateSource
from bmsgate.fleet.credentials import GatewayCredentials
from bmsgate.fleet.protocol import BatteryDescriptor
from bmsgate.mqtt.settings import BrokerSettings, TlsSettings
from bmsgate.packs.errors import PackError
from bmsgate.protocols import CompiledProtocol

if TYPE_CHECKING:
    from pathlib import Path

    from bmsgate.app.config import GatewayConfig
    from bmsgate.inverter.controller import StatusChannel
    from bmsgate.runtime.supervisor import Supervisor

__all__ = [
    "agent_from_settings",
    "broker_settings",
    "prepare_updates",
    "rediscover_hook",
    "running_site",
    "software_layout",
    "trusted_repository",
    "update_engine",
    "updates_directory",
]

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
    supervisor: Supervisor | None = None,
    inverter_bank: Iterable[str] = (),
    update_source: UpdateSource | None = None,
) -> FleetAgent:
    """The agent the ``outputs.fleet`` section describes (with the update engine, given the supervisor).

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
    engine = None
    if supervisor is not None and settings.updates.enabled:
        if update_source is None:
            update_source = trusted_repository(credentials, updates_directory(settings, config))
        engine = update_engine(
            settings,
            config,
            supervisor,
            gateway_id=credentials.gateway,
            inverter_bank=inverter_bank,
            source=update_source,
        )
    return FleetAgent(
        options,
        location=location_source(settings.location) if settings.location is not None else None,
        inverter_status=inverter_status,
        desired=engine,
        rediscover=rediscover_hook(outputs) if outputs is not None else None,
    )


def trusted_repository(credentials: GatewayCredentials, directory: Path) -> UpdateSource | None:
    """The gateway's TUF client for the fleet's repository, when its credentials name one (else None).

    Without it every desired state from the broker fails with reason ``signature``: nothing is applied
    that the fleet's signed metadata does not vouch for.

    Raises:
        ConfigError: the credentials name a repository but the ``packs`` extra (python-tuf) is missing, or
            the trusted root cannot be used.
    """
    if credentials.tuf_root is None or credentials.artifacts_url is None:
        return None
    try:
        from bmsgate.packs.trust import TrustedRepository  # noqa: PLC0415 - python-tuf is the [packs] extra
    except ImportError as exc:
        raise ConfigError(
            f"the credentials name a pack repository, but python-tuf is missing ({exc}); "
            "install bmsgate[packs] (or [fleet])",
            key_path="outputs.fleet.credentials",
        ) from None
    try:
        return TrustedRepository(
            directory / "tuf",
            directory / "downloads",
            credentials.artifacts_url,
            ca_pem=credentials.ca_pem,
            bootstrap_root=credentials.tuf_root.encode(),
        )
    except PackError as exc:
        raise ConfigError(f"the pack repository's trusted root: {exc}", key_path="outputs.fleet.credentials") from None


def updates_directory(settings: FleetSettings, config: GatewayConfig) -> Path:
    """Where the update journal and the pack slots live."""
    return settings.updates.directory or config.state_dir / UPDATES_DIR_NAME


def prepare_updates(config: GatewayConfig) -> None:
    """Before the gateway loads its definitions: start with the committed pack slot (see start_committed_slot)."""
    settings = config.outputs.fleet
    if settings is None or not settings.updates.enabled:
        return
    catalog = start_committed_slot(updates_directory(settings, config), software_layout(settings))
    _LOGGER.info("updates: pack layer %s", next((str(d) for layer, d in catalog.layers if layer == "pack"), "none"))


def software_layout(settings: FleetSettings) -> SoftwareLayout | None:
    """The A/B environments the gateway software is updated in (None: software updates are off)."""
    root = settings.updates.software_root
    return None if root is None else SoftwareLayout(root)


def running_site(config: GatewayConfig, inverter_bank: Iterable[str] = ()) -> RunningSite:
    """The names the configured gateway resolves through the catalog (what a pack can change)."""
    protocols = {
        battery.id: battery.protocol
        for battery in config.batteries
        if battery.protocol_file is None and battery.protocol is not None and not is_path(battery.protocol)
    }
    outputs: dict[str, tuple[Kind, str]] = {}
    modbus, can = config.outputs.modbus, config.outputs.can
    if modbus is not None and not is_path(str(modbus.register_map)):
        outputs["modbus"] = (Kind.REGISTER_MAP, str(modbus.register_map))
    if can is not None and not is_path(str(can.profile)):
        outputs["can"] = (Kind.CAN_PROFILE, str(can.profile))
    return RunningSite(protocols=protocols, outputs=outputs, inverter_bank=frozenset(inverter_bank))


def update_engine(
    settings: FleetSettings,
    config: GatewayConfig,
    supervisor: Supervisor,
    *,
    gateway_id: str,
    inverter_bank: Iterable[str] = (),
    source: UpdateSource | None = None,
    hardware: str | None = None,
) -> UpdateEngine:
    """The update engine for this gateway (the agent's desired-state handler)."""
    updates = settings.updates
    return UpdateEngine(
        EngineSettings(
            directory=updates_directory(settings, config),
            gateway_id=gateway_id,
            hardware=hardware or hardware_model(),
            precondition_timeout=updates.precondition_timeout,
            precondition_interval=updates.precondition_interval,
            health=HealthSettings(
                polls=updates.health_polls,
                failed_polls=updates.health_failed_polls,
                timeout=updates.health_timeout,
                min_duration=updates.health_min_duration,
            ),
            software=software_layout(settings),
            install_timeout=updates.install_timeout,
        ),
        supervisor,
        running_site(config, inverter_bank),
        source=source,
    )
