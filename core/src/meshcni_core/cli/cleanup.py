"""What the clean-up DaemonSet runs on each node (``manifest/node_cleanup.py``).

``meshcni uninstall-cni --wait-for-agent SOCKET`` first waits until no agent serves SOCKET:
install-cni serves it until it exits, and while it runs it would chain the plugin back as soon
as uninstall removed it. ``meshcni idle`` then keeps the pod running (Ready = this node is clean)
until SIGTERM.

Uninstall ends with the agent's state beside its socket (``remove_agent_state``): the plugin log
records no agent replayed are logged to uninstall-cni's stderr (the clean-up pod's log), then
the spool, a socket file nobody serves and the emptied directory are removed.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
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


def remove_agent_state(socket_path: str) -> list[str]:
    """Replay and remove the plugin log spool beside ``socket_path``, then the socket file when no
    agent serves it, then its directory when that left it empty (a directory that is a mount
    point, as the DaemonSet's hostPath, stays: EBUSY). Returns what was done."""
    from meshcni_core.agent.plugin_log import PluginLog
    from meshcni_core.cni import spool

    done: list[str] = []
    spool_path = spool.path_for(socket_path)
    present = [p for p in (spool_path, spool_path + spool.ROTATED_SUFFIX) if os.path.lexists(p)]
    if present:
        replayed = PluginLog(spool_path).replay(remove=True)
        left = [p for p in present if os.path.lexists(p)]
        if left:  # unreadable (not root's own, a link): replay logged why; it is not ours to delete
            done.append(f"left {', '.join(left)}: not a spool this uninstall could read")
        else:
            done.append(f"removed {spool_path} after logging its {replayed} unreplayed plugin records")
    if _is_socket(socket_path) and not agent_serves(socket_path):
        os.unlink(socket_path)
        done.append(f"removed {socket_path}")
    directory = os.path.dirname(socket_path)
    try:
        os.rmdir(directory)
    except OSError:
        pass  # not empty (someone else's files, a live agent's socket) or a mount point
    else:
        done.append(f"removed {directory}")
    return done


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def idle() -> int:
    """Wait for SIGTERM (or SIGINT), then exit 0."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    return 0
