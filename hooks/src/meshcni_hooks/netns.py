"""Enter a network namespace on the current thread - for backends honouring ``Target.netns``.

Python 3.11 has no ``os.setns``; libc's ``setns(2)`` is called through ctypes. ``setns`` moves
only the calling thread, so concurrent requests in the node agent can each enter a different
pod, and child processes started inside the ``with`` block inherit the namespace.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from meshcni_hooks.errors import MeshcniError

CLONE_NEWNET = 0x40000000
SELF_NETNS = "/proc/thread-self/ns/net"
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(MeshcniError):
    """A network namespace cannot be entered (missing, not a netns, or the plugin's own)."""

    code = 7
    stage = "netns"


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise NetnsError(f"setns failed: {os.strerror(ctypes.get_errno())}")


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
            raise NetnsError(f"cannot open network namespace {path}: {exc.strerror}") from None
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
