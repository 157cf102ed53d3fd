"""Atomic writes into directories a container runtime is watching.

The temporary file is created in the target's own directory - a file moved in from elsewhere
yields only a CREATE event, which containerd 1.6 ignores - under a dot-name that does not end in
``.conf``, ``.conflist`` or ``.json``, so no runtime ever reads it half-written; it is fsynced,
then renamed over the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

TEMP_SUFFIX = ".meshcni-tmp"


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    directory, name = os.path.split(path)
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(directory: str) -> list[str]:
    """Temp files a killed predecessor left behind (never read by runtimes: wrong extension)."""
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(".") and name.endswith(TEMP_SUFFIX):
            remove_quietly(os.path.join(directory, name))
            removed.append(name)
    return removed


def render_json(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def same_bytes(path: str, data: bytes) -> bool:
    """True when ``path`` already holds exactly ``data`` (so rewriting it would be a no-op)."""
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


def remove_quietly(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
