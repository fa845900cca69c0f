"""A gateway's fleet credentials file: what ``bmsgate fleet enroll GATEWAY_ID`` writes and the agent reads.

One JSON file per gateway (mode 0600), self-contained so it can be copied to the device as is::

    {"v": 1, "gateway": "site-042", "broker_url": "mqtts://fleet.example:8883", "username": "site-042",
     "password": "...", "ca_pem": "-----BEGIN CERTIFICATE-----...", "server_url": "https://fleet.example"}

When the server's pack repository is initialised (``bmsgate fleet pack init``), the file also carries the
TUF trust anchor and where to fetch from: ``tuf_root`` (the root.json in force at enrolment, as text) and
``artifacts_url`` (``https://fleet.example:8443/tuf``, verified with ``ca_pem``). The gateway trusts that
root on its first start and follows root rotations from there (see :mod:`bmsgate.packs.trust`).

The broker user name is the gateway id: the broker's ACL patterns (``%u``) then confine the gateway to its
own topics. With a client certificate (``cert_pem`` + ``key_pem``) the certificate's CN is the gateway id and
the password may be absent.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from bmsgate.errors import ConfigError, ConfigProblem
from bmsgate.fleet.ids import GATEWAY_ID_PATTERN

__all__ = ["GatewayCredentials", "read_credentials", "write_credentials"]

_MAX_FILE_BYTES = 64 * 1024
_SCHEMES = ("mqtt", "mqtts")
_MAX_ROOT_CHARS = 32 * 1024


class GatewayCredentials(BaseModel):
    """Everything a gateway needs to reach the fleet broker as itself."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    v: Literal[1] = 1
    gateway: Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
    broker_url: str
    """``mqtt://host:port`` or ``mqtts://host:port`` (TLS; then ``ca_pem`` is the trust anchor)."""
    username: str
    password: SecretStr | None = None
    ca_pem: str | None = None
    """The fleet's CA certificate (PEM): the broker's certificate must chain to it."""
    cert_pem: str | None = None
    """Client certificate (PEM), CN = gateway id, when the broker authenticates by certificate."""
    key_pem: SecretStr | None = None
    server_url: str | None = None
    """The fleet server's HTTP(S) base URL (packs and software downloads)."""
    tuf_root: Annotated[str, Field(max_length=_MAX_ROOT_CHARS)] | None = None
    """The TUF root.json (text) the gateway trusts on its first start; None: no pack repository yet."""
    artifacts_url: str | None = None
    """The TUF repository's base URL (``/metadata/`` and ``/targets/`` below it)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        scheme = urlsplit(self.broker_url).scheme
        if scheme not in _SCHEMES:
            raise ValueError(f"broker_url: scheme must be mqtt:// or mqtts://, not {scheme!r}")
        if not urlsplit(self.broker_url).hostname:
            raise ValueError("broker_url: no host name")
        if scheme == "mqtts" and self.ca_pem is None:
            raise ValueError("broker_url is mqtts:// but the file has no ca_pem to verify the broker with")
        if scheme == "mqtt" and (self.cert_pem is not None or self.ca_pem is not None):
            raise ValueError("certificates given but broker_url is mqtt:// (no TLS): use mqtts://")
        if (self.cert_pem is None) != (self.key_pem is None):
            raise ValueError("cert_pem and key_pem come together")
        if self.password is None and self.cert_pem is None:
            raise ValueError("neither a password nor a client certificate")
        if (self.tuf_root is None) != (self.artifacts_url is None):
            raise ValueError("tuf_root and artifacts_url come together")
        if self.artifacts_url is not None:
            artifacts = urlsplit(self.artifacts_url)
            if artifacts.scheme not in ("https", "http") or not artifacts.hostname:
                raise ValueError(f"artifacts_url: expected https://host:port/tuf, got {self.artifacts_url!r}")
        if self.tuf_root is not None:
            try:
                root = json.loads(self.tuf_root)
            except ValueError:
                raise ValueError("tuf_root: not JSON") from None
            signed = root.get("signed") if isinstance(root, dict) else None
            if not isinstance(signed, dict) or signed.get("_type") != "root":
                raise ValueError("tuf_root: not a TUF root.json")
        if self.username != self.gateway:
            raise ValueError(f"username {self.username!r} must be the gateway id {self.gateway!r}")
        return self

    @property
    def uses_tls(self) -> bool:
        """Whether the broker is reached over TLS."""
        return urlsplit(self.broker_url).scheme == "mqtts"


def write_credentials(credentials: GatewayCredentials, path: Path) -> None:
    """Write the file readable by its owner only (it holds a secret); replaces it atomically."""
    data = credentials.model_dump(mode="json", exclude_none=True)
    for secret in ("password", "key_pem"):
        value = getattr(credentials, secret)
        if value is not None:
            data[secret] = value.get_secret_value()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2, sort_keys=True)
        file.write("\n")
    partial.replace(path)


def read_credentials(path: Path, *, key_path: str = "fleet.credentials") -> GatewayCredentials:
    """Read and check a credentials file.

    Raises:
        ConfigError: unreadable, too large, not JSON, or not valid credentials (every problem at once).
    """
    source = str(path)
    try:
        with path.open("rb") as file:
            raw = file.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the credentials file: {exc.strerror or exc}", key_path=key_path) from exc
    if len(raw) > _MAX_FILE_BYTES:
        raise ConfigError(f"credentials file larger than {_MAX_FILE_BYTES} bytes", key_path=key_path, source=source)
    try:
        return GatewayCredentials.model_validate_json(raw)
    except ValidationError as exc:
        problems = [
            ConfigProblem(
                error["msg"],
                key_path=".".join([key_path, *(str(part) for part in error["loc"])]),
                source=source,
            )
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise ConfigError(problems=problems) from None
