"""``bmsgate scan`` and ``bmsgate probe``: find BMSes over Bluetooth LE and identify their protocol.

``scan`` listens for advertisements and says which built-in protocols claim each device (the
definitions' ``match`` rules). ``probe`` connects to one device, prints its GATT tree, then tries the
read-only poll requests of every protocol whose GATT profile the device offers; the first whose replies
decode identifies it, and its snapshot is shown.

bleak is imported only when a command runs, so ``bmsgate --help`` works without the ``[ble]`` extra.
Tests replace `client_factory` / `scanner_factory` with `bmsgate.testing`'s fakes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.tree import Tree

from bmsgate.app.cli.arguments import positive_float
from bmsgate.catalog import default_catalog
from bmsgate.errors import ConfigError, DeviceError
from bmsgate.model import BatterySnapshot
from bmsgate.protocols import CompiledProtocol
from bmsgate.transports.discovery import (
    Advertisement,
    CharacteristicSelection,
    GattTree,
    ProtocolMatch,
    gatt_candidates,
    looks_like_address,
    match_advertisement,
    select_characteristics,
    short_uuid,
)

if TYPE_CHECKING:
    from bmsgate.transports.ble import BleConnection

__all__ = [
    "ProbeAttempt",
    "ProbeReport",
    "ScanResult",
    "add_parsers",
    "probe_device",
    "render_probe",
    "render_scan",
    "scan_devices",
]

EXIT_OK: Final = 0
EXIT_NOT_IDENTIFIED: Final = 1

client_factory: Callable[..., Any] | None = None
"""The bleak client class to use; None = bleak's (via bleak-retry-connector). Tests put a fake here."""
scanner_factory: Callable[..., Any] | None = None
"""``(detection_callback, adapter) -> scanner``; None = bleak's. Tests put a fake here."""


def _ble_module() -> Any:
    try:
        from bmsgate.transports import ble  # noqa: PLC0415 - bleak only when a BLE command runs
    except ImportError as exc:
        raise ConfigError(
            f"Bluetooth support is not installed ({exc.name or exc}); install it with: pip install 'bmsgate[ble]'"
        ) from exc
    return ble


def _factories() -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    if client_factory is not None:
        chosen["client_factory"] = client_factory
    if scanner_factory is not None:
        chosen["scanner_factory"] = scanner_factory
    return chosen


# -- scan ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ScanResult:
    """One device heard, with the protocols that claim it."""

    advertisement: Advertisement
    matches: tuple[ProtocolMatch, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            **self.advertisement.to_dict(),
            "protocols": [{"name": match.protocol, "reason": match.reason} for match in self.matches],
        }


async def scan_devices(
    duration: float,
    *,
    adapter: str | None = None,
    protocols: Sequence[CompiledProtocol] | None = None,
    on_advertisement: Callable[[Advertisement], None] | None = None,
) -> list[ScanResult]:
    """Listen for `duration` seconds; devices a protocol claims first, then by signal strength."""
    ble = _ble_module()
    scanner = ble.BleScanner(adapter=adapter, scanner_factory=scanner_factory or ble.bleak_scanner)
    advertisements: list[Advertisement] = await scanner.scan(duration, on_advertisement=on_advertisement)
    known = list(protocols) if protocols is not None else default_catalog().protocols()
    results = [ScanResult(adv, tuple(match_advertisement(adv, known))) for adv in advertisements]
    return sorted(results, key=lambda result: (not result.matches, -(result.advertisement.rssi or -999)))


def _manufacturer_text(data: dict[int, bytes] | Any) -> str:
    return ", ".join(f"0x{company:04x}:{payload.hex()}" for company, payload in data.items()) or "—"


