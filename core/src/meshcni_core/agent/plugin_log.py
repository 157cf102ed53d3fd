"""The plugin's log lines in the agent's log (install-cni's stderr, so ``kubectl logs``).

Every ``istio-cni`` run ends in one record (cni/outcome.py). The agent reports the runs it served
itself as they finish; the runs a plugin served in-process (no agent listening) reach it through
the node-local spool (cni/spool.py), which ``follow`` drains at start and every second. Each
record is logged at its own level (info, error for a failure) when the netconf's ``log_level`` it
carries lets it through - the agent's ``--log-level`` governs only the agent's own lines - and
counted in the request metrics whatever the level.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from meshcni_core.cni import outcome, spool

if TYPE_CHECKING:
    from meshcni_core.install.monitoring import RequestMetrics

log = logging.getLogger("meshcni.plugin")
agent_log = logging.getLogger("meshcni.agent")
FOLLOW_SECONDS = 1.0
MAX_BELIEVED_NS = 600 * 10**9  # a plugin start older than this is a clock from elsewhere
RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "command": str, "pod": str, "container": str, "duration_ms": (int, float), "served_by": str, "verdict": str,
    "level": str, "log_level": str, "time": (int, float)}


class PluginLog:
    """``metrics`` are install-cni's (None for ``meshcni agent``); ``spool_path`` "" disables replay."""

    def __init__(self, spool_path: str, metrics: RequestMetrics | None = None):
        self.spool_path = spool_path
        self.metrics = metrics
        self.unreadable = 0
        log.setLevel(logging.DEBUG)  # filtered per record by the netconf's log_level (outcome.shown)

    def report(self, record: Mapping[str, Any]) -> None:
        if outcome.shown(record):
            log.log(outcome.LEVELS.get(str(record["level"]), logging.INFO), "%s", outcome.render(record))
        if self.metrics is not None:
            self.metrics.observe(record)

    def served(self, env: Mapping[str, str], code: int, stdout: str, request: Mapping[str, Any],
               log_level: Callable[[], object]) -> None:
        """Report a request this agent served, timed from ``started_ns(request)``."""
        level: object = outcome.DEFAULT_LEVEL
        try:
            level = log_level()
        except Exception:  # noqa: BLE001 - without a configuration the request failed anyway; log at info
            pass
        now = time.monotonic_ns()
        self.report(outcome.finish(env, code, stdout, (now - started_ns(request, now)) / 1e9, "agent", level))

    def replay(self, remove: bool = False) -> int:
        """Log and count what plugins spooled; returns how many records. ``remove``: uninstall's
        last replay, which removes the spool's files once read."""
        if not self.spool_path:
            return 0
        try:
            lines = spool.drain(self.spool_path, remove=remove)
        except (OSError, spool.SpoolError) as exc:
            agent_log.warning("cannot read the plugin log spool %s: %s", self.spool_path, exc)
            return 0
        count = 0
        for line in lines:
            record = parse(line)
            if record is None:
                self.unreadable += 1
                continue
            self.report(record)
            count += 1
        return count

    def follow(self, stop: threading.Event) -> None:
        """Replay now (what plugins spooled while no agent ran), then every second until ``stop``."""
        replayed = self.replay()
        if replayed:
            agent_log.info("replayed %d plugin log records spooled while no agent served", replayed)
        while not stop.wait(FOLLOW_SECONDS):
            self.replay()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.follow, args=(stop,), daemon=True, name="meshcni-plugin-log")
        thread.start()
        return thread


def started_ns(request: Mapping[str, Any], now_ns: int) -> int:
    """When the plugin process started (``started_ns``, CLOCK_MONOTONIC, sent by the client - the
    Python plugin and the C launcher alike), else when the agent accepted the connection; a value
    in the future or older than the longest allowed request is not believed."""
    sent = request.get("started_ns")
    if isinstance(sent, int) and not isinstance(sent, bool) and 0 <= now_ns - sent <= MAX_BELIEVED_NS:
        return sent
    accepted = request.get("accepted_ns")
    return accepted if isinstance(accepted, int) else now_ns


def parse(line: str) -> dict[str, Any] | None:
    """A spooled record with the fields and types ``outcome.finish`` gives, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for key, kind in RECORD_FIELDS.items():
        if not isinstance(record.get(key), kind):
            return None
    if record["level"] not in outcome.LEVELS:
        return None
    record["served_by"] = "plugin"
    return record
