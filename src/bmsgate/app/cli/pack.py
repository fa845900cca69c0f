"""``bmsgate pack build | keygen | sign | rotate-root`` (offline) and ``bmsgate fleet pack init | publish | list``.

The offline commands run on a machine that is not the fleet server and keep the root and targets keys in
``KEYDIR`` (copy it to offline storage; see docs/packs.md for the ceremony)::

    KEYDIR/root.key root.pub.json targets.key targets.pub.json     offline keys (private: mode 0600)
    KEYDIR/online/snapshot.* timestamp.*                            the online keys: copy to the server
    KEYDIR/root.json N.root.json                                    the root in force and its history
    KEYDIR/retired/                                                 keys replaced by a rotation

The ``fleet pack`` commands work on the server's data directory (``--data DIR``); the running server serves
the result at once (the files are re-read per request) and re-signs the timestamp before it expires.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path
from typing import Any, Final

from bmsgate.app.cli.arguments import positive_float, print_help
from bmsgate.errors import ConfigError

__all__ = ["add_fleet_parsers", "add_parsers"]

_ONLINE: Final = ("snapshot", "timestamp")
_OFFLINE: Final = ("root", "targets")
_EXPIRY_WARNING_DAYS: Final = 14
_KIND_DIRECTORY: Final = {"pack": "packs", "software": "software"}
"""Each artifact kind's directory in the target paths (``packs/x.pack``, ``software/x.whl``)."""
_TARGET_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,150}")
_NAME_VERSION = re.compile(r"(?P<name>[a-z0-9][a-z0-9_]*?)-(?P<version>[0-9][0-9A-Za-z.+_]*?)(?:-.*)?\.[A-Za-z0-9]+")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _key_dir(args: argparse.Namespace, role: str) -> Path:
    keys: Path = args.keys
    return keys / "online" if role in _ONLINE else keys


def _root_history(keys: Path) -> list[Path]:
    """KEYDIR's N.root.json files, newest first."""
    found = [(int(path.name.split(".")[0]), path) for path in keys.glob("*.root.json") if path.name[0].isdigit()]
    return [path for _, path in sorted(found, reverse=True)]


# -- offline -------------------------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    from bmsgate.packs.trust import ROLES, create_root, generate_key  # noqa: PLC0415 - keep `--help` fast

    keys: Path = args.keys
    if (keys / "root.json").exists():
        raise ConfigError(
            f"{keys} holds a root.json already (rotate with `bmsgate pack rotate-root`)", key_path="--keys"
        )
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    (keys / "online").mkdir(exist_ok=True, mode=0o700)
    signers = {role: generate_key(_key_dir(args, role), role) for role in ROLES}
    root_json = create_root({role: [signer] for role, signer in signers.items()}, expires_days=args.expires_days)
    (keys / "1.root.json").write_bytes(root_json)
    (keys / "root.json").write_bytes(root_json)
    for role, signer in signers.items():
        _say(f"{role:9} key {signer.keyid}")
    _say(
        f"wrote {keys / 'root.json'} (version 1). Keep {keys} offline; copy {keys / 'online'} and root.json to the "
        "server: bmsgate fleet pack init --root root.json --online-keys online/"
    )
    return 0


def _build(args: argparse.Namespace) -> int:
    from bmsgate.packs.bundle import build_pack, pack_file_name, pack_sha256  # noqa: PLC0415

    manifest, data = build_pack(args.directory)
    out: Path = args.out or Path(pack_file_name(manifest))
    out.write_bytes(data)
    _say(f"built {manifest.label}: {len(manifest.items)} items, {len(data)} bytes, sha256 {pack_sha256(data)} -> {out}")
    return 0


