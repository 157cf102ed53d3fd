"""Enter a pod's network namespace on the current thread, and read facts from inside it.

Python 3.11 has no ``os.setns``; libc's ``setns(2)`` is called through ctypes. ``setns`` moves
only the calling thread, so the node agent's worker threads can each enter a different pod, and
child processes started inside the ``with`` block (iptables-restore, ip) inherit the namespace.
"""

from __future__ import annotations

import ctypes
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager

from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import NetnsFacts

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
SELF_NETNS = "/proc/thread-self/ns/net"

# /proc/net/if_inet6 scope column: 00 global, 20 link, 10 host.
IPV6_GLOBAL_SCOPE = "00"


class NetnsError(MeshcniError):
    """CNI_NETNS cannot be entered (missing, not a netns, or the plugin's own namespace)."""

    code = 7
    stage = "netns"


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(err)}")


def is_current(path: str) -> bool:
    """True when ``path`` is the namespace this thread is in (e.g. CNI_NETNS = the host's)."""
    mine, theirs = os.stat(SELF_NETNS), os.stat(path)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


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


@contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the block with this thread inside netns ``path`` (``""`` = stay where we are)."""
    if not path:
        yield
        return
    home = os.open(SELF_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetnsError(f"cannot open CNI_NETNS {path}: {exc.strerror}") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def read_facts(path: str) -> NetnsFacts:
    """Interfaces and global addresses of the namespace ``path`` (link-local IPv6 is ignored:
    it does not make a pod IPv6-capable, unlike in Istio 1.6's detection)."""
    with entered(path):
        interfaces = _interfaces()
        ipv6 = _ipv6_global_addresses()
        ipv4 = _ipv4_local_addresses()
    return NetnsFacts(interfaces=interfaces, ipv4_addresses=ipv4, ipv6_addresses=ipv6)


def _interfaces() -> tuple[str, ...]:
    with open("/proc/thread-self/net/dev") as f:
        lines = f.read().splitlines()[2:]
    return tuple(line.split(":", 1)[0].strip() for line in lines)


def _ipv6_global_addresses() -> tuple[str, ...]:
    try:
        with open("/proc/thread-self/net/if_inet6") as f:
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
