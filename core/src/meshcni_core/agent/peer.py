"""Who is on the other end of the agent's socket, and may it be served.

Any root process that can reach the socket file can ``connect()`` - a container with a hostPath
covering the socket's directory too, even read-only. The agent serves only peers that are root
*and* run in a trusted mount namespace: the host's (pid 1's, visible with hostPID) or the
agent's own (when it runs on the host itself). A container has a mount namespace of its own, so
it is refused however it reached the socket. The kernel reports the peer's credentials as of
``connect()`` (SO_PEERCRED).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger("meshcni.agent")

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
HOST_MOUNT_NS = "/proc/1/ns/mnt"
OWN_MOUNT_NS = "/proc/self/ns/mnt"


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid)


def _namespace_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class PeerPolicy:
    def __init__(self, trusted_mount_namespaces: tuple[str, ...] = (HOST_MOUNT_NS, OWN_MOUNT_NS)):
        found = {path: _namespace_id(path) for path in trusted_mount_namespaces}
        self.trusted = {ns for ns in found.values() if ns is not None}
        readable = [path for path, ns in found.items() if ns is not None]
        log.info("serving root peers in the mount namespace of %s", " or ".join(readable) or "(none: refusing all)")

    def refusal(self, peer: Peer) -> str:
        """Why ``peer`` may not be served ('' = it may)."""
        if peer.uid != 0:
            return f"peer pid {peer.pid} runs as uid {peer.uid}, not root"
        if peer.pid <= 0:
            return "peer's process is not visible from the agent's pid namespace"
        mount_ns = _namespace_id(f"/proc/{peer.pid}/ns/mnt")
        if mount_ns is None:
            return f"peer pid {peer.pid}'s mount namespace cannot be read"
        if mount_ns not in self.trusted:
            return f"peer pid {peer.pid} is in another mount namespace (a container?), not the host's"
        return ""
