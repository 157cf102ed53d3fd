"""The node-local spool of plugin log records no agent received, replayed by the agent.

When ``istio-cni`` serves a request itself (no agent listening: in-process fallback, an ADD
during an upgrade's gap), it appends that run's record here; the agent drains the spool into its
own log (install-cni's stderr, hence ``kubectl logs``) when it starts and every second while it
runs. The spool lives beside the agent's socket, in its root-only state directory.

- One file, ``plugin-log.spool``, appended one line per ``write`` with ``O_APPEND``; a line is
  kept under PIPE_BUF so concurrent plugins never interleave inside a line.
- Bounded: a plugin that finds it over ``MAX_BYTES`` renames it to ``plugin-log.spool.1``
  (replacing an older one) and starts a new file, so at most twice ``MAX_BYTES`` stay on disk
  while no agent drains (the oldest records are then dropped, counted by the agent as missing).
- Root only: the directory must be a directory owned by this user and not writable by group or
  others; files are opened ``O_NOFOLLOW`` and created 0600. The plugin never creates the
  directory: where no agent ever ran (no state directory), nobody would replay the spool.
- An exclusive ``flock`` on the live file orders rotation, appends and the agent's drain; after
  taking it, each side checks the descriptor still is the file at the path (a rotation may have
  renamed it meanwhile) and reopens otherwise. The agent logs what it read before truncating:
  a crash in between repeats records, never loses them.

Import-light (the plugin runs it on every served request): ``os``, and ``fcntl`` (built in).
"""

from __future__ import annotations

import os
import stat

SPOOL_NAME = "plugin-log.spool"
ROTATED_SUFFIX = ".1"
MAX_BYTES = 1024 * 1024
MAX_LINE = 4000  # below PIPE_BUF (4096): one write, never interleaved
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class SpoolError(Exception):
    pass


def path_for(socket_path: str) -> str:
    """The spool beside the agent's socket ("" when the netconf disables the agent)."""
    return os.path.join(os.path.dirname(socket_path), SPOOL_NAME) if socket_path else ""


def append(path: str, line: str) -> bool:
    """Append one record line (no newline in it); False when there is no state directory. Raises
    SpoolError or OSError (nothing written) when the directory or the file is not root's own."""
    data = (line[:MAX_LINE] + "\n").encode("utf-8", "surrogateescape")
    try:
        _check_directory(os.path.dirname(path))
    except FileNotFoundError:
        return False
    fd = _locked(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        if os.fstat(fd).st_size + len(data) > MAX_BYTES:
            os.rename(path, path + ROTATED_SUFFIX)
            os.close(fd)
            fd = _locked(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, data)
    finally:
        os.close(fd)
    return True


def drain(path: str, remove: bool = False) -> list[str]:
    """Every spooled line, oldest first, and empty the spool; [] when there is none. ``remove``
    (uninstall) unlinks the files instead of emptying them, still under the lock: a plugin waiting
    for it then finds the file gone and starts a new one rather than writing into the unlinked one."""
    try:
        _check_directory(os.path.dirname(path))
    except FileNotFoundError:
        return []
    try:
        fd = _locked(path, os.O_RDWR)
    except FileNotFoundError:
        return _take_rotated(path)
    try:
        lines = _take_rotated(path)  # under the live file's lock: no rotation meanwhile
        with os.fdopen(os.dup(fd), "rb") as f:
            lines += _lines(f.read())
        if remove:
            os.unlink(path)
        else:
            os.ftruncate(fd, 0)
        return lines
    finally:
        os.close(fd)


def _take_rotated(path: str) -> list[str]:
    rotated = path + ROTATED_SUFFIX
    try:
        fd = os.open(rotated, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return []
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    finally:
        os.close(fd)
    os.unlink(rotated)
    return _lines(data)


def _lines(data: bytes) -> list[str]:
    return [line for line in data.decode("utf-8", "replace").split("\n") if line]


def _locked(path: str, flags: int) -> int:
    """A descriptor of the file at ``path`` (never through a link) holding its exclusive lock."""
    import fcntl

    for _ in range(8):
        fd = os.open(path, flags | _OPEN_FLAGS, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            if not stat.S_ISREG(held.st_mode) or held.st_uid != os.geteuid():
                raise SpoolError(f"{path} is not a regular file of uid {os.geteuid()}")
            try:
                current = os.lstat(path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # rotated away while we waited: open the new one
    raise SpoolError(f"{path} kept changing under the lock")


def _check_directory(directory: str) -> None:
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SpoolError(f"{directory} is not a directory of uid {os.geteuid()} that only it may write")
