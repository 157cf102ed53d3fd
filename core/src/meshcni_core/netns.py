"""A pod's network namespace: check it, enter it (see meshcni_hooks.netns), read facts from it.

Facts are read from ``/proc/thread-self/net`` after ``setns``: the kernel's own view of the
namespace the thread is in, at no import cost (pyroute2's import alone is ~170 ms, and its
NetNS helper forks a process per namespace).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence

from meshcni_hooks.netns import SELF_NETNS, NetnsError, entered, identity, open_verified
from meshcni_hooks.types import NetnsFacts

__all__ = ["NetnsError", "check_target", "entered", "is_current", "open_request_netns", "read_facts"]

# Where runtimes pin pod network namespaces: containerd and CRI-O (/var/run/netns, which is
# /run/netns on most hosts; containerd's state dir with netns_mounts_under_state_dir), Docker-based
# runtimes (cri-dockerd). The node agent accepts a CNI_NETNS only there, or as /proc/<pid>/ns/net.
RUNTIME_NETNS_DIRS = (
    "/var/run/netns", "/run/netns", "/run/containerd/io.containerd.grpc.v1.cri/netns",
    "/var/run/docker/netns", "/run/docker/netns",
)
PROC_NETNS = re.compile(r"/proc/[1-9][0-9]*/ns/net")

# /proc/net/if_inet6 scope column: 00 global, 20 link, 10 host. The file is absent when the
# kernel has no IPv6 stack.
IF_INET6 = "/proc/thread-self/net/if_inet6"
IPV6_GLOBAL_SCOPE = "00"


def is_current(path: str) -> bool:
    """True when ``path`` is the namespace this thread is in (e.g. CNI_NETNS = the host's)."""
    mine = os.stat(SELF_NETNS)
    return (mine.st_dev, mine.st_ino) == identity(path)


def open_request_netns(path: str, directories: Sequence[str] = RUNTIME_NETNS_DIRS) -> int:
    """Open a CNI_NETNS from a client of the node agent, once: accepted only as
    ``/proc/<pid>/ns/net`` or as an entry directly inside one of ``directories`` that is not a
    symlink; the descriptor must be an nsfs file. The caller closes it (and holds it for the
    request, see meshcni_hooks.netns.held)."""
    if PROC_NETNS.fullmatch(path):
        return open_verified(path)  # the kernel's own link to the process's namespace
    parent, name = os.path.split(path)
    if parent not in directories or name in ("", ".", "..") or "\0" in path:
        accepted = ", ".join(directories) or "(none)"
        raise NetnsError(f"CNI_NETNS {path!r} is refused: the node agent accepts only /proc/<pid>/ns/net "
                         f"or an entry of the runtime's netns directories ({accepted})")
    return open_verified(path, os.O_NOFOLLOW)


def check_target(path: str) -> None:
    """Refuse a CNI_NETNS that does not exist or is the plugin's own namespace (CNI code 8)."""
    try:
        if is_current(path):
            raise NetnsError(
                f"CNI_NETNS {path} is the plugin's own network namespace; refusing to program the host",
                code=8,
            )
    except FileNotFoundError:
        raise NetnsError(f"CNI_NETNS {path} does not exist") from None
    except PermissionError as exc:
        raise NetnsError(f"CNI_NETNS {path} cannot be read: {exc}") from None


def read_facts(path: str) -> NetnsFacts:
    """Interfaces and global addresses of the namespace ``path`` (link-local IPv6 is ignored:
    it does not make a pod IPv6-capable, unlike in Istio 1.6's detection)."""
    with entered(path):
        interfaces = _interfaces()
        ipv6 = _ipv6_global_addresses()
        ipv4 = _ipv4_local_addresses()
        ipv6_stack = os.path.exists(IF_INET6)
    return NetnsFacts(interfaces=interfaces, ipv4_addresses=ipv4, ipv6_addresses=ipv6, ipv6_stack=ipv6_stack)


def _interfaces() -> tuple[str, ...]:
    with open("/proc/thread-self/net/dev") as f:
        lines = f.read().splitlines()[2:]
    return tuple(line.split(":", 1)[0].strip() for line in lines)


def _ipv6_global_addresses() -> tuple[str, ...]:
    try:
        with open(IF_INET6) as f:
            rows = [line.split() for line in f]
    except FileNotFoundError:  # IPv6 disabled in the kernel
        return ()
    found = []
    for row in rows:
        hexaddr, scope, ifname = row[0], row[3], row[5]
        if scope == IPV6_GLOBAL_SCOPE and ifname != "lo":
            found.append(":".join(hexaddr[i : i + 4] for i in range(0, 32, 4)))
    return tuple(found)


def _ipv4_local_addresses() -> tuple[str, ...]:
    """Host addresses from the local routing table (``/32 host LOCAL`` leaves of fib_trie)."""
    try:
        with open("/proc/thread-self/net/fib_trie") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return ()
    found: list[str] = []
    for previous, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL":
            address = previous.split()[-1]
            if not address.startswith("127.") and address not in found:
                found.append(address)
    return tuple(found)
