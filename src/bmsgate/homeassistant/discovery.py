"""Pure builders of Home Assistant MQTT discovery payloads, topics and the announcement registry.

Nothing here does I/O: every function maps settings, battery metadata and entity rows to topics and
JSON-ready dicts, which is what the snapshot tests compare against.

Topic layout (``<base>`` = ``base_topic``, ``<prefix>`` = ``discovery_prefix``)::

    <base>/status                         gateway availability (last will "offline"), retained
    <base>/<battery>/availability         battery availability (stale → "offline"), retained
    <base>/<battery>/state                JSON state of one battery (one message per poll)
    <base>/<battery>/<key>/set            switch commands (only with allow_control)
    <base>/inverter/state                 inverter/bank status (when a provider is given)
    <base>/registry                       what this gateway announced (retained; used for clean-up)
    <prefix>/<component>/<gateway>/<battery>_<key>/config   discovery configs, retained
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from bmsgate.homeassistant.entities import INVERTER_ENTITIES, EntityDescription
from bmsgate.homeassistant.settings import BatteryInfo, MqttSettings
from bmsgate.model import DeviceInfo

__all__ = [
    "ONLINE",
    "OFFLINE",
    "DiscoveryContext",
    "Registry",
    "Topics",
    "battery_configs",
    "battery_device",
    "device_identity",
    "encode_payload",
    "gateway_configs",
    "mac_address",
    "slug",
]

ONLINE: Final = "online"
OFFLINE: Final = "offline"
SUPPORT_URL: Final = "https://github.com/bmsgate/bmsgate"

_SLUG_INVALID = re.compile(r"[^a-z0-9]+")
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_REGISTRY_VERSION: Final = 1


def slug(text: str) -> str:
    """Lower-case ``[a-z0-9_]`` form usable in topics, unique ids and entity ids."""
    return _SLUG_INVALID.sub("_", text.lower()).strip("_") or "x"


def mac_address(address: str | None) -> str | None:
    """The address as ``aa:bb:cc:dd:ee:ff`` when it is a MAC address, else None."""
    if address is None:
        return None
    text = address.strip().lower()
    if not _MAC.match(text):
        return None
    digits = re.sub("[^0-9a-f]", "", text)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def device_identity(info: BatteryInfo, device: DeviceInfo) -> str:
    """A stable identity for a battery: its serial number, else its MAC/address, else its configured id."""
    if device.serial_number and device.serial_number.strip():
        return f"sn_{slug(device.serial_number)}"
    mac = mac_address(info.address)
    if mac is not None:
        return f"mac_{mac.replace(':', '')}"
    if info.address:
        return f"addr_{slug(info.address)}"
    return f"id_{slug(info.battery_id)}"


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)
"""One encoder for every message: ``json.dumps`` with these options would build a new one per call."""


def encode_payload(payload: Mapping[str, Any]) -> str:
    """The compact, key-sorted JSON used for every message (stable for comparisons)."""
    return _ENCODER.encode(payload)


@dataclasses.dataclass(frozen=True, slots=True)
class Topics:
    """Every topic this gateway publishes or subscribes to."""

    base: str
    prefix: str
    node_id: str
    ha_status: str

    @property
    def gateway_availability(self) -> str:
        """Gateway availability, carries the last will."""
        return f"{self.base}/status"

    @property
    def registry(self) -> str:
        """Retained list of every config topic we announced."""
        return f"{self.base}/registry"

    @property
    def inverter_state(self) -> str:
        """Inverter/bank status JSON."""
        return f"{self.base}/inverter/state"

    @property
    def command_filter(self) -> str:
        """Subscription filter matching every switch command topic."""
        return f"{self.base}/+/+/set"

    def sync(self, client_id: str) -> str:
        """A private topic used as a barrier after subscribing (see the sink)."""
        return f"{self.base}/_sync/{slug(client_id)}"

    def battery_state(self, battery_id: str) -> str:
        """JSON state of one battery."""
        return f"{self.base}/{slug(battery_id)}/state"

    def battery_availability(self, battery_id: str) -> str:
        """Availability of one battery."""
        return f"{self.base}/{slug(battery_id)}/availability"

    def command(self, battery_id: str, key: str) -> str:
        """Command topic of one switch."""
        return f"{self.base}/{slug(battery_id)}/{key}/set"

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        """``(battery slug, key)`` of a command topic, else None."""
        parts = topic.split("/")
        base_parts = self.base.split("/")
        if len(parts) != len(base_parts) + 3 or parts[: len(base_parts)] != base_parts or parts[-1] != "set":
            return None
        return parts[-3], parts[-2]

    def config(self, component: str, object_id: str) -> str:
        """Discovery config topic."""
        return f"{self.prefix}/{component}/{self.node_id}/{object_id}/config"


@dataclasses.dataclass(frozen=True, slots=True)
class DiscoveryContext:
    """Settings the builders need, detached from pydantic (and the software version, for `origin`)."""

    topics: Topics
    gateway_id: str
    gateway_name: str
    entity_id_style: str = "default_entity_id"
    entity_id_prefix: str = "bms"
    sw_version: str = "0"

    @classmethod
    def from_settings(cls, settings: MqttSettings, *, sw_version: str) -> DiscoveryContext:
        """Build the context from the sink settings."""
        return cls(
            topics=Topics(
                base=settings.base_topic,
                prefix=settings.discovery_prefix,
                node_id=slug(settings.gateway_id),
                ha_status=settings.effective_ha_status_topic,
            ),
            gateway_id=settings.gateway_id,
            gateway_name=settings.gateway_name,
            entity_id_style=settings.entity_id_style,
            entity_id_prefix=settings.entity_id_prefix,
            sw_version=sw_version,
        )

    @property
    def origin(self) -> dict[str, str]:
        """The ``origin`` block of every payload."""
        return {"name": "bmsgate", "sw_version": self.sw_version, "support_url": SUPPORT_URL}

    @property
    def gateway_identifier(self) -> str:
        """Device identifier of the gateway (the batteries' ``via_device``)."""
        return f"bmsgate_gateway_{slug(self.gateway_id)}"

    def suggest_entity_id(self, payload: dict[str, Any], component: str, object_id: str) -> None:
        """Add the suggested entity id in the configured style."""
        if self.entity_id_style == "object_id":
            payload["object_id"] = object_id
        else:
            payload["default_entity_id"] = f"{component}.{object_id}"


def _availability(ctx: DiscoveryContext, battery_id: str | None) -> list[dict[str, str]]:
    topics = [ctx.topics.gateway_availability]
    if battery_id is not None:
        topics.append(ctx.topics.battery_availability(battery_id))
    return [{"topic": topic, "payload_available": ONLINE, "payload_not_available": OFFLINE} for topic in topics]


def gateway_device(ctx: DiscoveryContext) -> dict[str, Any]:
    """Device block of the gateway itself."""
    return {
        "identifiers": [ctx.gateway_identifier],
        "name": ctx.gateway_name,
        "manufacturer": "bmsgate",
        "model": "bmsgate gateway",
        "sw_version": ctx.sw_version,
    }


def battery_device(ctx: DiscoveryContext, info: BatteryInfo, identity: str, device: DeviceInfo) -> dict[str, Any]:
    """Device block shared by every entity of one battery (so HA groups them into one device)."""
    block: dict[str, Any] = {
        "identifiers": [f"bmsgate_{identity}"],
        "name": info.name or info.battery_id,
        "manufacturer": device.manufacturer,
        "model": device.model or (f"{info.protocol} BMS" if info.protocol else None),
        "sw_version": device.software_version,
        "hw_version": device.hardware_version,
        "serial_number": device.serial_number,
        "via_device": ctx.gateway_identifier,
    }
    mac = mac_address(info.address)
    if mac is not None:
        block["connections"] = [["bluetooth", mac]]
    return {key: value for key, value in block.items() if value is not None}


def _entity_payload(
    ctx: DiscoveryContext,
    row: EntityDescription,
    *,
    unique_id: str,
    object_id: str,
    device: dict[str, Any],
    state_topic: str,
    availability: list[dict[str, str]],
    expire_after: int | None,
    command_topic: str | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": row.name,
        "unique_id": unique_id,
        "device": device,
        "origin": ctx.origin,
        "state_topic": state_topic,
        "value_template": row.template or f"{{{{ value_json.{row.key} }}}}",
        "availability": availability,
        "availability_mode": "all",
    }
    ctx.suggest_entity_id(payload, row.component, object_id)
    optional = {
        "device_class": row.device_class,
        "state_class": row.state_class,
        "unit_of_measurement": row.unit,
        "suggested_display_precision": row.precision,
        "entity_category": row.category,
        "icon": row.icon,
    }
    payload.update({key: value for key, value in optional.items() if value is not None})
    if not row.enabled_by_default:
        payload["enabled_by_default"] = False
    if row.component in ("binary_sensor", "switch"):
        payload["payload_on"] = "ON"
        payload["payload_off"] = "OFF"
    if row.component == "switch":
        payload["state_on"] = "ON"
        payload["state_off"] = "OFF"
        payload["optimistic"] = False
        if command_topic is not None:
            payload["command_topic"] = command_topic
    elif expire_after:
        # Switches have no expire_after in HA; sensors and binary sensors do.
        payload["expire_after"] = expire_after
    if row.attributes is not None:
        payload["json_attributes_topic"] = state_topic
        payload["json_attributes_template"] = f"{{{{ value_json.attrs.{row.key} | tojson }}}}"
    return payload


def battery_configs(
    ctx: DiscoveryContext,
    info: BatteryInfo,
    *,
    identity: str,
    device: DeviceInfo,
    rows: Sequence[EntityDescription],
    expire_after: int | None,
) -> dict[str, dict[str, Any]]:
    """Discovery config payload per config topic for every row of one battery."""
    block = battery_device(ctx, info, identity, device)
    availability = _availability(ctx, info.battery_id)
    state_topic = ctx.topics.battery_state(info.battery_id)
    battery_slug = slug(info.battery_id)
    configs: dict[str, dict[str, Any]] = {}
    for row in rows:
        topic = ctx.topics.config(row.component, f"{battery_slug}_{row.key}")
        configs[topic] = _entity_payload(
            ctx,
            row,
            unique_id=f"bmsgate_{identity}_{row.key}",
            object_id=f"{slug(ctx.entity_id_prefix)}_{battery_slug}_{row.key}",
            device=block,
            state_topic=state_topic,
            availability=availability,
            expire_after=expire_after,
            command_topic=ctx.topics.command(info.battery_id, row.key) if row.component == "switch" else None,
        )
    return configs


def gateway_configs(ctx: DiscoveryContext, *, inverter: bool) -> dict[str, dict[str, Any]]:
    """Discovery configs of the gateway device: its connectivity, plus inverter/bank sensors if any."""
    device = gateway_device(ctx)
    node = slug(ctx.gateway_id)
    status_object_id = f"{node}_gateway_status"
    status: dict[str, Any] = {
        "name": "Status",
        "unique_id": f"{ctx.gateway_identifier}_status",
        "device": device,
        "origin": ctx.origin,
        "state_topic": ctx.topics.gateway_availability,
        "payload_on": ONLINE,
        "payload_off": OFFLINE,
        "device_class": "connectivity",
        "entity_category": "diagnostic",
    }
    ctx.suggest_entity_id(status, "binary_sensor", status_object_id)
    configs = {ctx.topics.config("binary_sensor", "gateway_status"): status}
    if inverter:
        availability = _availability(ctx, None)
        for row in INVERTER_ENTITIES:
            payload = _entity_payload(
                ctx,
                row,
                unique_id=f"{ctx.gateway_identifier}_{row.key}",
                object_id=f"{node}_{row.key}",
                device=device,
                state_topic=ctx.topics.inverter_state,
                availability=availability,
                expire_after=None,
            )
            if row.key == "limitation_reason":
                payload["json_attributes_topic"] = ctx.topics.inverter_state
                payload["json_attributes_template"] = "{{ value_json | tojson }}"
            configs[ctx.topics.config(row.component, f"inverter_{row.key}")] = payload
    return configs


@dataclasses.dataclass(frozen=True, slots=True)
class Registry:
    """What a gateway announced: config topics per battery id, and its own (gateway) config topics."""

    batteries: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    gateway: frozenset[str] = frozenset()

    def all_topics(self) -> frozenset[str]:
        """Every config topic in the registry."""
        topics = set(self.gateway)
        for battery_topics in self.batteries.values():
            topics |= battery_topics
        return frozenset(topics)

    def encode(self) -> str:
        """The retained registry payload."""
        return encode_payload(
            {
                "version": _REGISTRY_VERSION,
                "gateway": sorted(self.gateway),
                "batteries": {battery_id: sorted(t) for battery_id, t in sorted(self.batteries.items())},
            }
        )

    @classmethod
    def decode(cls, payload: bytes | str) -> Registry | None:
        """Parse a registry payload; None when it is empty or not ours."""
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("version") != _REGISTRY_VERSION:
            return None
        gateway = data.get("gateway", [])
        batteries = data.get("batteries", {})
        if not isinstance(gateway, list) or not isinstance(batteries, dict):
            return None
        return cls(
            batteries={
                str(bid): frozenset(str(t) for t in topics)
                for bid, topics in batteries.items()
                if isinstance(topics, list)
            },
            gateway=frozenset(str(t) for t in gateway),
        )


def stale_topics(previous: Iterable[str], current: Iterable[str]) -> list[str]:
    """Config topics announced before but not now (to be removed with an empty retained message)."""
    return sorted(set(previous) - set(current))
