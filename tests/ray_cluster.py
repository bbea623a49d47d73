"""A Ray cluster of separate processes on this machine, for the tests and benchmarks of ``--executor ray``.

The head node listens on 127.0.0.2, worker nodes on 127.0.0.3, 127.0.0.4, ...: every node is a ``ray start
--block`` process with its own process group and free ports, in a temporary folder of its own, so that
``stop`` ends exactly these processes (never ``ray stop``, which ends every Ray of the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"
START_SECONDS = 90.0


def ray_settings(temp_dir: Path) -> dict[str, str]:
    """Environment of every Ray process of a test: no token file from ~/.ray, no usage report, its own folder."""
    return {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(temp_dir)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_ports() -> list[str]:
    """Free ports for the servers a node runs (the defaults would collide between nodes of one machine)."""
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port", "metrics-export-port")
    return [argument for name in names for argument in (f"--{name}", str(free_port()))]


class LoopbackCluster:
    """``nodes`` Ray nodes of ``cpus`` CPUs each; ``address`` is the head's host:port once started,
    ``client_address`` its Ray Client."""

    def __init__(self, nodes: int = 2, cpus: int = 1):
        self.nodes = nodes
        self.cpus = cpus
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lkray", dir="/tmp"))  # short: Ray's socket paths
        self.environment = os.environ | ray_settings(self.temp_dir)
        self.port = free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.client_port = free_port()
        self.client_address = f"ray://127.0.0.2:{self.client_port}"  # Ray Client, served by the head
        self.processes: list[subprocess.Popen] = []

    def node_ip(self, node: int) -> str:
        return f"127.0.0.{node + 2}"

    def start(self) -> LoopbackCluster:
        try:
            for _ in range(self.nodes):
                self.add_node()
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self) -> int:
        """Start one more node (the first is the head) and wait until it has joined; its number."""
        node = len(self.processes)
        role = (["--head", "--port", str(self.port), "--ray-client-server-port", str(self.client_port),
                 "--include-dashboard", "false",
                 "--dashboard-port", str(free_port()), "--temp-dir", str(self.temp_dir / "ray")]
                if node == 0 else ["--address", self.address])
        log = open(self.temp_dir / f"node{node}.log", "w")
        self.processes.append(subprocess.Popen(
            [str(RAY), "start", "--block", "--disable-usage-stats", "--node-ip-address", self.node_ip(node),
             "--num-cpus", str(self.cpus), *role, *node_ports()],
            env=self.environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        self._wait_started(node)
        return node

    def _wait_started(self, node: int) -> None:
        log = self.temp_dir / f"node{node}.log"
        deadline = time.monotonic() + START_SECONDS
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if self.processes[node].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray node {node} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def client_server_logs(self, characters: int = 2000) -> str:
        """The end of each Ray Client server log of the head (why a client could not connect)."""
        return "".join(f"\n--- {path.name}:\n{path.read_text(errors='replace')[-characters:]}"
                       for path in sorted(self.temp_dir.glob("ray/session_*/logs/ray_client_server*.err")))

    def raylet_pid(self, node: int) -> int:
        """The raylet of a node: the process that makes it a node of the cluster."""
        group = self.processes[node].pid
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.getpgid(int(entry.name)) == group and \
                        (entry / "comm").read_text().strip() == "raylet":
                    return int(entry.name)
            except (OSError, ProcessLookupError):
                continue
        raise RuntimeError(f"node {node} has no raylet")

    def kill_node(self, node: int) -> None:
        """Lose a node as a crashed machine would: SIGKILL its raylet."""
        os.kill(self.raylet_pid(node), signal.SIGKILL)

    def stop(self) -> None:
        """End this cluster's processes: each node's process group, then the workers they started (Ray puts
        those in sessions of their own), found by this cluster's folder in their command line."""
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        for pid in self._stray_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _stray_pids(self) -> list[int]:
        marker = str(self.temp_dir).encode()
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