def render_scan(results: Sequence[ScanResult], console: Console) -> None:
    """The scan results as a table."""
    if not results:
        console.print("No Bluetooth LE devices heard. Is the adapter up and the BMS awake (not connected to a phone)?")
        return
    table = Table(box=box.SIMPLE_HEAVY, title=f"{len(results)} device(s)", title_justify="left")
    for column in ("Name", "Address", "RSSI", "Services", "Manufacturer data", "Protocol"):
        table.add_column(column, overflow="fold", no_wrap=column in {"Address", "RSSI"})
    for result in results:
        adv = result.advertisement
        protocols = "\n".join(f"[bold green]{m.protocol}[/] [dim]({m.reason})[/]" for m in result.matches)
        table.add_row(
            escape(adv.name) if adv.name else "[dim]—[/]",
            adv.address,
            "—" if adv.rssi is None else f"{adv.rssi} dBm",
            ", ".join(short_uuid(uuid) for uuid in adv.service_uuids) or "—",
            _manufacturer_text(adv.manufacturer_data),
            protocols or "[dim]—[/]",
        )
    console.print(table)


def _scan(args: argparse.Namespace) -> int:
    if args.duration <= 0:
        raise ConfigError("must be positive", key_path="--duration")
    stderr = Console(stderr=True)
    heard: set[str] = set()

    async def run() -> list[ScanResult]:
        if args.json or not stderr.is_terminal:
            return await scan_devices(args.duration, adapter=args.adapter)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        ) as progress:
            task = progress.add_task("Scanning…", total=args.duration)

            def seen(advertisement: Advertisement) -> None:
                heard.add(advertisement.address)
                progress.update(task, description=f"Scanning… {len(heard)} device(s)")

            async def tick() -> None:
                loop = asyncio.get_running_loop()
                started = loop.time()
                while True:
                    await asyncio.sleep(0.1)
                    progress.update(task, completed=min(args.duration, loop.time() - started))

            ticker = asyncio.create_task(tick(), name="scan-progress")
            try:
                return await scan_devices(args.duration, adapter=args.adapter, on_advertisement=seen)
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker

    results = asyncio.run(run())
    if args.json:
        sys.stdout.write(json.dumps([result.to_dict() for result in results], indent=2) + "\n")
    else:
        render_scan(results, Console(highlight=False))
    return EXIT_OK


# -- probe --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeAttempt:
    """One protocol tried on the device."""

    protocol: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"protocol": self.protocol, "ok": self.ok, "detail": self.detail}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProbeReport:
    """What ``probe`` found."""

    address: str
    advertisement: Advertisement | None
    tree: GattTree
    attempts: tuple[ProbeAttempt, ...]
    protocol: CompiledProtocol | None
    selection: CharacteristicSelection | None
    write_mode: str | None
    snapshot: BatterySnapshot | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        selection = self.selection
        return {
            "address": self.address,
            "advertisement": self.advertisement.to_dict() if self.advertisement else None,
            "gatt": self.tree.to_dict(),
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "protocol": self.protocol.name if self.protocol else None,
            "characteristics": {
                "service": short_uuid(selection.profile.service),
                "notify_handle": selection.notify.handle,
                "write_handle": selection.write.handle if selection.write else None,
                "write_mode": self.write_mode,
                "also_notify_handles": [characteristic.handle for characteristic in selection.also_notify],
                "connect_write_handles": [characteristic.handle for characteristic, _frame in selection.connect_writes],
            }
            if selection
            else None,
            "snapshot": self.snapshot.to_dict() if self.snapshot else None,
        }


async def _try_protocol(
    connection: BleConnection, protocol: CompiledProtocol, *, timeout: float
) -> tuple[ProbeAttempt, BatterySnapshot | None, Any]:
    from bmsgate.runtime.client import BatteryClient, ClientOptions  # noqa: PLC0415

    ble = _ble_module()
    if not connection.is_connected:
        await connection.connect()
    transport = ble.BleTransport(protocol, connection=connection, battery_id="probe")
    options = ClientOptions(request_timeout=timeout, retries=1, retry_backoff=0.1, poll_deadline=timeout * 8)
    client = BatteryClient(protocol, transport, battery_id="probe", options=options)
    try:
        snapshot = await client.read()
    except DeviceError as exc:
        return ProbeAttempt(protocol.name, False, str(exc).removeprefix("probe: ")), None, transport
    finally:
        await client.close()
    summary = f"{snapshot.cell_count} cells, {snapshot.voltage} V" if snapshot.voltage is not None else "decoded"
    return ProbeAttempt(protocol.name, True, summary), snapshot, transport


