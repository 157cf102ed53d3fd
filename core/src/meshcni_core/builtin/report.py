"""Built-in plugin: one structured log line per command."""

from __future__ import annotations

import json
import logging

from meshcni_core.cni import outcome as request_outcome
from meshcni_hooks import hookimpl
from meshcni_hooks.types import Outcome

log = logging.getLogger("meshcni")


class LogReport:
    @hookimpl(trylast=True)
    def meshcni_report(self, outcome: Outcome) -> None:
        """Inside a CNI request, its one line (cni/outcome.py) carries the verdict; a pipeline used
        elsewhere (repair's reprogram) logs its own line here."""
        if outcome.command == "ADD" and request_outcome.note(_verdict(outcome), outcome.redirected):
            return
        if outcome.command == "DEL" and request_outcome.note("rules removed"):
            return
        pod = outcome.pod
        record = {
            "command": outcome.command,
            "pod": f"{pod.namespace}/{pod.name}" if pod else "",
            "redirected": outcome.redirected,
            "verdict": outcome.verdicts[-1].reason if outcome.verdicts else "",
            "duration_ms": round(outcome.duration_ms, 2),
        }
        if outcome.error:
            record["error"] = outcome.error
        log.info("%s", json.dumps(record, sort_keys=True))


def _verdict(outcome: Outcome) -> str:
    """``redirected: <why>`` or ``not redirected: <why>``, the why being the deciding rule's reason."""
    reason = outcome.verdicts[-1].reason if outcome.verdicts else ""
    said = "redirected" if outcome.redirected else "not redirected"
    return f"{said}: {reason}" if reason else said
