"""The simulated fleet's own cost: CPU per 1,000 gateways and messages per second from one process.

Starts a Mosquitto on a free loopback port and runs ``--gateways`` simulated gateways at ``--interval`` s
for ``--duration`` s (after connecting them all), then prints: connect time, messages and MB/s sent, the
PUBACKed share, the simulator's CPU (user + system of this process while publishing) per second and per
1,000 gateways, and Mosquitto's CPU beside it. On a shared 2-core machine the CPU figures hold better than
the wall-clock ones.

Usage: python benchmarks/fleet_simulate.py [--gateways 5000] [--interval 1] [--duration 10] [--churn 0.001]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import subprocess
import tempfile
import time
from pathlib import Path

from bmsgate.fleet.simulate import GatewayLogin, SimulationReport, SimulationSettings, run_simulation
from bmsgate.mqtt.broker import find_mosquitto, free_port


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--churn", type=float, default=0.001)
    parser.add_argument("--faults", type=float, default=0.001)
    arguments = parser.parse_args()
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto not found")
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        config = Path(directory) / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser {getpass.getuser()}\n"
            "max_queued_messages 0\nlog_dest none\n",
            encoding="utf-8",
        )
        broker = subprocess.Popen([str(binary), "-c", str(config)])
        try:
            time.sleep(0.5)
            settings = SimulationSettings(
                logins=[GatewayLogin(f"sim-{index:06d}") for index in range(arguments.gateways)],
                interval_s=arguments.interval,
                host="127.0.0.1",
                port=port,
                duration_s=arguments.duration,
                fault_ratio=arguments.faults,
                churn_ratio=arguments.churn,
            )
            first: list[SimulationReport] = []
            broker_cpu_start = _process_cpu_s(broker.pid)
            report = asyncio.run(run_simulation(settings, lambda second: first.append(second) if not first else None))
            broker_cpu = _process_cpu_s(broker.pid) - broker_cpu_start
        finally:
            broker.terminate()
            broker.wait()
    publishing_cpu = report.cpu_s - (first[0].cpu_s if first else 0.0)
    publishing_s = report.seconds - (first[0].seconds if first else 0.0)
    rate = report.messages / report.seconds if report.seconds else 0.0
    per_second = publishing_cpu / publishing_s if publishing_s else 0.0
    print(f"gateways {arguments.gateways} at {arguments.interval} s for {arguments.duration} s")
    print(
        f"sent {report.messages} messages ({report.telemetry} telemetry, {report.events} events), "
        f"{report.bytes / 1e6:.1f} MB; {rate:.0f} msg/s over the run incl. connecting"
    )
    print(
        f"acked {report.acked}, unconfirmed at drops {report.unconfirmed}, connects {report.connects}, "
        f"drops {report.drops}, connect failures {report.connect_failures}"
    )
    print(
        f"simulator CPU {report.cpu_s:.2f} s in all; publishing: {per_second * 100:.1f} % of a core = "
        f"{per_second * 100 * 1000 / arguments.gateways:.2f} % per 1,000 gateways at this interval, "
        f"{publishing_cpu / max(1, report.telemetry) * 1e6:.0f} us per message"
    )
    print(f"mosquitto CPU {broker_cpu:.2f} s ({broker_cpu / max(1, report.messages) * 1e6:.0f} us/message)")


if __name__ == "__main__":
    main()