async def probe_device(
    target: str,
    *,
    adapter: str | None = None,
    protocols: Sequence[CompiledProtocol] | None = None,
    timeout: float = 2.0,
    scan_timeout: float = 10.0,
    connect_timeout: float = 30.0,
) -> ProbeReport:
    """Connect to `target` (address or advertised name), read its GATT tree, identify the protocol.

    Args:
        target: MAC address / macOS identifier, or an advertised name.
        adapter: ``hci0``...
        protocols: protocols to try (default: every built-in whose GATT profile the device offers).
        timeout: seconds to wait for each reply.
        scan_timeout: seconds to look for the device.
        connect_timeout: seconds for the connection set-up.

    Raises:
        DeviceError: the device could not be reached.
    """
    ble = _ble_module()
    is_address = looks_like_address(target)
    connection = ble.BleConnection(
        target if is_address else None,
        name=None if is_address else target,
        adapter=adapter,
        scan_timeout=scan_timeout,
        connect_timeout=connect_timeout,
        **_factories(),
    )
    await connection.connect()
    attempts: list[ProbeAttempt] = []
    found: tuple[CompiledProtocol, BatterySnapshot, Any] | None = None
    tree: GattTree = connection.tree
    advertisement: Advertisement | None = connection.advertisement
    try:
        known = default_catalog().protocols() if protocols is None else list(protocols)
        # Without --protocol, only protocols whose GATT profile the device offers are worth a request.
        candidates = gatt_candidates(tree, known, advertisement) if protocols is None else known
        for protocol in candidates:
            if select_characteristics(tree, protocol.gatt_profiles) is None:
                attempts.append(ProbeAttempt(protocol.name, False, "the device lacks this protocol's GATT profile"))
                continue
            attempt, snapshot, transport = await _try_protocol(connection, protocol, timeout=timeout)
            attempts.append(attempt)
            if snapshot is not None:
                found = (protocol, snapshot, transport)
                break
    finally:
        await connection.disconnect()
    report = ProbeReport(
        address=advertisement.address if advertisement else target,
        advertisement=advertisement,
        tree=tree,
        attempts=tuple(attempts),
        protocol=None,
        selection=None,
        write_mode=None,
        snapshot=None,
    )
    if found is None:
        return report
    protocol, snapshot, transport = found
    return dataclasses.replace(
        report,
        protocol=protocol,
        selection=transport.selection,
        write_mode=transport.confirmed_write_mode or transport.write_mode,
        snapshot=snapshot,
    )


