"""Enter a network namespace on the current thread - for backends honouring ``Target.netns``.

Python 3.11 has no ``os.setns``; libc's ``setns(2)`` is called through ctypes. ``setns`` moves
only the calling thread, so concurrent requests in the node agent can each enter a different
pod, and child processes started inside the ``with`` block inherit the namespace.

Every descriptor is checked to be an nsfs inode before ``setns``. The node agent opens a
request's namespace once and *holds* it (:func:`held`): while held, :func:`entered` and
:func:`identity` on that path use the held descriptor on this thread, so the path is never
looked up again during the request (no check-then-reopen race).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from meshcni_hooks.errors import MeshcniError

CLONE_NEWNET = 0x40000000
NSFS_MAGIC = 0x6E736673  # statfs(2) f_type of a namespace file (linux/magic.h)
SELF_NETNS = "/proc/thread-self/ns/net"
_libc = ctypes.CDLL(None, use_errno=True)
_held = threading.local()


class NetnsError(MeshcniError):
    """A network namespace cannot be entered (missing, not a netns, or the plugin's own)."""

    code = 7
    stage = "netns"


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise NetnsError(f"setns failed: {os.strerror(ctypes.get_errno())}")


def filesystem_type(fd: int) -> int:
    """``f_type`` of ``fstatfs(fd)`` (the first field of ``struct statfs`` on Linux)."""
    buf = ctypes.create_string_buffer(256)  # larger than struct statfs on every architecture
    if _libc.fstatfs(fd, buf) != 0:
        raise NetnsError(f"fstatfs failed: {os.strerror(ctypes.get_errno())}")
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def verify_nsfs(fd: int, path: str) -> None:
    """Refuse a descriptor that is not a namespace file (a regular file, a directory, a socket)."""
    if filesystem_type(fd) != NSFS_MAGIC:
        raise NetnsError(f"{path} is not a network namespace (not an nsfs file)")


def open_verified(path: str, flags: int = 0) -> int:
    """A descriptor for the namespace file ``path``, checked to be nsfs; the caller closes it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    except OSError as exc:
        raise NetnsError(f"cannot open network namespace {path}: {exc.strerror}") from None
    try:
        verify_nsfs(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _held_fd(path: str) -> int | None:
    fds: dict[str, int] | None = getattr(_held, "fds", None)
    return fds.get(path) if fds else None


@contextmanager
def held(path: str, fd: int) -> Iterator[None]:
    """While the block runs, ``path`` means the already opened and verified ``fd`` on this
    thread. The caller keeps ownership of ``fd``."""
    fds: dict[str, int] = getattr(_held, "fds", None) or {}
    _held.fds = fds
    previous = fds.get(path)
    fds[path] = fd
    try:
        yield
    finally:
        if previous is None:
            del fds[path]
        else:
            fds[path] = previous


def identity(path: str) -> tuple[int, int]:
    """(st_dev, st_ino) of the namespace ``path`` (the held descriptor's when it is held)."""
    fd = _held_fd(path)
    st = os.fstat(fd) if fd is not None else os.stat(path)
    return st.st_dev, st.st_ino


@contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the block with this thread inside netns ``path`` (``""`` = stay where we are)."""
    if not path:
        yield
        return
    home = os.open(SELF_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = _held_fd(path)
        if target is not None:
            _setns(target)
        else:
            target = open_verified(path)
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