def _custom(path: Path, kind: str, name: str | None, version: str | None) -> dict[str, Any]:
    if kind == "pack":
        from bmsgate.packs.bundle import MAX_PACK_BYTES, read_pack  # noqa: PLC0415

        with path.open("rb") as file:
            manifest = read_pack(file.read(MAX_PACK_BYTES + 1), source=str(path)).manifest
        for option, given, actual in (("--name", name, manifest.name), ("--version", version, manifest.version)):
            if given is not None and given != actual:
                raise ConfigError(f"{path.name} is {manifest.label}, not {option} {given}", key_path=option)
        return {"bmsgate": {"kind": kind, "name": manifest.name, "version": manifest.version}}
    if name is None or version is None:
        match = _NAME_VERSION.fullmatch(path.name)
        if match is None:
            raise ConfigError(
                f"{path.name}: cannot read NAME-VERSION from the file name; give --name and --version",
                key_path="ARTIFACT",
            )
        name = name or match["name"]
        version = version or match["version"]
    return {"bmsgate": {"kind": kind, "name": name, "version": version}}


def _sign(args: argparse.Namespace) -> int:
    from bmsgate.packs.errors import PackError  # noqa: PLC0415
    from bmsgate.packs.trust import TargetSpec, load_signer, read_root, read_targets, sign_targets  # noqa: PLC0415

    keys: Path = args.keys
    artifacts: list[Path] = args.artifacts
    if len(artifacts) > 1 and (args.name or args.version):
        raise ConfigError("--name and --version describe one artifact; sign several one by one", key_path="--name")
    specs = []
    for artifact in artifacts:
        if not artifact.is_file():
            raise ConfigError(f"{artifact}: no such file", key_path="ARTIFACT")
        if not _TARGET_FILE.fullmatch(artifact.name):
            raise ConfigError(f"{artifact.name}: use letters, digits and ._+- in file names", key_path="ARTIFACT")
        custom = _custom(artifact, args.kind, args.name, args.version)
        specs.append(TargetSpec(path=f"{_KIND_DIRECTORY[args.kind]}/{artifact.name}", file=artifact, custom=custom))
    root_json = (keys / "root.json").read_bytes()
    current = args.targets.read_bytes() if args.targets is not None else None
    current_root = None
    if current is not None:
        # After a rotation of the targets key, an older root signed the current targets.json.
        for candidate in _root_history(keys):
            try:
                read_targets(current, read_root(candidate.read_bytes()))
            except PackError:
                continue  # signed under an older root: try that one
            current_root = candidate.read_bytes()
            break
    new = sign_targets(
        root_json,
        current,
        specs,
        signer=load_signer(keys, "targets"),
        remove=args.remove,
        expires_days=args.expires_days,
        current_root=current_root,
    )
    args.out.write_bytes(new)
    version = json.loads(new)["signed"]["version"]
    for spec in specs:
        _say(f"signed {spec.path}")
    _say(f"wrote {args.out} (targets version {version}); publish: bmsgate fleet pack publish --targets {args.out} ...")
    return 0


def _rotate_root(args: argparse.Namespace) -> int:
    from bmsgate.packs.trust import generate_key, load_signer, read_root, rotate_root  # noqa: PLC0415

    keys: Path = args.keys
    current = (keys / "root.json").read_bytes()
    old_version = read_root(current).signed.version
    staging = keys / f"rotation-{old_version + 1}"
    new_keys = {}
    for role in args.rotate:
        directory = staging / ("online" if role in _ONLINE else "")
        new_keys[role] = [generate_key(directory, role)]
    old_root = load_signer(keys, "root")
    signers = [old_root, *new_keys.get("root", [])]
    new = rotate_root(current, new_keys=new_keys, signers=signers, expires_days=args.expires_days)
    retired = keys / "retired"
    retired.mkdir(exist_ok=True, mode=0o700)
    for role, (signer,) in new_keys.items():
        home = _key_dir(args, role)
        old = load_signer(home, role)
        for suffix in (".key", ".pub.json"):
            (home / f"{role}{suffix}").replace(retired / f"{role}-{old.keyid[:16]}{suffix}")
            (staging / ("online" if role in _ONLINE else "") / f"{role}{suffix}").replace(home / f"{role}{suffix}")
        _say(f"{role:9} key {signer.keyid} (new)")
    version = old_version + 1
    (keys / f"{version}.root.json").write_bytes(new)
    (keys / "root.json").write_bytes(new)
    if args.out is not None:
        args.out.write_bytes(new)
    for leftover in sorted(staging.rglob("*"), reverse=True):
        leftover.rmdir()
    staging.rmdir()
    hint = " --online-keys online/" if set(args.rotate) & set(_ONLINE) else ""
    hint += (
        " --targets NEW_targets.json (re-sign: bmsgate pack sign --targets CURRENT --out NEW)"
        if ("targets" in args.rotate)
        else ""
    )
    _say(f"wrote root version {version}; on the server: bmsgate fleet pack init --root root.json{hint}")
    return 0


