"""Where and how to reach an MQTT broker: shared by the Home Assistant output and the fleet agent.

A connection is given as a mapping or a plain URL string (``mqtt://user:pass@host:port`` or ``mqtts://``);
explicit keys win over URL parts. The password can come from an environment variable (``password_env``)
to keep it out of a configuration file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["BrokerSettings", "TlsSettings"]

_DEFAULT_PORT: Final = 1883
_DEFAULT_TLS_PORT: Final = 8883


class TlsSettings(BaseModel):
    """TLS towards the broker. With no CA file (nor CA data) the system trust store is used."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    ca_file: Path | None = None
    ca_pem: str | None = None
    """The CA certificate(s) as PEM text (a fleet credentials file carries its CA that way)."""
    cert_file: Path | None = None
    """Client certificate (PEM) for brokers that authenticate clients by certificate."""
    key_file: Path | None = None
    cert_pem: str | None = None
    """The client certificate as PEM text (instead of `cert_file`)."""
    key_pem: SecretStr | None = None
    """Its private key as PEM text (with `cert_pem`)."""
    insecure: bool = False
    """Skip host name verification (the chain is still verified). Only for testing."""

    @model_validator(mode="after")
    def _check_files(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        if (self.cert_pem is None) != (self.key_pem is None):
            raise ValueError("cert_pem and key_pem come together")
        if self.cert_pem is not None and self.cert_file is not None:
            raise ValueError("give either cert_file or cert_pem, not both")
        for path in (self.ca_file, self.cert_file, self.key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: file not found")
        return self


class BrokerSettings(BaseModel):
    """One broker connection: address, credentials, TLS, keepalive and reconnect pacing."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    url: str | None = None
    """``mqtt://user:pass@host:port`` or ``mqtts://...``; explicit keys win over URL parts."""
    host: str = "localhost"
    port: int = Field(default=_DEFAULT_PORT, ge=1, le=65535)
    hosts: list[str] = []
    """More addresses of the same broker tier (``host:port`` or ``host``, ``[v6]:port``): tried in order
    when ``host:port`` does not connect, so a gateway fails over between cluster nodes by itself."""
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    """Name of an environment variable holding the password (keeps it out of the config file)."""
    client_id: str | None = None
    """MQTT client id; the default depends on the user of the connection."""
    keepalive: int = Field(default=30, ge=5, le=3600)
    qos: Literal[0, 1, 2] = 1
    tls: TlsSettings | None = None
    reconnect_initial: float = Field(default=1.0, gt=0)
    """First delay (s) before reconnecting; doubles per failure."""
    reconnect_max: float = Field(default=60.0, gt=0)
    """Cap (s) of the reconnect delay; the actual delay is jittered between half and all of it."""

    @model_validator(mode="before")
    @classmethod
    def _accept_url(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"url": data}
        if not isinstance(data, dict) or not data.get("url"):
            return data
        parts = urlsplit(str(data["url"]))
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"url: scheme must be mqtt:// or mqtts://, not {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("url: no host name")
        secure = parts.scheme in ("mqtts", "ssl")
        try:
            url_port = parts.port
        except ValueError as exc:
            raise ValueError(f"url: {exc}") from exc
        from_url: dict[str, Any] = {
            "host": parts.hostname,
            "port": url_port or (_DEFAULT_TLS_PORT if secure else _DEFAULT_PORT),
        }
        if parts.username:
            from_url["username"] = unquote(parts.username)
        if parts.password:
            from_url["password"] = unquote(parts.password)
        if secure:
            from_url["tls"] = {}
        return {**from_url, **data}

    @model_validator(mode="after")
    def _check_credentials(self) -> Self:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give either password or password_env, not both")
        if self.password_env is not None and self.password_env not in os.environ:
            raise ValueError(f"password_env: environment variable {self.password_env} is not set")
        if self.reconnect_max < self.reconnect_initial:
            raise ValueError("reconnect_max must not be below reconnect_initial")
        return self

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        for index, address in enumerate(hosts):
            try:
                _split_address(address, _DEFAULT_PORT)
            except ValueError as exc:
                raise ValueError(f"hosts[{index}]: {exc}") from None
        return hosts

    def addresses(self) -> list[tuple[str, int]]:
        """Where to connect, in order: ``host:port``, then each of :attr:`hosts` (no repeats)."""
        default = self.port
        found = [(self.host, self.port)]
        for address in self.hosts:
            parsed = _split_address(address, default)
            if parsed not in found:
                found.append(parsed)
        return found

    def resolved_password(self) -> str | None:
        """The password from the config or from the environment variable named by ``password_env``."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env is not None:
            return os.environ.get(self.password_env)
        return None

    @property
    def effective_client_id(self) -> str | None:
        """The client id used on the wire (None: the library picks a random one)."""
        return self.client_id

    def display_url(self) -> str:
        """Where we connect, for logs (never includes the password)."""
        scheme = "mqtts" if self.tls is not None else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def _split_address(address: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as (host, port).

    Raises:
        ValueError: not an address.
    """
    text = address.strip()
    if not text or any(character.isspace() or character in "/@?#" for character in text):
        raise ValueError(f"not a host or host:port: {address!r}")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"not a [v6]:port address: {address!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ValueError(f"an IPv6 address needs brackets: [{address}]:port")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"no host in {address!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 1-65535 in {address!r}")
    return host, int(port_text)
