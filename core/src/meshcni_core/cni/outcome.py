"""One line per ``istio-cni`` run: who (pod, container), what (command), how it ended.

Both the node agent (for the requests it served) and the plugin (for those it served itself)
build the same record here, so install-cni's log shows every run the same way. Import-light:
it runs in the plugin on every pod start (``_thread`` and ``time`` are built in; no ``json``,
``logging`` or ``threading``).

The record's verdict comes from whoever decided it: the pipeline's report (redirected or not,
and why) and the pass-through decision note it on the current thread while the request runs
(``note``), and ``finish`` takes it.
"""

from __future__ import annotations

import os
import sys
import time
from _thread import _local

from meshcni_core.cni import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# Istio's levels (the netconf's log_level), as the logging module numbers them (none: above CRITICAL).
LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "fatal": 50, "panic": 50, "none": 51}
DEFAULT_LEVEL = "info"
FIELD_LIMIT = 256  # a log line's values come from requests: bounded
ERROR_LIMIT = 1024
# Verdicts of successful runs that decided nothing pod-specific.
DONE = {"ADD": "done", "DEL": "rules removed", "CHECK": "rules intact", "STATUS": "ready", "GC": "collected",
        "VERSION": "versions listed"}

_current = _local()


def begin() -> None:
    """A request starts on this thread: verdicts noted from now on belong to it."""
    _current.verdict = None
    _current.redirected = None
    _current.open = True


def note(verdict: str, redirected: bool | None = None) -> bool:
    """Record the current request's verdict; False when no request is open on this thread (the
    caller - a pipeline used outside a CNI request - then logs on its own)."""
    if not getattr(_current, "open", False):
        return False
    _current.verdict = verdict
    _current.redirected = redirected
    return True


def finish(env: Mapping[str, str], code: int, stdout: str, seconds: float, served_by: str,
           log_level: object = DEFAULT_LEVEL) -> dict[str, Any]:
    """Close the current request and return its record (see docs/installer.md, "Plugin logs")."""
    verdict, redirected = getattr(_current, "verdict", None), getattr(_current, "redirected", None)
    _current.open = False
    command = env.get("CNI_COMMAND", "")
    args = cni_args(env.get("CNI_ARGS", ""))
    record: dict[str, Any] = {
        "command": _bounded(command, 16),
        "pod": _bounded(f"{args.get('K8S_POD_NAMESPACE', '')}/{args.get('K8S_POD_NAME', '')}".strip("/"),
                        FIELD_LIMIT),
        "container": _bounded(env.get("CNI_CONTAINERID", ""), FIELD_LIMIT),
        "duration_ms": round(seconds * 1000, 2),
        "served_by": served_by,
        "time": round(time.time(), 3),
        "log_level": log_level if isinstance(log_level, str) and log_level.lower() in LEVELS else DEFAULT_LEVEL,
    }
    if code != 0:
        error = error_of(stdout)
        record.update(verdict="failed", level="error", error=error[0], code=error[1])
    else:
        record.update(verdict=_bounded(verdict or DONE.get(command, "done"), ERROR_LIMIT), level="info")
    if command == "ADD" and code == 0:
        record["redirected"] = bool(redirected)
    return record


def shown(record: Mapping[str, Any]) -> bool:
    """Whether the record's level passes the netconf's log_level it carries."""
    threshold = LEVELS.get(str(record.get("log_level", DEFAULT_LEVEL)).lower(), LEVELS[DEFAULT_LEVEL])
    return LEVELS.get(str(record.get("level", "info")), 20) >= threshold


def render(record: Mapping[str, Any]) -> str:
    """The line as logged: ``istio-cni <JSON>``, keys sorted (one line: JSON escapes newlines).
    A spooled record keeps its ``time`` (epoch seconds): it is logged later than it happened."""
    hidden = ("log_level", "time") if record.get("served_by") == "agent" else ("log_level",)
    return "istio-cni " + fastjson.dumps({k: v for k, v in sorted(record.items()) if k not in hidden})


def error_of(stdout: str) -> tuple[str, int]:
    """(message, CNI code) of a CNI error object; a placeholder when stdout is not one."""
    try:
        obj = fastjson.loads(stdout)
    except ValueError:
        return "(no error object on stdout)", 999
    if not isinstance(obj, dict):
        return "(no error object on stdout)", 999
    msg, details, code = obj.get("msg"), obj.get("details"), obj.get("code")
    text = str(msg) + (f": {details}" if details else "")
    return _bounded(text, ERROR_LIMIT), code if isinstance(code, int) and 0 <= code < 1000 else 999


def cni_args(raw: str) -> dict[str, str]:
    """CNI_ARGS leniently (for logging only: the command itself validates them)."""
    pairs = {}
    for piece in raw.split(";"):
        key, sep, value = piece.partition("=")
        if sep and key in ("K8S_POD_NAMESPACE", "K8S_POD_NAME"):
            pairs[key] = value
    return pairs


def process_started_ns() -> int:
    """CLOCK_MONOTONIC at this process's start, from /proc/self/stat (10 ms resolution: the
    kernel counts in clock ticks); the current time when that cannot be read."""
    now_mono, now_boot = time.monotonic_ns(), time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2:].split()[19])  # field 22, starttime, after "pid (comm) "
    except (OSError, ValueError, IndexError):
        return now_mono
    elapsed = now_boot - ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return now_mono - max(0, elapsed)



def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def served_here(env: Mapping[str, str], stdin: bytes, code: int, stdout: str, default_socket: str) -> None:
    """Log a run this plugin served itself: to stderr (the runtime's log) at the netconf's level,
    and into the spool beside the agent's socket, which the agent replays into its own log."""
    try:
        netconf = fastjson.loads(stdin)
    except ValueError:
        netconf = None
    if not isinstance(netconf, dict):
        netconf = {}
    record = finish(env, code, stdout, (time.monotonic_ns() - process_started_ns()) / 1e9, "plugin",
                    netconf.get("log_level", DEFAULT_LEVEL))
    line = render(record)
    if shown(record):
        sys.stderr.write(line + "\n")
    socket_path = netconf.get("agent_socket", default_socket)
    if not isinstance(socket_path, str) or not socket_path:
        return
    from meshcni_core.cni import spool

    try:
        spool.append(spool.path_for(socket_path), fastjson.dumps(record))
    except (OSError, spool.SpoolError) as exc:  # the run's outcome stands; only its copy is lost
        sys.stderr.write(f"istio-cni: could not spool this run's log record for the node agent: {exc}\n")
