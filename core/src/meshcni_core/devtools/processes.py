"""Starting the node agent and measuring processes, for the demo and the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

MESHCNI = str(Path(sys.executable).with_name("meshcni"))


def start_agent(socket_path: str, log_level: str = "warn") -> subprocess.Popen[bytes]:
    """``meshcni agent`` on ``socket_path``, returned once it listens; the caller stops it."""
    agent = subprocess.Popen([MESHCNI, "agent", "--socket", socket_path, "--log-level", log_level])
    deadline = time.monotonic() + 30
    while not os.path.exists(socket_path):
        if agent.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("meshcni agent did not start")
        time.sleep(0.05)
    return agent


def rss_mib(pid: int) -> float:
    """Resident memory of a running process."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
