"""What the clean-up DaemonSet runs on each node (``manifest/node_cleanup.py``).

``meshcni uninstall-cni --wait-for-agent SOCKET`` first waits until no agent serves SOCKET:
install-cni serves it until it exits, and while it runs it would chain the plugin back as soon
as uninstall removed it. ``meshcni idle`` then keeps the pod running (Ready = this node is clean)
until SIGTERM.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time

POLL_SECONDS = 1.0
REPORT_EVERY_SECONDS = 60.0


def agent_serves(path: str) -> bool:
    """True while something accepts connections on the Unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(POLL_SECONDS)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        return False  # gone, or a socket file left behind by an agent that exited
    finally:
        probe.close()
    return True


def wait_for_agent_to_stop(path: str, poll: float = POLL_SECONDS) -> None:
    started = next_report = time.monotonic()
    while agent_serves(path):
        now = time.monotonic()
        if now >= next_report:
            print(f"meshcni: waiting for the agent serving {path} to stop before uninstalling "
                  f"({now - started:.0f}s so far)", file=sys.stderr, flush=True)
            next_report = now + REPORT_EVERY_SECONDS
        time.sleep(poll)


def idle() -> int:
    """Wait for SIGTERM (or SIGINT), then exit 0."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    return 0
