"""``bmsgate fleet ...``: enrol and revoke gateways, list them, manage API tokens.

These commands work on the server's data directory (``--data DIR``, default under the user's state
directory) and take effect on a running server at once: an enrolment or revocation rewrites the broker's
password file and ACL and makes the broker reload them (found by its pid file); tokens are re-read by the
server when their file changes.

Other modules add more ``fleet`` actions (``serve``, ``demo``) by listing themselves in
:data:`FLEET_COMMAND_MODULES`; each has ``add_fleet_parsers(actions)``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from bmsgate.app.cli.arguments import print_help

__all__ = ["FLEET_COMMAND_MODULES", "add_parsers"]

FLEET_COMMAND_MODULES: Final[tuple[str, ...]] = (
    "bmsgate.app.cli.fleet_server",
    "bmsgate.app.cli.pack",
    "bmsgate.app.cli.fleet_rollout",
    "bmsgate.app.cli.fleet_simulate",
)
"""Modules that add their own ``fleet`` actions (each has ``add_fleet_parsers(actions)``)."""


def _gateway_id(text: str) -> str:
    from bmsgate.fleet.protocol import GATEWAY_ID_PATTERN, is_gateway_id  # noqa: PLC0415 - keep `--help` fast

    if not is_gateway_id(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a gateway id (lower-case letters, digits, '-' and '_', at most 63: {GATEWAY_ID_PATTERN})"
        )
    return text


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _data(args: argparse.Namespace) -> Any:
    from bmsgate.fleet.server.datadir import DataDir  # noqa: PLC0415

    return DataDir.open(args.data)


def _reloaded_message(reloaded: bool) -> str:
    if reloaded:
        return "the running broker reloaded: in effect now"
    return "no broker runs for this data directory: in effect at its next start"


# -- gateways ---------------------------------------------------------------------------------------


def _enroll(args: argparse.Namespace) -> int:
    from bmsgate.errors import ConfigError  # noqa: PLC0415
    from bmsgate.fleet.credentials import write_credentials  # noqa: PLC0415
    from bmsgate.fleet.server.broker import BrokerOptions, apply_device_changes, read_endpoints  # noqa: PLC0415
    from bmsgate.fleet.server.devices import enroll_gateway  # noqa: PLC0415

    data = _data(args)
    broker_url = args.broker_url
    if broker_url is None:
        endpoints = read_endpoints(data)
        endpoints_cert: str | None
        if endpoints is None:
            defaults = BrokerOptions()
            endpoints_password = f"mqtts://{defaults.host_name}:{defaults.gateway_port}"
            endpoints_cert = f"mqtts://{defaults.host_name}:{defaults.cert_port}"
        else:
            endpoints_password, endpoints_cert = endpoints.password_url, endpoints.cert_url
        broker_url = endpoints_cert if args.client_cert else endpoints_password
        if broker_url is None:
            raise ConfigError(
                "the server runs without a client-certificate listener; pass --broker-url", key_path="--client-cert"
            )
    out: Path = args.out or Path(f"{args.gateway_id}.credentials.json")
    credentials = enroll_gateway(
        data, args.gateway_id, broker_url=broker_url, client_cert=args.client_cert, server_url=args.server_url
    )
    credentials = _with_trust(data, credentials, args.artifacts_url)
    try:
        write_credentials(credentials, out)
    except OSError as exc:
        raise ConfigError(f"cannot write the credentials file: {exc.strerror or exc}", key_path="--out") from exc
    reloaded = asyncio.run(apply_device_changes(data))
    kind = "client certificate" if args.client_cert else "password"
    sys.stdout.write(
        f"enrolled {args.gateway_id} ({kind}, broker {broker_url}); credentials written to {out} "
        f"(secret: copy it to the gateway and delete it here)\n{_reloaded_message(reloaded)}\n"
    )
    return 0


def _with_trust(data: Any, credentials: Any, artifacts_url: str | None) -> Any:
    """The credentials with the pack repository's root and URL, once the repository is initialised."""
    from bmsgate.fleet.server.broker import BrokerOptions  # noqa: PLC0415
    from bmsgate.packs.repository import DEFAULT_ARTIFACTS_PORT, PackRepository  # noqa: PLC0415

    repository = PackRepository(data.root / "tuf")
    if not repository.initialised:
        return credentials
    url = (
        artifacts_url
        or repository.read_endpoint()
        or f"https://{BrokerOptions().host_name}:{DEFAULT_ARTIFACTS_PORT}/tuf"
    )
    return credentials.model_copy(update={"tuf_root": repository.trusted_root().decode("utf-8"), "artifacts_url": url})


def _revoke(args: argparse.Namespace) -> int:
    from bmsgate.fleet.server.broker import apply_device_changes  # noqa: PLC0415
    from bmsgate.fleet.server.devices import DeviceRegistry  # noqa: PLC0415

    data = _data(args)
    DeviceRegistry(data.devices_file).revoke(args.gateway_id)
    reloaded = asyncio.run(apply_device_changes(data))
    sys.stdout.write(f"revoked {args.gateway_id}; {_reloaded_message(reloaded)}\n")
    return 0


def _devices(args: argparse.Namespace) -> int:
    from bmsgate.fleet.server.devices import DeviceRegistry  # noqa: PLC0415

    devices = DeviceRegistry(_data(args).devices_file).list()
    rows: list[dict[str, Any]] = [
        {
            "id": device.gateway_id,
            "enrolled_at": device.enrolled_at,
            "revoked": device.revoked,
            "revoked_at": device.revoked_at,
            "auth": "certificate" if device.cert_serial is not None else "password" if device.password_hash else "-",
        }
        for device in devices
    ]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    table = Table("gateway", "enrolled", "auth", "state", box=None)
    for row in rows:
        state = f"revoked {_when(row['revoked_at'])}" if row["revoked"] else "active"
        table.add_row(row["id"], _when(row["enrolled_at"]), row["auth"], state)
    Console(highlight=False).print(table if rows else "no gateway enrolled yet (bmsgate fleet enroll GATEWAY_ID)")
    return 0


