"""A node without libnftables, for real: the library's file covered by an empty one in a private
mount namespace of the process under test (nothing outside it changes; it ends with the process)."""

from __future__ import annotations

import ctypes.util
import os
import subprocess


def libnftables() -> str:
    """The real file of the libnftables the nftables backend loads."""
    name = ctypes.util.find_library("nftables")
    assert name, "libnftables is not installed (make install installs Debian's libnftables1)"
    found = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    path = next(line.rsplit("=> ", 1)[1] for line in found.splitlines() if line.strip().startswith(name))
    return os.path.realpath(path)


def without_libnftables(argv: list[str]) -> list[str]:
    """``argv`` in a private mount namespace where libnftables is an empty file: a node without it."""
    script = 'mount --bind /dev/null "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, libnftables(), *argv]