# -- on the server -------------------------------------------------------------------------------------------


def _repository(args: argparse.Namespace) -> Any:
    from bmsgate.fleet.server.datadir import DataDir  # noqa: PLC0415
    from bmsgate.packs.repository import PackRepository  # noqa: PLC0415

    return PackRepository(DataDir.open(args.data).root / "tuf")


def _init(args: argparse.Namespace) -> int:
    repository = _repository(args)
    first = not repository.initialised
    version = repository.install_root(args.root, online_keys=args.online_keys, targets_file=args.targets)
    what = "installed" if first else "rotated to"
    _say(f"pack repository {what} root version {version} ({repository.directory})")
    if first:
        _say("gateways enrolled from now on get this root; publish with: bmsgate fleet pack publish")
    return 0


def _publish(args: argparse.Namespace) -> int:
    info = _repository(args).publish(args.targets, args.artifacts)
    _say(f"published targets version {info.version} ({len(info.targets)} targets, expires {info.expires:%Y-%m-%d})")
    return 0


def _soon() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=_EXPIRY_WARNING_DAYS)


def _list(args: argparse.Namespace) -> int:
    repository = _repository(args)
    if not repository.initialised:
        _say("no pack repository yet (bmsgate fleet pack init --root root.json --online-keys DIR)")
        return 0
    info = repository.targets()
    rows = [
        {
            "target": entry.path,
            "length": entry.length,
            "sha256": entry.sha256,
            **{key: value for key, value in entry.custom.get("bmsgate", {}).items() if isinstance(key, str)},
        }
        for entry in (info.targets if info is not None else ())
    ]
    expiries = repository.expiries()
    if args.json:
        document = {"targets_version": info.version if info else None, "targets": rows, "expires": expiries}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    for role, when in expiries.items():
        _say(f"{role:9} expires {when}")
    targets_expire = expiries.get("targets")
    if targets_expire is not None and datetime.datetime.fromisoformat(targets_expire) < _soon():
        _say(
            f"warning: targets.json expires {targets_expire}: re-sign it offline "
            "(bmsgate pack sign --targets CURRENT --out NEW) and publish it, or gateways refuse every update"
        )
    if not rows:
        _say("no targets published yet")
    for row in rows:
        label = f"{row.get('kind', '?')} {row.get('name', '?')} {row.get('version', '?')}"
        _say(f"{row['target']:50} {row['length']:>10} {row['sha256'][:16]}  {label}")
    return 0


# -- parsers -------------------------------------------------------------------------------------------------


