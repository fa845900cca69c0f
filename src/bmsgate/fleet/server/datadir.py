"""The fleet server's data directory: where everything it owns lives, created private.

Default ``$XDG_STATE_HOME/bmsgate/fleet`` (else ``~/.local/state/bmsgate/fleet``); ``--data DIR`` picks
another. Layout (directories 0700, secrets 0600)::

    tokens.json            API tokens, hashed (auth.TokenStore)
    admin-token.created    marker: the first admin token was made (and shown) once
    devices.json           enrolled gateways: id, enrolled_at, revoked, password hash (devices.py)
    devices.json.lock      held while enrol/revoke rewrite devices.json (across processes)
    broker/
      server-user.json     the server's own broker user and password (ingest, desired, commands)
      endpoint.json        the public broker URLs written at start (``fleet enroll`` puts them in files)
      mosquitto.conf passwd acl    generated from devices.json on every start and change
      mosquitto.pid        pid of the running broker (``fleet revoke`` signals it)
      mosquitto.log        the broker's log
      db/                  Mosquitto persistence (queued QoS 1 messages, retained desired state)
    tls/
      ca.pem ca.key        the fleet CA (gateways trust it; back it up: losing it means re-enrolling all)
      server.pem server.key        the broker's certificate, renewed before it expires
      clients/<id>.pem     client certificates issued (the key goes into the gateway's file only)
      crl.pem              revoked client certificates
    tuf/                   the pack repository (metadata, targets, online keys): bmsgate.packs.repository

The store and the web server keep their own files beside these (see their modules).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
from pathlib import Path
from typing import Final

from bmsgate.errors import ConfigError
from bmsgate.fleet.server.auth import Role, TokenStore

__all__ = ["ADMIN_MARKER", "DataDir", "default_data_dir", "write_private"]

ADMIN_MARKER: Final = "admin-token.created"
_PRIVATE_DIR: Final = stat.S_IRWXU
_PRIVATE_FILE: Final = stat.S_IRUSR | stat.S_IWUSR


def default_data_dir() -> Path:
    """``$XDG_STATE_HOME/bmsgate/fleet``, else ``~/.local/state/bmsgate/fleet``."""
    state = os.environ.get("XDG_STATE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "bmsgate" / "fleet"


def write_private(path: Path, text: str) -> None:
    """Write `path` readable by its owner only, replacing it atomically (a reader never sees half a file)."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE_FILE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(partial, _PRIVATE_FILE)  # O_CREAT's mode does not apply when the file existed
    partial.replace(path)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, _PRIVATE_DIR)


@dataclasses.dataclass(frozen=True, slots=True)
class DataDir:
    """One fleet server data directory (create it with :meth:`open`)."""

    root: Path

    @classmethod
    def open(cls, path: Path | None = None) -> DataDir:
        """The directory at `path` (default :func:`default_data_dir`), created 0700 with its subfolders.

        Raises:
            ConfigError: it cannot be created or is not a directory.
        """
        root = (path or default_data_dir()).expanduser().absolute()
        try:
            _private_dir(root)
            for sub in ("broker", "broker/db", "tls", "tls/clients"):
                _private_dir(root / sub)
        except OSError as exc:
            raise ConfigError(f"cannot create the data directory: {exc.strerror or exc}", key_path="--data") from exc
        return cls(root)

    @property
    def tokens(self) -> TokenStore:
        """The API token store of this directory."""
        return TokenStore(self.root)

    @property
    def devices_file(self) -> Path:
        """``devices.json``: the enrolled gateways."""
        return self.root / "devices.json"

    @property
    def broker_dir(self) -> Path:
        """Generated broker files, its pid and log."""
        return self.root / "broker"

    @property
    def persistence_dir(self) -> Path:
        """Mosquitto's persistence location."""
        return self.root / "broker" / "db"

    @property
    def tls_dir(self) -> Path:
        """CA, server and client certificates."""
        return self.root / "tls"

    @property
    def pid_file(self) -> Path:
        """The running broker's pid (written by the server, read by ``fleet revoke``)."""
        return self.broker_dir / "mosquitto.pid"

    def ensure_admin_token(self) -> str | None:
        """Create the first admin token on first start; returns it then (to show once), else None.

        A marker file, not the token list, says it was done: an operator who revoked that token on
        purpose does not get a new one at the next start.
        """
        marker = self.root / ADMIN_MARKER
        if marker.exists():
            return None
        token = self.tokens.create(Role.ADMIN, "first admin (created on first start)")
        write_private(marker, "the first admin token was created and shown once\n")
        return token

    def running_broker_pid(self) -> int | None:
        """The pid of this directory's running broker, or None (no pid file, or that process is gone)."""
        try:
            text = self.pid_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if not text.isdigit():
            return None
        pid = int(text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A recycled pid would get our SIGHUP: check it is a mosquitto using our config.
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if (
                not any(part.endswith(b"mosquitto") for part in command)
                or str(self.broker_dir / "mosquitto.conf").encode() not in command
            ):
                return None
        return pid
