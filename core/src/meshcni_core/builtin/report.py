"""Built-in plugin: one structured log line per command."""

from __future__ import annotations

import json
import logging

from meshcni_hooks import hookimpl
from meshcni_hooks.types import Outcome

log = logging.getLogger("meshcni")


class LogReport:
    @hookimpl(trylast=True)
    def meshcni_report(self, outcome: Outcome) -> None:
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