def add_parsers(commands: Any) -> None:
    """Add ``pack build | keygen | sign | rotate-root``."""
    pack = commands.add_parser("pack", help="sign packs and gateway software (offline keys)")
    actions = pack.add_subparsers(dest="pack_command", metavar="ACTION")
    pack.set_defaults(handler=lambda _args: print_help(pack))

    build = actions.add_parser(
        "build",
        help="build a pack file from a directory, checked exactly as a gateway loads it",
        description="Validate every item of DIR (pack.yaml, protocols/, modbus/, can/) as a gateway would and "
        "write the pack file (default NAME-VERSION.pack.json); every problem is listed at once.",
    )
    build.add_argument("directory", metavar="DIR", type=Path)
    build.add_argument("--out", metavar="FILE", type=Path)
    build.set_defaults(handler=_build)

    keygen = actions.add_parser(
        "keygen",
        help="make the four TUF keys and root.json version 1",
        description="Make Ed25519 keys for the root and targets roles (stay offline) and the snapshot and "
        "timestamp roles (KEYDIR/online: copy to the server), and root.json version 1.",
    )
    keygen.add_argument("--keys", metavar="KEYDIR", type=Path, required=True)
    keygen.add_argument("--expires-days", type=positive_float(3650), default=365.0, help="root expiry (365)")
    keygen.set_defaults(handler=_keygen)

    sign = actions.add_parser(
        "sign",
        help="add artifacts to targets.json and sign it with the targets key",
        description="Write the next targets.json: the current one (--targets; none for the first) with each "
        "ARTIFACT added as packs/<file name> (or software/...), version + 1, a fresh expiry, signed with "
        "KEYDIR/targets.key.",
    )
    sign.add_argument("artifacts", metavar="ARTIFACT", type=Path, nargs="*")
    sign.add_argument("--keys", metavar="KEYDIR", type=Path, required=True)
    sign.add_argument("--targets", metavar="CURRENT", type=Path, help="the targets.json in force (from the server)")
    sign.add_argument("--out", metavar="NEW", type=Path, required=True)
    sign.add_argument("--kind", choices=sorted(_KIND_DIRECTORY), default="pack")
    sign.add_argument("--name", help="the software's name (default: from NAME-VERSION...; a pack's is its own)")
    sign.add_argument("--version", help="its version (default: from the file name; a pack's is its own)")
    sign.add_argument("--remove", metavar="TARGET", action="append", default=[], help="drop a target path")
    sign.add_argument("--expires-days", type=positive_float(3650), default=90.0, help="targets expiry (90)")
    sign.set_defaults(handler=_sign)

    rotate = actions.add_parser(
        "rotate-root",
        help="the next root version with new keys, signed by the old and new root keys",
        description="Replace the keys of the roles named by --rotate (old keys go to KEYDIR/retired) and "
        "write the next root.json, signed by the current and the new root key.",
    )
    rotate.add_argument("--keys", metavar="KEYDIR", type=Path, required=True)
    rotate.add_argument(
        "--rotate", metavar="ROLE", nargs="+", choices=(*_OFFLINE, *_ONLINE), default=["root"], help="(root)"
    )
    rotate.add_argument("--expires-days", type=positive_float(3650), default=365.0)
    rotate.add_argument("--out", metavar="FILE", type=Path, help="also write the new root.json here")
    rotate.set_defaults(handler=_rotate_root)


def add_fleet_parsers(actions: Any) -> None:
    """Add ``fleet pack init | publish | list``."""
    pack = actions.add_parser("pack", help="the server's pack repository (TUF): init, publish, list")
    pack_actions = pack.add_subparsers(dest="fleet_pack_command", metavar="ACTION")
    pack.set_defaults(handler=lambda _args: print_help(pack))

    def data_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", metavar="DIR", type=Path, default=None, help="the server's data directory")

    init = pack_actions.add_parser(
        "init", help="install root.json (first, or the next version after `pack rotate-root`)"
    )
    init.add_argument("--root", metavar="FILE", type=Path, required=True)
    init.add_argument("--online-keys", metavar="DIR", type=Path, help="snapshot.* and timestamp.* key files")
    init.add_argument("--targets", metavar="FILE", type=Path, help="a targets.json to publish with the root")
    data_option(init)
    init.set_defaults(handler=_init)

    publish = pack_actions.add_parser("publish", help="publish an offline-signed targets.json and its new files")
    publish.add_argument("artifacts", metavar="ARTIFACT", type=Path, nargs="*")
    publish.add_argument("--targets", metavar="FILE", type=Path, required=True)
    data_option(publish)
    publish.set_defaults(handler=_publish)

    listing = pack_actions.add_parser("list", help="the published targets and when the metadata expires")
    listing.add_argument("--json", action="store_true")
    data_option(listing)
    listing.set_defaults(handler=_list)