def render_probe(report: ProbeReport, console: Console) -> None:
    """GATT tree, identification attempts and the decoded snapshot."""
    from bmsgate.app.render import snapshot_table  # noqa: PLC0415

    adv = report.advertisement
    heading = f"[bold]{escape(adv.name if adv and adv.name else report.address)}[/] {report.address}"
    if adv and adv.rssi is not None:
        heading += f" · {adv.rssi} dBm"
    roles: dict[int, str] = {}
    if report.selection is not None and report.protocol is not None:
        roles[report.selection.notify.handle] = f"notify ({report.protocol.name})"
        if report.selection.write is not None:
            write_role = f"write ({report.protocol.name}, {report.write_mode or '?'})"
            notify_role = roles.get(report.selection.write.handle)
            roles[report.selection.write.handle] = f"{notify_role} + {write_role}" if notify_role else write_role
        for characteristic in report.selection.also_notify:
            roles[characteristic.handle] = f"also notify ({report.protocol.name})"
        for characteristic, _frame in report.selection.connect_writes:
            roles[characteristic.handle] = f"written on connect ({report.protocol.name})"
    tree = Tree(heading)
    for service in report.tree.services:
        branch = tree.add(f"Service [cyan]{short_uuid(service.uuid)}[/] (handle {service.handle})")
        for char in service.characteristics:
            role = f"  [green]← {roles[char.handle]}[/]" if char.handle in roles else ""
            leaf = branch.add(
                f"Characteristic [cyan]{short_uuid(char.uuid)}[/] (handle {char.handle}) "
                f"{escape('[' + ', '.join(char.properties) + ']')}{role}"
            )
            for descriptor in char.descriptors:
                leaf.add(f"Descriptor {short_uuid(descriptor.uuid)} (handle {descriptor.handle})")
    console.print(tree)
    if not report.attempts:
        console.print("No built-in protocol's GATT profile matches this device. See docs/add-a-bms.md.")
    for attempt in report.attempts:
        mark = "[green]✓[/]" if attempt.ok else "[red]✗[/]"
        console.print(f"{mark} {attempt.protocol}: {attempt.detail}")
    if report.snapshot is not None and report.protocol is not None:
        console.print(snapshot_table(report.snapshot, title=f"Identified: {report.protocol.title}"))
    elif report.attempts:
        console.print("No protocol's replies decoded. See docs/add-a-bms.md to capture and describe it.")


def _probe(args: argparse.Namespace) -> int:
    protocols = [default_catalog().protocol(args.protocol)] if args.protocol else None
    report = asyncio.run(
        probe_device(
            args.address,
            adapter=args.adapter,
            protocols=protocols,
            timeout=args.timeout,
            scan_timeout=args.scan_timeout,
        )
    )
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        render_probe(report, Console(highlight=False))
    return EXIT_OK if report.protocol is not None else EXIT_NOT_IDENTIFIED


# -- parsers ------------------------------------------------------------------------------------------


def _address(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("give a MAC address such as A4:C1:37:12:34:56, or the advertised name")
    return text.strip()


def add_parsers(subparsers: Any) -> None:
    """Add ``scan`` and ``probe`` to the ``bmsgate`` command line."""
    scan = subparsers.add_parser(
        "scan",
        help="list nearby Bluetooth LE devices and the protocols that match them",
        description="Listen for BLE advertisements and show which built-in protocol definitions match.",
    )
    scan.add_argument(
        "--duration", type=positive_float(3600), default=10.0, metavar="N", help="seconds to scan (default 10)"
    )
    scan.add_argument("--adapter", metavar="HCI", help="Bluetooth adapter, e.g. hci0 (Linux)")
    scan.add_argument("--json", action="store_true", help="print JSON")
    scan.set_defaults(handler=_scan)

    probe = subparsers.add_parser(
        "probe",
        help="connect to a device, print its GATT tree and identify its protocol",
        description=(
            "Connect, print services/characteristics/descriptors, then try the read-only poll requests of "
            "each protocol whose GATT profile the device offers until one's replies decode."
        ),
    )
    probe.add_argument("address", type=_address, metavar="ADDRESS", help="MAC address (or advertised name)")
    probe.add_argument("--adapter", metavar="HCI", help="Bluetooth adapter, e.g. hci0 (Linux)")
    probe.add_argument("--protocol", "-p", metavar="NAME", help="try only this protocol (name or .yaml file)")
    probe.add_argument(
        "--timeout", type=positive_float(600), default=2.0, help="seconds to wait for each reply (default 2)"
    )
    probe.add_argument("--scan-timeout", type=positive_float(3600), default=10.0, help="seconds to look for the device")
    probe.add_argument("--json", action="store_true", help="print JSON")
    probe.set_defaults(handler=_probe)
