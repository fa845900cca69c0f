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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["BrokerSettings", "TlsSettings"]

_DEFAULT_PORT: Final = 1883
_DEFAULT_TLS_PORT: Final = 8883


class TlsSettings(BaseModel):
    """TLS towards the broker. With no CA file (nor CA data) the system trust store is used."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    url: str | None = None
    """``mqtt://user:pass@host:port`` or ``mqtts://...``; explicit keys win over URL parts."""
    host: str = "localhost"
    port: int = Field(default=_DEFAULT_PORT, ge=1, le=65535)
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
