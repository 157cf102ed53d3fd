"""Who keeps rewriting a conf file: the component its name suggests, and the process seen writing.

inotify says a file changed, not who changed it. Right after an event in the conf dir, every
process holding a file there open is looked up in /proc (install-cni runs with the host's PID
namespace); a writer that opens, writes and closes within microseconds is not caught, so this is
"when visible". The file name usually names its owner (``10-calico.conflist``).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

SCAN_INTERVAL = 1.0  # seconds: at most one /proc walk per second, however busy the conf dir


@dataclass(frozen=True)
class Writer:
    pid: int
    command: str  # /proc/<pid>/comm

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def component_of(file_name: str) -> str:
    """``10-calico.conflist`` -> ``calico``: the primary CNI its conventional name names."""
    return re.sub(r"^[0-9]+-", "", file_name).rsplit(".", 1)[0] or file_name


def open_in(directories: tuple[str, ...], proc: str = "/proc") -> list[Writer]:
    """Processes other than this one with a file open directly inside one of ``directories``."""
    prefixes = tuple(d.rstrip("/") + "/" for d in directories)
    found: list[Writer] = []
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir(f"{proc}/{entry}/fd")
            targets = [os.readlink(f"{proc}/{entry}/fd/{fd}") for fd in fds]
        except OSError:  # gone, or not ours to look at
            continue
        if any(_directly_inside(target, prefixes) for target in targets):
            try:
                with open(f"{proc}/{entry}/comm") as f:
                    command = f.read().strip()
            except OSError:
                continue
            found.append(Writer(int(entry), command))
    return found


def _directly_inside(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path.startswith(p) and "/" not in path[len(p):] for p in prefixes)


class WriterWatch:
    """The last processes seen with a file open in the conf dir, refreshed on its inotify events."""

    def __init__(self, directories: tuple[str, ...]):
        self.directories = directories
        self.seen: list[Writer] = []
        self._last_scan = 0.0

    def note_event(self) -> None:
        if time.monotonic() - self._last_scan >= SCAN_INTERVAL:
            self.scan()

    def scan(self) -> list[Writer]:
        """Look now; keeps what was seen last when nobody is there now."""
        self._last_scan = time.monotonic()
        writers = open_in(self.directories)
        if writers:
            self.seen = writers
        return self.seen
