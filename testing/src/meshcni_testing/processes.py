"""Starting the node agent and measuring processes, for the demo and the benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

MESHCNI = str(Path(sys.executable).with_name("meshcni"))


def start_agent(socket_path: str, netconf: Mapping[str, Any], log_level: str = "warn") -> subprocess.Popen[bytes]:
    """``meshcni agent`` on ``socket_path`` running with ``netconf`` (written beside the socket),
    returned once it listens; the caller stops it."""
    directory = os.path.dirname(socket_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    config = os.path.join(directory, "netconf.json")
    with open(config, "w") as f:
        json.dump(netconf, f)
    agent = subprocess.Popen([MESHCNI, "agent", "--socket", socket_path, "--config", config, "--log-level", log_level])
    wait_until_listening(agent, socket_path)
    return agent


def wait_until_listening(process: subprocess.Popen[Any], socket_path: str, timeout: float = 30.0,
                         output: Callable[[], str] = lambda: "") -> None:
    """Return once ``socket_path`` exists; raise (with ``output()``, e.g. the process's log) when
    ``process`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(socket_path):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"process {process.pid} ({process.args!r}) did not listen on {socket_path}\n{output()}")
        time.sleep(0.05)


def rss_mib(pid: int) -> float:
    """Resident memory of a running process."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