def _broker_files(args: argparse.Namespace) -> int:
    from bmsgate.fleet.server.broker import server_account, write_access_files  # noqa: PLC0415

    data = _data(args)
    passwd, acl = write_access_files(data, args.out)
    account = server_account(data)
    sys.stdout.write(
        f"wrote {passwd} and {acl} for your broker (password_file / acl_file); the server connects as "
        f"{account.username!r} with the password in {data.broker_dir / 'server-user.json'}\n"
    )
    return 0


# -- tokens -----------------------------------------------------------------------------------------


def _token_create(args: argparse.Namespace) -> int:
    from bmsgate.fleet.server.auth import Role  # noqa: PLC0415

    token = _data(args).tokens.create(Role(args.role), args.label)
    sys.stdout.write(f"{token}\n")
    sys.stderr.write(f"a {args.role} token: shown only now, keep it safe\n")
    return 0


def _token_list(args: argparse.Namespace) -> int:
    tokens = _data(args).tokens.list()
    rows: list[dict[str, Any]] = [
        {"id": info.token_id, "role": info.role.value, "label": info.label, "created_at": info.created_at}
        for info in tokens
    ]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    table = Table("id", "role", "created", "label", box=None)
    for row in rows:
        table.add_row(row["id"], row["role"], _when(row["created_at"]), row["label"] or "-")
    Console(highlight=False).print(table if rows else "no tokens")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from bmsgate.errors import ConfigError  # noqa: PLC0415

    if not _data(args).tokens.revoke(args.token_id):
        raise ConfigError(f"no token with id {args.token_id!r} (see `bmsgate fleet token list`)", key_path="ID")
    sys.stdout.write(f"revoked token {args.token_id}\n")
    return 0


# -- parser -----------------------------------------------------------------------------------------


def _add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="DIR",
        type=Path,
        default=None,
        help="the server's data directory (default $XDG_STATE_HOME/bmsgate/fleet or ~/.local/state/bmsgate/fleet)",
    )


def add_parsers(commands: Any) -> None:
    """Add ``fleet enroll | revoke | devices | broker-files | token ...`` (and the actions of other modules)."""
    fleet = commands.add_parser("fleet", help="the fleet server: gateways, tokens")
    actions = fleet.add_subparsers(dest="fleet_command", metavar="ACTION")
    fleet.set_defaults(handler=lambda _args: print_help(fleet))

    enroll = actions.add_parser(
        "enroll",
        help="enrol a gateway (or rotate its secrets) and write its credentials file",
        description="Enrol GATEWAY_ID, or re-enrol it with new secrets (its old credentials stop working), and "
        "write one credentials file for it: broker URL, the fleet CA, its password or client certificate.",
    )
    enroll.add_argument("gateway_id", metavar="GATEWAY_ID", type=_gateway_id)
    _add_data_option(enroll)
    enroll.add_argument(
        "--out", metavar="FILE", type=Path, help="credentials file (default GATEWAY_ID.credentials.json)"
    )
    enroll.add_argument(
        "--client-cert", action="store_true", help="a client certificate (CN = gateway id) instead of a password"
    )
    enroll.add_argument(
        "--broker-url", metavar="URL", help="broker URL for the gateway (default: the running server's, mqtts://)"
    )
    enroll.add_argument("--server-url", metavar="URL", help="the fleet server's HTTP(S) URL for downloads")
    enroll.add_argument(
        "--artifacts-url",
        metavar="URL",
        help="the pack repository's base URL for the gateway (default: the running server's, https://HOST:8443/tuf)",
    )
    enroll.set_defaults(handler=_enroll)

    revoke = actions.add_parser("revoke", help="revoke a gateway: refused by the broker at once")
    revoke.add_argument("gateway_id", metavar="GATEWAY_ID", type=_gateway_id)
    _add_data_option(revoke)
    revoke.set_defaults(handler=_revoke)

    devices = actions.add_parser("devices", help="list enrolled gateways")
    _add_data_option(devices)
    devices.add_argument("--json", action="store_true", help="print JSON")
    devices.set_defaults(handler=_devices)

    files = actions.add_parser(
        "broker-files", help="write the password file and ACL for your own Mosquitto (--broker URL mode)"
    )
    _add_data_option(files)
    files.add_argument("--out", metavar="DIR", type=Path, required=True, help="where to write passwd and acl")
    files.set_defaults(handler=_broker_files)

    token = actions.add_parser("token", help="API tokens: create, list, revoke")
    token_actions = token.add_subparsers(dest="token_command", metavar="ACTION")
    token.set_defaults(handler=lambda _args: print_help(token))
    create = token_actions.add_parser("create", help="create a token (printed once)")
    create.add_argument("--role", choices=["viewer", "technician", "admin"], required=True)
    create.add_argument("--label", default="", help="what the token is for")
    _add_data_option(create)
    create.set_defaults(handler=_token_create)
    listing = token_actions.add_parser("list", help="list tokens (ids and roles, never the tokens)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_data_option(listing)
    listing.set_defaults(handler=_token_list)
    revoke_token = token_actions.add_parser("revoke", help="revoke a token by its id")
    revoke_token.add_argument("token_id", metavar="ID")
    _add_data_option(revoke_token)
    revoke_token.set_defaults(handler=_token_revoke)

    for module_name in FLEET_COMMAND_MODULES:
        importlib.import_module(module_name).add_fleet_parsers(actions)
