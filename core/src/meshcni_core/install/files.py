"""Atomic writes into directories a container runtime is watching, and the names allowed there.

The temporary file is created in the target's own directory - a file moved in from elsewhere
yields only a CREATE event, which containerd 1.6 ignores - under a dot-name that does not end in
``.conf``, ``.conflist`` or ``.json``, so no runtime ever reads it half-written; it is fsynced,
then renamed over the target.

Other agents write these directories too, so nothing here follows a symlink at the name being
written: the temp file is created with ``O_EXCL | O_NOFOLLOW`` relative to a descriptor of the
directory, and ``rename`` replaces a link at the target name instead of writing through it.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

TEMP_SUFFIX = ".meshcni-tmp"


def plain_name_problem(name: str) -> str:
    """Why ``name`` is not a plain, visible file name in one directory ("" when it is one).

    Every file name read from the conf dir or the settings that becomes a path must pass this:
    no directory part, no ``..``, no NUL or other control character, not hidden."""
    if not name:
        return "it is empty"
    if "/" in name or ".." in name:
        return "it is not a plain file name (holds '/' or '..')"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "it holds a NUL or control character"
    if name.startswith("."):
        return "it is a hidden file name, which no runtime reads"
    if len(name.encode(errors="surrogateescape")) > 255:
        return "it is longer than a file name may be"
    return ""


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    directory, name = os.path.split(path)
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        temp = f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            raise
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
    """True when ``path`` is a file (not a link) already holding exactly ``data``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        return f.read() == data


def remove_quietly(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
