"""One lock per network namespace, so that the agent's threads never interleave the iptables
reads and writes of one pod (two ADDs, or an ADD and a DEL, of the same netns): the reconcile
reads the tables and then writes a transaction computed from what it read.

A namespace is known by its nsfs inode, so two paths to it (``/run/netns/x``,
``/proc/<pid>/ns/net``) share a lock. An entry lives only while somebody holds or waits for it:
the map never grows with every namespace the agent has seen.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # holders and waiters


_guard = threading.Lock()
_entries: dict[object, _Entry] = {}


def netns_identity(path: str) -> object:
    try:
        info = os.stat(path)
    except OSError:
        return path  # the command fails on it later, with a message naming the path
    return (info.st_dev, info.st_ino)


@contextmanager
def serialised(path: str) -> Iterator[None]:
    """Hold the lock of the namespace at ``path`` for the duration of the block."""
    key = netns_identity(path)
    with _guard:
        entry = _entries.setdefault(key, _Entry())
        entry.users += 1
    try:
        with entry.lock:
            yield
    finally:
        with _guard:
            entry.users -= 1
            if entry.users == 0:
                del _entries[key]
