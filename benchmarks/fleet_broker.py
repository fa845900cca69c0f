"""Fleet broker costs at fleet sizes: start, reload (enrol/revoke taking effect), one enrolment, TLS connect.

For each fleet size N, devices.json is filled with N gateways (one shared password hash: the cost being
measured is the files and Mosquitto's parsing, not PBKDF2), then:

- start: FleetBroker start until every listener accepts (CA and server certificate already made);
- reload: rewrite passwd + acl from devices.json, SIGHUP, until Mosquitto logs the reload;
- enrol: one more gateway end to end (``enroll_gateway`` + ``apply_device_changes``), as the CLI does it;
- connect: a gateway's TLS connect + password check + disconnect (mean of 20);
- broker RSS with the N-gateway password file and ACL loaded;
- broker CPU per message: the last gateway in the ACL publishes 3,000 QoS 1 telemetry messages to the
  subscribed server; Mosquitto's own CPU time (from /proc) divided by the messages, so the cost of the
  literal per-gateway ACL at this size shows (the Python client, not the broker, limits the rate here).

Run: .venv/bin/python benchmarks/fleet_broker.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from bmsgate.fleet.server.broker import BrokerOptions, FleetBroker, apply_device_changes
from bmsgate.fleet.server.datadir import DataDir
from bmsgate.fleet.server.devices import enroll_gateway
from bmsgate.fleet.server.passwords import hash_password
from bmsgate.mqtt.broker import free_port
from bmsgate.mqtt.client import connect
from bmsgate.mqtt.settings import BrokerSettings, TlsSettings

MESSAGES = 3000


def fill(data: DataDir, count: int, password: str) -> None:
    stored = hash_password(password)
    devices = {f"gw-{number:06d}": {"enrolled_at": time.time(), "password_hash": stored} for number in range(count)}
    data.devices_file.write_text(json.dumps({"v": 1, "devices": devices}))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        data = DataDir.open(Path(directory) / "data")
        fill(data, count, "bench-password")
        options = BrokerOptions(
            gateway_host="127.0.0.1", gateway_port=free_port(), cert_port=None, public_host="localhost"
        )
        figures: dict[str, float] = {}
        warm = FleetBroker(data, options)
        async with warm:  # makes the CA and certificate, so the timed start measures the broker
            pass
        started = time.perf_counter()
        async with FleetBroker(data, options) as broker:
            figures["start_s"] = time.perf_counter() - started
            pid = broker.pid or 0
            figures["rss_mib"] = rss_kib(pid) / 1024
            started = time.perf_counter()
            await broker.reload()
            figures["reload_s"] = time.perf_counter() - started
            started = time.perf_counter()
            credentials = enroll_gateway(data, "gw-new", broker_url=broker.endpoints.password_url)
            await apply_device_changes(data)
            figures["enrol_s"] = time.perf_counter() - started
            assert credentials.ca_pem is not None
            ca = Path(directory) / "ca.pem"
            ca.write_text(credentials.ca_pem)
            settings = BrokerSettings(
                host="127.0.0.1",
                port=options.gateway_port,
                username="gw-000000",
                password=SecretStr("bench-password"),
                tls=TlsSettings(ca_file=ca),
            )
            times = []
            for _ in range(20):
                started = time.perf_counter()
                async with connect(settings, will_topic="fleet/v1/gw-000000/availability", will_payload="offline"):
                    pass
                times.append(time.perf_counter() - started)
            figures["connect_ms"] = statistics.mean(times) * 1000
            last = f"gw-{count - 1:06d}"
            publisher = settings.model_copy(update={"username": last})
            received = 0
            async with (
                connect(broker.server_settings, will_topic="fleet/server/availability", will_payload="offline") as srv,
                connect(publisher, will_topic=f"fleet/v1/{last}/availability", will_payload="offline") as gateway,
            ):
                await srv.subscribe("fleet/v1/+/telemetry")
                before = cpu_seconds(pid)
                payload = b"x" * 1000
                for _ in range(MESSAGES):
                    await gateway.publish(f"fleet/v1/{last}/telemetry", payload, retain=False)
                async for _message in srv.messages():
                    received += 1
                    if received == MESSAGES:
                        break
                figures["cpu_us_per_msg"] = (cpu_seconds(pid) - before) / MESSAGES * 1e6
            figures["acl_kib"] = (data.broker_dir / "acl").stat().st_size / 1024
        return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    columns = (
        ("gateways", 9),
        ("start s", 8),
        ("reload s", 9),
        ("enrol s", 8),
        ("connect ms", 11),
        ("RSS MiB", 8),
        ("CPU µs/msg", 11),
    )
    print(" ".join(f"{name:>{width}}" for name, width in columns), f"{'acl KiB':>8}")
    for count in args.sizes:
        f = await measure(count)
        print(
            f"{count:>9} {f['start_s']:>8.3f} {f['reload_s']:>9.3f} {f['enrol_s']:>8.3f} "
            f"{f['connect_ms']:>11.1f} {f['rss_mib']:>8.1f} {f['cpu_us_per_msg']:>11.1f} {f['acl_kib']:>8.0f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
