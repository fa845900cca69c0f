"""``bmsgate fleet rollout create|status|audit|pause|resume|cancel|retry-failed|rollback``: through the API.

Unlike the data-directory commands of :mod:`.fleet`, these talk to a running server's HTTP API with a token
(``--server URL``, ``--token TOKEN`` or the environment variables ``BMSGATE_FLEET_URL`` and
``BMSGATE_FLEET_TOKEN``), so the audit log records the token's name and they work from another machine.
The standard library's HTTP client is enough for a handful of JSON requests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Final

from bmsgate.app.cli.arguments import print_help
from bmsgate.errors import ConfigError

__all__ = ["add_fleet_parsers"]

_DEFAULT_URL: Final = "http://127.0.0.1:8080"
_TIMEOUT_S: Final = 30.0


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """One API request; the JSON answer, or a ConfigError naming the HTTP status and the server's reason."""
    token = args.token or os.environ.get("BMSGATE_FLEET_TOKEN")
    if not token:
        raise ConfigError("an API token is needed (--token or BMSGATE_FLEET_TOKEN)", key_path="--token")
    base = args.server or os.environ.get("BMSGATE_FLEET_URL") or _DEFAULT_URL
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise ConfigError(f"not an http(s) URL: {base!r}", key_path="--server")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        base.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as answer:  # noqa: S310
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", "")
        except (ValueError, AttributeError):
            detail = ""
        raise ConfigError(f"{method} {path}: HTTP {exc.code} {detail}".rstrip(), key_path="--server") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigError(f"{method} {path}: {exc}", key_path="--server") from exc


def _print_rollout(rollout: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(rollout, indent=2) + "\n")
        return
    reason = f" ({rollout['reason']})" if rollout.get("reason") else ""
    lines = [
        f"{rollout['id']} {rollout['kind']} {rollout['name']!r}: {rollout['state']}{reason}",
        f"  {rollout['succeeded']} of {rollout['total']} succeeded, {rollout['failed']} failed",
    ]
    for group in rollout["groups"]:
        phases = ", ".join(f"{phase} {count}" for phase, count in sorted(group["phases"].items()))
        started = "started" if group["started_at"] is not None else "not started"
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(group["reasons"].items()))
        lines.append(f"  group {group['index'] + 1} ({group['size']}, {started}): {phases}")
        if reasons:
            lines.append(f"    failures: {reasons}")
    sys.stdout.write("\n".join(lines) + "\n")


def _create(args: argparse.Namespace) -> int:
    try:
        spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the rollout request: {exc}", key_path="SPEC") from exc
    _print_rollout(_request(args, "POST", "/api/v1/rollouts", spec), as_json=args.json)
    return 0


def _status(args: argparse.Namespace) -> int:
    if args.rollout_id:
        rollout = _request(args, "GET", f"/api/v1/rollouts/{urllib.parse.quote(args.rollout_id, safe='')}")
        _print_rollout(rollout, as_json=args.json)
        return 0
    listing = _request(args, "GET", "/api/v1/rollouts")
    if args.json:
        sys.stdout.write(json.dumps(listing, indent=2) + "\n")
        return 0
    for rollout in listing["rollouts"]:
        _print_rollout(rollout, as_json=False)
    if not listing["rollouts"]:
        sys.stdout.write("no rollouts yet (bmsgate fleet rollout create SPEC)\n")
    return 0


def _audit(args: argparse.Namespace) -> int:
    entries = _request(args, "GET", f"/api/v1/rollouts/{urllib.parse.quote(args.rollout_id, safe='')}/audit")["entries"]
    if args.json:
        sys.stdout.write(json.dumps(entries, indent=2) + "\n")
        return 0
    for entry in entries:
        when = datetime.datetime.fromtimestamp(entry["at"], datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        detail = f": {entry['detail']}" if entry["detail"] else ""
        sys.stdout.write(f"{when} {entry['actor']} ({entry['role']}) {entry['action']}{detail}\n")
    return 0


def _action(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        path = f"/api/v1/rollouts/{urllib.parse.quote(args.rollout_id, safe='')}/{name}"
        _print_rollout(_request(args, "POST", path), as_json=args.json)
        return 0

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", metavar="URL", help=f"the fleet server (default $BMSGATE_FLEET_URL or {_DEFAULT_URL})"
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="an API token (default $BMSGATE_FLEET_TOKEN; write --token=TOKEN if it starts with -)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON")


def add_fleet_parsers(actions: Any) -> None:
    """Add ``fleet rollout ...`` to the ``fleet`` command's actions."""
    rollout = actions.add_parser("rollout", help="staged rollouts of packs and gateway software (through the API)")
    rollout_actions = rollout.add_subparsers(dest="rollout_command", metavar="ACTION")
    rollout.set_defaults(handler=lambda _args: print_help(rollout))

    create = rollout_actions.add_parser(
        "create",
        help="create a rollout from a JSON request file (technician)",
        description="SPEC is the JSON body of POST /api/v1/rollouts: name, target (packs and/or software as "
        "TUF targets), selection, options (see docs/fleet/rollouts.md).",
    )
    create.add_argument("spec", metavar="SPEC", help="the rollout request (JSON file)")
    _common(create)
    create.set_defaults(handler=_create)

    status = rollout_actions.add_parser("status", help="every rollout, or one with its groups and failures")
    status.add_argument("rollout_id", metavar="ID", nargs="?")
    _common(status)
    status.set_defaults(handler=_status)

    audit = rollout_actions.add_parser("audit", help="who did what when (the server's own steps as 'server')")
    audit.add_argument("rollout_id", metavar="ID")
    _common(audit)
    audit.set_defaults(handler=_audit)

    for name, text in (
        ("pause", "pause: nothing more is published until resumed (technician)"),
        ("resume", "resume, or approve the next group (technician)"),
        ("cancel", "cancel: gateways not yet started keep what they run (technician)"),
        ("retry-failed", "a new rollout of only the failed gateways (technician)"),
        ("rollback", "a new rollout restoring each gateway's previous desired set (admin)"),
    ):
        parser = rollout_actions.add_parser(name, help=text)
        parser.add_argument("rollout_id", metavar="ID")
        _common(parser)
        parser.set_defaults(handler=_action(name))
